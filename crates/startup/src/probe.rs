//! The built-in health probe: one HTTP/1.0 GET over a std `TcpStream` to the process's own health endpoint, exit 0
//! on a 2xx answer and 1 otherwise. Distroless images have no shell and no curl, so `celeriac-api healthcheck`,
//! `celeriac-coordinator healthcheck` and `celeriac-worker --healthcheck` are their images' HEALTHCHECK.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the probe waits to connect, and then for the answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a probe failed.
#[derive(Debug)]
pub enum ProbeError {
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The first line is not `HTTP/1.x NNN ...`.
    BadAnswer { addr: SocketAddr, line: String },
    /// An answer other than 2xx.
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
    },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Self::Io { addr, source } => write!(f, "no answer from {addr}: {source}"),
            Self::BadAnswer { addr, line } => write!(f, "{addr} did not answer HTTP: {line:?}"),
            Self::Status { addr, path, status } => {
                write!(f, "GET http://{addr}{path} answered {status}")
            }
        }
    }
}

impl std::error::Error for ProbeError {}

/// GET `path` from `addr`; the status code when it is 2xx.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    // The status line is all we need; read until its end (or 1 KiB, or the peer closes).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match stream.read(&mut buf).map_err(io)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or("").trim_end().to_string();
    let mut words = line.split_whitespace();
    let status = match (
        words.next(),
        words.next().and_then(|s| s.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code,
        _ => return Err(ProbeError::BadAnswer { addr, line }),
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(ProbeError::Status {
            addr,
            path: path.to_string(),
            status,
        })
    }
}

/// Probe `http://127.0.0.1:<port><path>`, print one line saying what happened, and exit 0 (healthy) or 1.
pub fn run_and_exit(port: u16, path: &str) -> ! {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match get(addr, path, TIMEOUT) {
        Ok(status) => {
            println!("healthy: GET http://{addr}{path} answered {status}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering `answer` to the first connection; returns its address.
    fn serve_once(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 256];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, handle)
    }

    #[test]
    fn a_2xx_answer_is_healthy_and_the_request_names_the_path() {
        let (addr, h) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(get(addr, "/healthz", TIMEOUT).unwrap(), 200);
        assert!(h.join().unwrap().starts_with("GET /healthz HTTP/1.0\r\n"));
    }

    #[test]
    fn a_503_is_unhealthy_with_its_status() {
        let (addr, _h) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let e = get(addr, "/readyz", TIMEOUT).unwrap_err();
        assert!(matches!(e, ProbeError::Status { status: 503, .. }), "{e}");
        assert!(e.to_string().contains("/readyz answered 503"));
    }

    #[test]
    fn something_not_http_is_unhealthy() {
        let (addr, _h) = serve_once(b"-ERR unknown command\r\n");
        assert!(matches!(
            get(addr, "/", TIMEOUT),
            Err(ProbeError::BadAnswer { .. })
        ));
    }

    #[test]
    fn nobody_listening_is_unhealthy() {
        // Bind then drop: the port was free a moment ago and nothing listens on it now.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            get(addr, "/healthz", TIMEOUT),
            Err(ProbeError::Connect { .. })
        ));
    }
}
