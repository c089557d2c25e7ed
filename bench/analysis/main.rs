//! Benchmark of the `analysis` crate: generates synthetic Cowrie sessions with this project's own
//! code and times one analysis over them.
//!
//! Usage: `analysis_bench <longtail|longtail_incremental|longtail_warm|snowshoe|botnet|defang|generate|dump> <sessions> [days]`.
//! Run it under `/usr/bin/time -v` to get the peak RSS of one analysis; `bench/analysis/run.sh`
//! does that for every size.
//! `dump` writes the synthetic sessions to stdout as JSON lines (one `Session` per line); with
//! `SESSIONS_JSONL=<file>` set, the analyses read their sessions from such a file instead of
//! generating them (`bench/analysis/side_by_side.sh` uses both to feed the original Python
//! detectors and this crate the same data).
//! `THREADS=<n>` (default 1) runs snowshoe and botnet with their hot loops on `n` threads
//! (`snowshoe_parallel`, `botnet_parallel`); the analysis line then says `threads=<n>`.
//! With `CORPUS_DIR=<dir>` set, the sessions come from the real Cowrie JSON logs in that
//! directory instead (every file, in name order, built with `sessions_from_events` and the
//! default options; `<sessions>` 0 accepts any count). `RESULT_JSON=<file>` makes `botnet`
//! write its whole result there (`bench/analysis/botnet_deviation.py` compares it with the
//! original's computation).
//!
//! The synthetic mix imitates a real sensor: 60 % brute-force sessions without commands, 30 %
//! sessions replaying one of 40 bot scripts (with a random file name from a pool of 5,000), 10 %
//! sessions with hand-typed unique commands; source IPs are drawn from a pool of `sessions / 5`
//! with a skew towards a few busy IPs; start times spread over `days` days (default 7).

use std::time::Instant;

use analysis::{
    BotnetParams, LoginAttempt, LongtailParams, Session, SnowshoeParams, botnet_parallel,
    create_safe_command, longtail, longtail_from_aggregates, snowshoe_parallel,
};
use chrono::{DateTime, Duration, Utc};

/// splitmix64: a small deterministic generator so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const WORDS: &[&str] = &[
    "cat",
    "/proc/cpuinfo",
    "uname",
    "-a",
    "wget",
    "curl",
    "-O",
    "chmod",
    "+x",
    "777",
    "cd",
    "/tmp",
    "rm",
    "-rf",
    "echo",
    "root:pass",
    "chpasswd",
    "nproc",
    "free",
    "-m",
    "ls",
    "-la",
    "ps",
    "aux",
    "grep",
    "miner",
    "crontab",
    "-l",
    "history",
    "-c",
    "busybox",
    "tftp",
    "sh",
    "bash",
    "python3",
    "perl",
    "nohup",
    "./x86",
    "./arm7",
    "/dev/shm",
    "ssh-keygen",
    "authorized_keys",
    ">>",
    "|",
    ";",
];

fn script(rng: &mut Rng, id: usize, file: &str) -> Vec<String> {
    let mut local = Rng(id as u64 * 7919 + 17);
    let len = 5 + local.below(4) as usize;
    (0..len)
        .map(|k| {
            let words = 2 + local.below(4) as usize;
            let mut parts: Vec<String> = (0..words)
                .map(|_| WORDS[local.below(WORDS.len() as u64) as usize].to_string())
                .collect();
            if k == 1 {
                parts.push(format!("http://198.51.100.{}/{file}", id % 250));
            }
            if k == 2 && rng.below(2) == 0 {
                parts.push(file.to_string());
            }
            parts.join(" ")
        })
        .collect()
}

