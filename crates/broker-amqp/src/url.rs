//! Broker URLs as kombu reads them, turned into lapin's [`AMQPUri`]: `amqp://user:pass@host:5672//` (vhost `/`),
//! `amqp://host/vhost`, `pyamqp://` as an alias of `amqp://`, and the defaults `guest:guest@localhost:5672`, vhost
//! `/` when the path is empty.
//!
//! `amqps://` is AMQP over TLS (port 5671 by default), verified against the system's CA store, or with Celery's
//! `broker_use_ssl` settings given as query parameters with the `ssl_` prefix (as Celery takes them on `rediss://`
//! URLs): `ssl_ca_certs` (PEM file of the CAs to trust), `ssl_certfile` and `ssl_keyfile` (PEM client certificate
//! and key, for brokers that ask for one), `ssl_cert_reqs` (`required`, the only mode: the server's certificate is
//! always verified; `none` and `optional` are refused rather than silently verifying anyway).

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use std::path::PathBuf;
use std::str::FromStr;
use transport::TransportError;

/// True for the URL schemes this transport serves.
pub fn is_amqp_url(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
    matches!(scheme.as_str(), "amqp" | "pyamqp" | "amqps")
}

/// The TLS files of an `amqps://` URL (Celery's `broker_use_ssl`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub ca_certs: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl TlsFiles {
    /// Read the files into lapin's TLS configuration (again at every connection, so renewed files are used).
    pub(crate) fn load(&self) -> Result<OwnedTLSConfig, TransportError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| TransportError::Failed {
                transport: crate::NAME,
                message: format!("cannot read TLS file {}: {e}", p.display()),
            })
        };
        let cert_chain = match &self.ca_certs {
            Some(p) => Some(String::from_utf8_lossy(&read(p)?).into_owned()),
            None => None,
        };
        let identity = match (&self.certfile, &self.keyfile) {
            (Some(c), Some(k)) => Some(OwnedIdentity::PKCS8 {
                pem: read(c)?,
                key: read(k)?,
            }),
            _ => None,
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

pub(crate) fn parse(url: &str) -> Result<(AMQPUri, Option<TlsFiles>), TransportError> {
    let failed = |message: String| TransportError::Failed {
        transport: crate::NAME,
        message,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| failed(format!("not a broker URL: {}", transport::redact_url(url))))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "pyamqp" => false,
        "amqps" => true,
        other => return Err(failed(format!("not an AMQP URL (scheme {other}://)"))),
    };
    // Our `ssl_*` parameters are taken out; the rest (heartbeat, frame_max, ...) is lapin's.
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut files = TlsFiles::default();
    let mut keep = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = transport::percent_decode(v);
        match k {
            "ssl_ca_certs" => files.ca_certs = Some(PathBuf::from(v)),
            "ssl_certfile" => files.certfile = Some(PathBuf::from(v)),
            "ssl_keyfile" => files.keyfile = Some(PathBuf::from(v)),
            "ssl_cert_reqs" => {
                let v = v.to_ascii_lowercase();
                if !matches!(v.as_str(), "required" | "cert_required") {
                    return Err(failed(format!(
                        "ssl_cert_reqs={v} is not supported: the broker's certificate is always verified (give its CA with ssl_ca_certs)"
                    )));
                }
            }
            _ => keep.push(pair),
        }
    }
    if !tls && files != TlsFiles::default() {
        return Err(failed("ssl_* parameters need an amqps:// URL".to_string()));
    }
    if files.certfile.is_some() != files.keyfile.is_some() {
        return Err(failed(
            "a client certificate needs both ssl_certfile and ssl_keyfile".to_string(),
        ));
    }
    let rest = if keep.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", keep.join("&"))
    };
    let lapin_scheme = if tls { "amqps" } else { "amqp" };
    let mut uri = AMQPUri::from_str(&format!("{lapin_scheme}://{rest}")).map_err(|e| {
        failed(format!(
            "invalid AMQP URL {}: {e}",
            transport::redact_url(url)
        ))
    })?;
    // kombu: an empty virtual host (`amqp://host`, `amqp://host/`) is `/`; `amqp://host//` is `/` as well.
    if uri.vhost.is_empty() {
        uri.vhost = "/".to_string();
    }
    Ok((uri, tls.then_some(files)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_style_urls() {
        let parse = |u: &str| super::parse(u).map(|(uri, _)| uri);
        let u = parse("amqp://guest:guest@127.0.0.1:5672//").unwrap();
        assert_eq!(u.vhost, "/");
        assert_eq!(u.authority.host, "127.0.0.1");
        assert_eq!(u.authority.port, 5672);
        assert_eq!(u.authority.userinfo.username, "guest");
        assert_eq!(parse("amqp://h").unwrap().vhost, "/");
        assert_eq!(parse("amqp://h/").unwrap().vhost, "/");
        assert_eq!(
            parse("pyamqp://u:p@h:5673/celeriac_t").unwrap().vhost,
            "celeriac_t"
        );
        assert_eq!(parse("amqp://h/%2f").unwrap().vhost, "/");
        assert!(parse("redis://h").is_err());
        assert!(is_amqp_url("AMQP://h") && !is_amqp_url("redis://h"));
    }

    #[test]
    fn amqps_urls_take_celerys_ssl_settings() {
        let (u, tls) = parse("amqps://u:p@broker.example//").unwrap();
        assert_eq!(u.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(u.authority.port, 5671);
        assert_eq!(tls, Some(TlsFiles::default()));
        let (u, tls) = parse(
            "amqps://u:p@h:5699/v?ssl_ca_certs=/etc/ca.pem&heartbeat=30&ssl_certfile=/c%20d.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=required",
        )
        .unwrap();
        assert_eq!((u.vhost.as_str(), u.authority.port), ("v", 5699));
        assert_eq!(u.query.heartbeat, Some(30));
        let tls = tls.unwrap();
        assert_eq!(tls.ca_certs, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.certfile, Some(PathBuf::from("/c d.pem")));
        assert_eq!(tls.keyfile, Some(PathBuf::from("/k.pem")));
        for bad in [
            "amqps://h//?ssl_cert_reqs=none",
            "amqps://h//?ssl_certfile=/c.pem",
            "amqp://h//?ssl_ca_certs=/ca.pem",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let missing = TlsFiles {
            ca_certs: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsFiles::default()
        };
        assert!(
            missing
                .load()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }
}
