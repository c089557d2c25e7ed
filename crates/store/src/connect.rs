//! Opening a connection to PostgreSQL, encrypted when the URL asks for it with libpq's `sslmode`.
//!
//! Every connection of the store (the pools, the migrations, the original database's import) is opened here.
//! tokio-postgres knows `sslmode=disable|prefer|require` but has no TLS of its own, and nothing in the URL names
//! the CA to trust. This module reads the TLS parameters from the URL's query and hands tokio-postgres a rustls
//! connector (ring, as the rest of the tree):
//!
//! | `sslmode` | connection |
//! |---|---|
//! | absent, `disable`, `prefer`, `allow` | plain, as before (libpq's default `prefer` would try TLS first: give `require` or stronger to have it) |
//! | `require` | TLS, refused if the server does not offer it; the certificate is not checked (libpq's `require` without a root certificate) |
//! | `verify-ca` | TLS, the certificate chain must lead to a trusted root: `sslrootcert=<PEM file>`, or the system's roots |
//! | `verify-full` | `verify-ca` and the certificate must name the host of the URL |
//!
//! `sslrootcert=system` uses the system's roots explicitly, as libpq 16 does. A value this module does not know, or a
//! root file that cannot be read, is an error naming the parameter; nothing falls back to plain text.

use diesel::ConnectionError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// What the URL asks of the connection's encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS (`disable`, `allow`, `prefer`, or no `sslmode`).
    Plain,
    /// TLS without checking the certificate.
    Require,
    /// TLS with the chain checked against the roots.
    VerifyCa,
    /// TLS with the chain and the host name checked.
    VerifyFull,
}

/// A URL split into what tokio-postgres reads and what this module does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without `sslmode` and `sslrootcert` (with `sslmode=require` put back when TLS is asked for).
    pub url: String,
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file, or `None` for the system's roots.
    pub root_cert: Option<String>,
}

/// Read the TLS parameters of a `postgres://` URL. Other parameters pass through untouched.
pub fn parse(url: &str) -> Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = SslMode::Plain;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" | "allow" | "prefer" => SslMode::Plain,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other:?} in the database URL: use disable, prefer, require, verify-ca or verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => {
                let path = percent_decode(value).ok_or_else(|| {
                    format!("sslrootcert={value:?} is not a valid percent-encoded path")
                })?;
                root_cert = (path != "system").then_some(path);
            }
            _ => kept.push(pair),
        }
    }
    if mode != SslMode::Plain {
        kept.push("sslmode=require");
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Target {
        url,
        mode,
        root_cert,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Open one connection to `url` (see the module's table for `sslmode`).
pub async fn connect(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let target = parse(url).map_err(ConnectionError::BadConnection)?;
    if target.mode == SslMode::Plain {
        return AsyncPgConnection::establish(&target.url).await;
    }
    let config = client_config(&target).map_err(ConnectionError::BadConnection)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, connection) = tokio_postgres::connect(&target.url, tls)
        .await
        .map_err(|e| ConnectionError::BadConnection(describe(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// tokio-postgres's error with its cause (a TLS failure says why only there: an unknown issuer, a wrong name).
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn client_config(target: &Target) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match target.mode {
        SslMode::Require => None,
        _ => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(target.root_cert.as_deref())?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS set-up: {e}"))?,
        ),
    };
    let verifier = Verifier {
        chain,
        check_name: target.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The roots of `sslrootcert`, or the system's.
fn roots(path: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match path {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect())
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert={path}: no certificate in the file"));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(
                    "no system root certificate found: give the CA with sslrootcert=<PEM file>"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// The server's certificate as `sslmode` asks: not checked (`require`: the traffic is encrypted, the server not
/// authenticated), its chain checked against the roots (`verify-ca`), or its chain and its name (`verify-full`).
/// The handshake's signatures are checked in every mode.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let t = parse("postgres://u:p@db:5432/celeriac?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x").unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            t.url,
            "postgres://u:p@db:5432/celeriac?application_name=x&sslmode=require"
        );
        let plain = parse("postgres://db/celeriac?sslmode=prefer").unwrap();
        assert_eq!(
            (plain.mode, plain.url.as_str()),
            (SslMode::Plain, "postgres://db/celeriac")
        );
        let none = parse("postgres://db/celeriac").unwrap();
        assert_eq!(
            (none.mode, none.url.as_str()),
            (SslMode::Plain, "postgres://db/celeriac")
        );
        let system = parse("postgres://db/c?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!((system.mode, system.root_cert), (SslMode::VerifyCa, None));
    }

    #[test]
    fn an_unknown_sslmode_or_a_bad_path_is_named() {
        let e = parse("postgres://db/c?sslmode=verify_full").unwrap_err();
        assert!(e.contains("sslmode=\"verify_full\""), "{e}");
        let e = parse("postgres://db/c?sslmode=require&sslrootcert=%zz").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let t = parse("postgres://db/c?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").unwrap();
        let e = client_config(&t).unwrap_err();
        assert!(e.starts_with("sslrootcert=/nonexistent/ca.pem: "), "{e}");
    }
}
