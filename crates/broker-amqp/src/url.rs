//! Broker URLs as kombu reads them, turned into lapin's [`AMQPUri`]: `amqp://user:pass@host:5672//` (vhost `/`),
//! `amqp://host/vhost`, `pyamqp://` as an alias of `amqp://`, and the defaults `guest:guest@localhost:5672`, vhost
//! `/` when the path is empty. `amqps://` is refused: this build has no TLS (lapin without default features).

use lapin::uri::AMQPUri;
use std::str::FromStr;
use transport::TransportError;

/// True for the URL schemes this transport serves.
pub fn is_amqp_url(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
    matches!(scheme.as_str(), "amqp" | "pyamqp" | "amqps")
}

pub(crate) fn parse(url: &str) -> Result<AMQPUri, TransportError> {
    let failed = |message: String| TransportError::Failed {
        transport: crate::NAME,
        message,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| failed(format!("not a broker URL: {}", transport::redact_url(url))))?;
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "pyamqp" => {}
        "amqps" => {
            return Err(failed(
                "amqps:// (TLS) is not supported by this build of the AMQP transport; use amqp://"
                    .into(),
            ));
        }
        other => return Err(failed(format!("not an AMQP URL (scheme {other}://)"))),
    }
    let mut uri = AMQPUri::from_str(&format!("amqp://{rest}")).map_err(|e| {
        failed(format!(
            "invalid AMQP URL {}: {e}",
            transport::redact_url(url)
        ))
    })?;
    // kombu: an empty virtual host (`amqp://host`, `amqp://host/`) is `/`; `amqp://host//` is `/` as well.
    if uri.vhost.is_empty() {
        uri.vhost = "/".to_string();
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_style_urls() {
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
        assert!(parse("amqps://h//").is_err());
        assert!(parse("redis://h").is_err());
        assert!(is_amqp_url("AMQP://h") && !is_amqp_url("redis://h"));
    }
}
