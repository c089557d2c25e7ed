//! The worker side of registration: detect this machine's capabilities and present a token to a coordinator
//! (`celeriac-coordinator register ...`, used by scripts such as `scripts/mac-worker.sh`).
//! Plain HTTP/1.1 over TCP, enough for one JSON POST on the management network; put TLS in front if needed.

use routing::config::{Amount, Concurrency};
use routing::{Accelerator, Capabilities};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("coordinator URL {0:?} must look like http://host:port")]
    BadUrl(String),
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the coordinator refused the registration ({status}): {body}")]
    Refused { status: u16, body: String },
}

/// Cores, memory and accelerator of this machine, as far as they can be told without extra tools.
pub fn detect() -> Capabilities {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_meminfo_gb(&m));
    let accelerator = if std::path::Path::new("/dev/nvidia0").exists() {
        Accelerator::Cuda
    } else if std::path::Path::new("/dev/kfd").exists() {
        Accelerator::Rocm
    } else if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        Accelerator::Metal
    } else {
        Accelerator::None
    };
    Capabilities {
        accelerator: Some(accelerator),
        memory_gb: memory_gb.map(Amount),
        cpu_cores: Some(Concurrency(cores.max(1))),
        gpu_memory_gb: None,
        labels: Vec::new(),
    }
}

/// `MemTotal` of `/proc/meminfo` in GB, one decimal.
pub fn parse_meminfo_gb(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

/// POST the registration; returns the coordinator's answer.
pub async fn register(
    url: &str,
    token: &str,
    node: &str,
    queues: &[String],
    concurrency: Option<u32>,
    capabilities: &Capabilities,
) -> Result<Value, RegisterError> {
    let hostport = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| RegisterError::BadUrl(url.to_string()))?;
    let body = json!({
        "node": node, "queues": queues, "concurrency": concurrency, "capabilities": capabilities
    })
    .to_string();
    let req = format!(
        "POST /api/v1/workers/register HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let io = |source| RegisterError::Io {
        addr: hostport.to_string(),
        source,
    };
    let mut s = tokio::net::TcpStream::connect(hostport).await.map_err(io)?;
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(io)?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 201 {
        return Err(RegisterError::Refused {
            status,
            body: body.to_string(),
        });
    }
    Ok(serde_json::from_str(body).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo_gb("MemTotal:       16303920 kB\nMemFree: 1 kB\n"),
            Some(15.5)
        );
        assert_eq!(parse_meminfo_gb("nothing"), None);
    }

    #[test]
    fn detect_gives_cores() {
        assert!(detect().cpu_cores.is_some_and(|c| c.0 >= 1));
    }
}