/// Synthetic sessions, deterministic for a given size.
pub fn synthetic_sessions(n: usize, days: i64) -> Vec<Session> {
    let mut rng = Rng(42);
    let t0: DateTime<Utc> = DateTime::from_timestamp(1_735_689_600, 0).expect("valid epoch");
    let n_ips = (n / 5).max(10) as u64;
    let span = days * 86_400;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // Skewed IP choice: half the sessions come from the first 2 % of the pool.
        let ip_idx = if rng.below(2) == 0 {
            rng.below((n_ips / 50).max(1))
        } else {
            rng.below(n_ips)
        };
        let ip = format!(
            "{}.{}.{}.{}",
            11 + ip_idx / 65536 % 200,
            ip_idx / 256 % 256,
            ip_idx % 256,
            7
        );
        // Bursts: a third of sessions start within a few minutes of one of 200 campaign times.
        let start_s = if rng.below(3) == 0 {
            let burst = rng.below(200) as i64 * span / 200;
            burst + rng.below(300) as i64
        } else {
            rng.below(span as u64) as i64
        };
        let start =
            t0 + Duration::seconds(start_s) + Duration::microseconds(rng.below(1_000_000) as i64);
        let kind = rng.below(10);
        let (commands, duration): (Vec<String>, f64) = if kind < 6 {
            (Vec::new(), 1.0 + rng.unit() * 30.0)
        } else if kind < 9 {
            let file = format!("f{}", rng.below(5_000));
            let id = rng.below(40) as usize;
            (script(&mut rng, id, &file), 5.0 + rng.unit() * 120.0)
        } else {
            let k = 1 + rng.below(7) as usize;
            let cmds = (0..k)
                .map(|_| {
                    format!(
                        "{} {:x}",
                        WORDS[rng.below(WORDS.len() as u64) as usize],
                        rng.next()
                    )
                })
                .collect();
            (cmds, 10.0 + rng.unit() * 600.0)
        };
        let logins = 1 + rng.below(3) as u32;
        let success = kind >= 6 || rng.below(4) == 0;
        let password = format!("pw{}", rng.below(50));
        out.push(Session {
            session_id: format!("{:012x}", rng.next() & 0xffff_ffff_ffff),
            sensor: Some("bench".into()),
            src_ip: Some(ip),
            start,
            end: start + Duration::microseconds((duration * 1e6) as i64),
            closed_duration: Some(duration),
            command_events: commands.len() as u32,
            commands: commands.iter().map(|c| create_safe_command(c)).collect(),
            login_attempts: logins,
            logins: vec![LoginAttempt {
                username: "root".into(),
                password,
                success,
                timestamp: start,
            }],
            file_events: u32::from(kind >= 6 && rng.below(3) == 0),
            file_downloads: Vec::new(),
            client_version: None,
            hassh: None,
            protocol: Some("ssh".into()),
            event_count: 5,
            country: None,
            asn: None,
        });
    }
    out
}

