//! Broker URLs: `redis://[:password@]host[:port][/db]`, `rediss://` (TLS), and Sentinel as
//! `redis+sentinel://[:password@]host1:26379,host2:26379/<master name>[/db]`.

use crate::BrokerError;

/// TLS settings given as kombu-style URL parameters:
/// `rediss://host:6380/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=required`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    pub ca_certs: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    /// `none` skips certificate verification (kombu's `CERT_NONE`).
    pub verify: bool,
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerUrl {
    /// A plain or TLS URL the redis client understands directly (TLS parameters taken out into `tls`).
    Direct {
        url: String,
        db: i64,
        tls: Option<TlsOptions>,
    },
    /// Ask these sentinels for the current master of `master`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        password: Option<String>,
        tls: bool,
    },
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerError> {
        let bad = |why: &str| BrokerError::BadUrl {
            url: redact(url),
            why: why.to_string(),
        };
        if let Some(rest) = url
            .strip_prefix("redis+sentinel://")
            .or_else(|| url.strip_prefix("sentinel://"))
        {
            let (auth, rest) = match rest.rsplit_once('@') {
                Some((a, r)) => (Some(a), r),
                None => (None, rest),
            };
            let password = auth.and_then(|a| {
                a.split_once(':')
                    .map(|(_, p)| p.to_string())
                    .or(Some(a.to_string()))
            });
            let password = password.filter(|p| !p.is_empty());
            let mut parts = rest.splitn(3, '/');
            let hosts = parts.next().unwrap_or("");
            let master = parts
                .next()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| bad("sentinel URL needs /<master name>"))?;
            let db = match parts.next().filter(|d| !d.is_empty()) {
                Some(d) => d
                    .parse()
                    .map_err(|_| bad("database number is not an integer"))?,
                None => 0,
            };
            let mut sentinels = Vec::new();
            for h in hosts.split(',').filter(|h| !h.is_empty()) {
                let (host, port) = match h.rsplit_once(':') {
                    Some((h, p)) => (
                        h.to_string(),
                        p.parse()
                            .map_err(|_| bad("sentinel port is not a number"))?,
                    ),
                    None => (h.to_string(), 26379),
                };
                sentinels.push((host, port));
            }
            if sentinels.is_empty() {
                return Err(bad("sentinel URL names no sentinel host"));
            }
            return Ok(BrokerUrl::Sentinel {
                sentinels,
                master: master.to_string(),
                db,
                password,
                tls: false,
            });
        }
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            return Err(bad(
                "expected redis://, rediss://, unix:// or redis+sentinel://",
            ));
        }
        let (url, tls) = split_tls_params(url);
        let info: redis::ConnectionInfo =
            redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| bad(&e.to_string()))?;
        let tls = url.starts_with("rediss://").then(|| {
            tls.unwrap_or(TlsOptions {
                verify: true,
                ..TlsOptions::default()
            })
        });
        Ok(BrokerUrl::Direct {
            db: info.redis_settings().db(),
            url,
            tls,
        })
    }

    pub fn db(&self) -> i64 {
        match self {
            BrokerUrl::Direct { db, .. } | BrokerUrl::Sentinel { db, .. } => *db,
        }
    }

    /// The URL of the Redis server to talk to now (for Sentinel: ask each sentinel until one answers).
    pub async fn resolve(&self) -> Result<String, BrokerError> {
        match self {
            BrokerUrl::Direct { url, tls, .. } => Ok(match tls {
                Some(t) if !t.verify && !url.contains('#') => format!("{url}#insecure"),
                _ => url.clone(),
            }),
            BrokerUrl::Sentinel {
                sentinels,
                master,
                db,
                password,
                tls,
            } => {
                let mut last = String::from("no sentinel answered");
                for (host, port) in sentinels {
                    let client = match redis::Client::open(format!("redis://{host}:{port}/")) {
                        Ok(c) => c,
                        Err(e) => {
                            last = e.to_string();
                            continue;
                        }
                    };
                    let conn = tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        client.get_multiplexed_async_connection(),
                    )
                    .await;
                    let mut conn = match conn {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            last = e.to_string();
                            continue;
                        }
                        Err(_) => {
                            last = format!("sentinel {host}:{port} timed out");
                            continue;
                        }
                    };
                    let addr: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(master)
                        .query_async(&mut conn)
                        .await;
                    match addr {
                        Ok(Some((h, p))) => {
                            let scheme = if *tls { "rediss" } else { "redis" };
                            let auth = password
                                .as_ref()
                                .map(|p| format!(":{p}@"))
                                .unwrap_or_default();
                            return Ok(format!("{scheme}://{auth}{h}:{p}/{db}"));
                        }
                        Ok(None) => {
                            last = format!("sentinel {host}:{port} does not know master {master:?}")
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(BrokerError::Sentinel(last))
            }
        }
    }
}

/// Take kombu's `ssl_*` query parameters out of a URL (the redis client does not know them).
fn split_tls_params(url: &str) -> (String, Option<TlsOptions>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut tls = TlsOptions {
        verify: true,
        ..TlsOptions::default()
    };
    let mut found = false;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "ssl_ca_certs" => tls.ca_certs = Some(v.to_string()),
            "ssl_certfile" => tls.certfile = Some(v.to_string()),
            "ssl_keyfile" => tls.keyfile = Some(v.to_string()),
            "ssl_cert_reqs" => {
                tls.verify = !matches!(v.to_ascii_lowercase().as_str(), "none" | "cert_none")
            }
            _ => {
                rest.push(pair);
                continue;
            }
        }
        found = true;
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, found.then_some(tls))
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_forms() {
        assert_eq!(
            BrokerUrl::parse("redis://127.0.0.1:6379/3").unwrap().db(),
            3
        );
        assert_eq!(
            BrokerUrl::parse("redis://:secret@127.0.0.1/0")
                .unwrap()
                .db(),
            0
        );
        let s = BrokerUrl::parse("redis+sentinel://:pw@s1:26379,s2/mymaster/2").unwrap();
        assert_eq!(
            s,
            BrokerUrl::Sentinel {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26379)],
                master: "mymaster".into(),
                db: 2,
                password: Some("pw".into()),
                tls: false
            }
        );
        assert!(BrokerUrl::parse("amqp://guest@localhost//").is_err());
        assert!(BrokerUrl::parse("redis+sentinel://s1:26379").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("redis://user:secret@h/0"), "redis://user:***@h/0");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
    }
}
