//! IP address classes the original filters on (Python `ipaddress` semantics).

use std::net::IpAddr;

/// Parses an IP address as Python's `ipaddress.ip_address` would (IPv4 or IPv6 text).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Python's `is_loopback`.
pub fn is_loopback(ip: &IpAddr) -> bool {
    ip.is_loopback()
}

/// Python's `is_link_local`: 169.254.0.0/16 and fe80::/10.
pub fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Python's `is_reserved`: 240.0.0.0/4 for IPv4 and the IETF reserved IPv6 blocks.
pub fn is_reserved(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] >= 240,
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            let blocks: [(u16, u32); 15] = [
                (0x0000, 8),
                (0x0100, 8),
                (0x0200, 7),
                (0x0400, 6),
                (0x0800, 5),
                (0x1000, 4),
                (0x4000, 3),
                (0x6000, 3),
                (0x8000, 3),
                (0xa000, 3),
                (0xc000, 3),
                (0xe000, 4),
                (0xf000, 5),
                (0xf800, 6),
                (0xfe00, 9),
            ];
            blocks.iter().any(|&(net, len)| {
                let mask: u16 = (!0u16) << (16 - len);
                s0 & mask == net
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_python() {
        let ip = |s: &str| parse_ip(s).unwrap();
        assert!(is_reserved(&ip("240.0.0.1")));
        assert!(!is_reserved(&ip("8.8.8.8")));
        assert!(is_reserved(&ip("::1")));
        assert!(!is_reserved(&ip("2001:db8::1")));
        assert!(is_link_local(&ip("169.254.1.1")));
        assert!(is_link_local(&ip("fe80::1")));
        assert!(is_loopback(&ip("127.0.0.1")));
    }
}