/// Current and peak resident memory of this process (Linux), for the stage log.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: {} <longtail|longtail_incremental|longtail_warm|snowshoe|botnet|defang|generate|dump> <sessions> [days]",
            args[0]
        );
        std::process::exit(2);
    }
    let what = args[1].as_str();
    let n: usize = args[2].parse().expect("sessions is a number");
    let days: i64 = args
        .get(3)
        .map_or(7, |d| d.parse().expect("days is a number"));
    let t = Instant::now();
    let sessions = match (
        std::env::var_os("CORPUS_DIR"),
        std::env::var_os("SESSIONS_JSONL"),
    ) {
        (Some(dir), _) => {
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .expect("CORPUS_DIR is a readable directory")
                .map(|e| e.expect("CORPUS_DIR entry").path())
                .collect();
            files.sort();
            let mut events = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).expect("corpus file is readable");
                events.extend(analysis::events_from_json_lines(&text).0);
            }
            let (mut all, _) = analysis::sessions_from_events(&events, Default::default());
            all.sort_by(|a, b| a.session_id.cmp(&b.session_id));
            assert!(
                n == 0 || all.len() == n,
                "CORPUS_DIR holds {} sessions, not {n}",
                all.len()
            );
            all
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).expect("SESSIONS_JSONL is readable");
            let all: Vec<Session> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("SESSIONS_JSONL holds Session JSON lines"))
                .collect();
            assert_eq!(
                all.len(),
                n,
                "SESSIONS_JSONL holds a different number of sessions"
            );
            all
        }
        (None, None) => synthetic_sessions(n, days),
    };
    let gen_secs = t.elapsed().as_secs_f64();
    if what == "dump" {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for s in &sessions {
            serde_json::to_writer(&mut out, s).expect("serialise session");
            out.write_all(b"\n").expect("write session");
        }
        out.flush().expect("flush sessions");
        return;
    }
    let commands: usize = sessions.iter().map(|s| s.commands.len()).sum();
    // For `longtail_warm`: every day but the last, already reduced and serialised (a cache).
    let by_day = |sessions: &[Session]| {
        let mut m: std::collections::BTreeMap<_, Vec<Session>> = Default::default();
        for s in sessions {
            m.entry(s.start.date_naive()).or_default().push(s.clone());
        }
        m
    };
    let warm_cache: Vec<String> = if what == "longtail_warm" {
        let days = by_day(&sessions);
        let params = LongtailParams::default();
        days.iter()
            .take(days.len().saturating_sub(1))
            .map(|(d, ss)| {
                let a = analysis::DayAggregate::from_sessions(Some(*d), ss, &params, &mut |_| {})
                    .expect("aggregate");
                serde_json::to_string(&a).expect("serialise")
            })
            .collect()
    } else {
        Vec::new()
    };
    // Threads for the snowshoe and botnet parallel loops (THREADS, default 1: serial).
    let threads: usize = std::env::var("THREADS")
        .ok()
        .map_or(1, |t| t.parse().expect("THREADS is a number"));
    let mut last_stage = "";
    let t = Instant::now();
    let verbose = std::env::var_os("BENCH_STAGES").is_some();
    let mut progress = |p: analysis::Progress| {
        if verbose && (p.stage != last_stage || p.current == p.total) {
            eprintln!(
                "{:>8.3}s {} {}/{} {}",
                t.elapsed().as_secs_f64(),
                p.stage,
                p.current,
                p.total,
                rss()
            );
        }
        last_stage = p.stage;
    };
    let summary = match what {
        "longtail" => {
            let r =
                longtail(&sessions, &LongtailParams::default(), &mut progress).expect("longtail");
            format!(
                "rare={} anomalous={} outliers={}",
                r.rare_command_count, r.anomalous_sequence_count, r.outlier_session_count
            )
        }
        "longtail_incremental" => {
            let params = LongtailParams::default();
            let mut by_day: std::collections::BTreeMap<_, Vec<Session>> = Default::default();
            for s in &sessions {
                by_day
                    .entry(s.start.date_naive())
                    .or_default()
                    .push(s.clone());
            }
            let aggs = by_day
                .iter()
                .map(|(d, ss)| {
                    analysis::DayAggregate::from_sessions(Some(*d), ss, &params, &mut |_| {})
                        .expect("aggregate")
                })
                .collect();
            let r = longtail_from_aggregates(aggs, &params, &mut progress).expect("longtail");
            format!(
                "days={} rare={} anomalous={} outliers={}",
                by_day.len(),
                r.rare_command_count,
                r.anomalous_sequence_count,
                r.outlier_session_count
            )
        }
        "longtail_warm" => {
            let params = LongtailParams::default();
            let days = by_day(&sessions);
            let (last_day, last) = days.iter().next_back().expect("at least one day");
            let mut aggs: Vec<analysis::DayAggregate> = warm_cache
                .iter()
                .map(|j| serde_json::from_str(j).expect("deserialise"))
                .collect();
            aggs.push(
                analysis::DayAggregate::from_sessions(Some(*last_day), last, &params, &mut |_| {})
                    .expect("aggregate"),
            );
            let r = longtail_from_aggregates(aggs, &params, &mut progress).expect("longtail");
            format!(
                "cached_days={} rebuilt_sessions={} rare={} anomalous={} outliers={}",
                warm_cache.len(),
                last.len(),
                r.rare_command_count,
                r.anomalous_sequence_count,
                r.outlier_session_count
            )
        }
        "snowshoe" => {
            let r = snowshoe_parallel(
                &sessions,
                24.0 * days as f64,
                &SnowshoeParams::default(),
                threads,
                &mut progress,
            )
            .expect("snowshoe");
            format!(
                "score={} ips={}",
                r.confidence_score, r.analysis_metadata.unique_ips
            )
        }
        "botnet" => {
            let r = botnet_parallel(
                &sessions,
                24.0 * days as f64,
                &BotnetParams::default(),
                threads,
                &mut progress,
            )
            .expect("botnet");
            if let Some(path) = std::env::var_os("RESULT_JSON") {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&r).expect("serialise result"),
                )
                .expect("write RESULT_JSON");
            }
            format!(
                "score={} ips={} similar_command_ips={} avg_similarity={}",
                r.coordination_score,
                r.analysis_metadata.unique_ips,
                r.similar_command_ips.len(),
                r.indicators.commands.avg_similarity
            )
        }
        "generate" => "only the synthetic sessions (baseline RSS)".to_string(),
        "defang" => {
            let mut total = 0usize;
            for s in &sessions {
                for c in &s.commands {
                    total += create_safe_command(c).len();
                }
            }
            format!("bytes={total}")
        }
        other => {
            eprintln!("unknown analysis {other}");
            std::process::exit(2);
        }
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "analysis={what} sessions={n} commands={commands} generate_s={gen_secs:.2} analysis_s={secs:.3} threads={threads} last_stage={last_stage} {summary}"
    );
}
