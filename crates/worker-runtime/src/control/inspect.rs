//! The read-only commands (`celery inspect`): ping, stats, active, reserved, scheduled, revoked, registered,
//! active_queues, query_task, conf, report, clock, and mingle's hello; with the kombu/Python shapes they reply in
//! (`Queue.as_dict`, `Connection.info()`, `getrusage`).

use celery_proto::pyrepr::repr;
use celery_proto::time::isoformat;
use serde_json::{Map, Value, json};
use transport::redact_url;

use super::{ControlContext, ok};
use crate::state::Phase;

/// `ping`.
pub(super) fn ping() -> Value {
    ok("pong")
}

/// `stats`: Celery's `Consumer.stats()` plus the pool, broker and rusage parts Flower reads.
pub(super) fn stats(ctx: &ControlContext) -> Value {
    let pid = std::process::id();
    let totals = ctx.state.totals();
    let scheduled = ctx.state.requests.count(Phase::Scheduled);
    json!({
        "total": totals,
        "pid": pid,
        "clock": ctx.state.clock.value().to_string(),
        "uptime": ctx.state.started.elapsed().as_secs(),
        "pool": {
            "implementation": "celeriac.worker:TokioPool",
            "max-concurrency": ctx.pool.size(),
            "processes": [pid],
            "max-tasks-per-child": null,
            "put-guarded-by-semaphore": false,
            "timeouts": [],
        },
        "broker": broker_info(&ctx.config.broker_url),
        "prefetch_count": ctx.config.prefetch_count() + scheduled,
        "rusage": rusage(),
    })
}

/// `active` / `reserved`: the requests in `phase`, as `RequestInfo` dicts.
pub(super) fn requests(ctx: &ControlContext, phase: Phase, safe: bool) -> Value {
    json!(ctx.state.requests_in(phase, safe))
}

/// `scheduled`: `{eta, priority, request}` per request waiting for its ETA.
pub(super) fn scheduled(ctx: &ControlContext, safe: bool) -> Value {
    let list: Vec<Value> = ctx.state.requests.map_in(Phase::Scheduled, |info| {
        json!({
            "eta": info.eta.map(isoformat),
            "priority": info.priority,
            "request": info.to_value(&ctx.state.hostname, safe),
        })
    });
    json!(list)
}

/// `revoked`.
pub(super) fn revoked(ctx: &ControlContext) -> Value {
    json!(ctx.state.revoked_ids())
}

/// Python's `str(value)` for taskinfoitems (`True`, `None`, `30.0`, bare strings).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// `registered`: sorted task names (`celery.*` only with `builtins`), as `name [item=value ...]` when items are
/// asked and the task has them.
pub(super) fn registered(ctx: &ControlContext, items: &[String], builtins: bool) -> Value {
    let mut out = Vec::new();
    for name in ctx.registry.names() {
        if name.starts_with("celery.") && !builtins {
            continue;
        }
        let Some(task) = ctx.registry.get(&name) else {
            continue;
        };
        if items.is_empty() {
            out.push(name);
            continue;
        }
        let o = &task.options;
        let fields: Vec<String> = items
            .iter()
            .filter_map(|item| {
                let v = match item.as_str() {
                    "acks_late" => json!(o.acks_late),
                    "ignore_result" => json!(o.ignore_result),
                    "track_started" => json!(o.track_started),
                    "rate_limit" => json!(o.rate_limit),
                    "time_limit" => json!(o.time_limit),
                    "soft_time_limit" => json!(o.soft_time_limit),
                    "max_retries" => json!(o.max_retries),
                    "default_retry_delay" => json!(o.default_retry_delay),
                    _ => Value::Null,
                };
                (!v.is_null()).then(|| format!("{item}={}", py_str(&v)))
            })
            .collect();
        if fields.is_empty() {
            out.push(name);
        } else {
            out.push(format!("{name} [{}]", fields.join(" ")));
        }
    }
    json!(out)
}

/// `active_queues`.
pub(super) fn active_queues(ctx: &ControlContext) -> Value {
    let queues = ctx.state.queues();
    json!(queues.iter().map(|q| queue_dict(q)).collect::<Vec<_>>())
}

/// `query_task`: `{id: [phase, request]}` for the ids this worker holds.
pub(super) fn query_task(ctx: &ControlContext, ids: &[String]) -> Value {
    let mut out = Map::new();
    for (id, phase, info) in ctx.state.requests.map_ids(ids, |phase, info| {
        (
            info.id.clone(),
            phase,
            info.to_value(&ctx.state.hostname, false),
        )
    }) {
        let phase = match phase {
            Phase::Active => "active",
            Phase::Reserved => "reserved",
            Phase::Scheduled => "scheduled",
        };
        out.insert(id, json!([phase, info]));
    }
    Value::Object(out)
}

/// `conf`: the settings Flower shows, URLs redacted.
pub(super) fn conf(ctx: &ControlContext) -> Value {
    let c = &ctx.config;
    json!({
        "broker_url": redact_url(&c.broker_url),
        "result_backend": redact_url(&c.result_backend),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "enable_utc": true,
        "timezone": "UTC",
        "result_extended": c.result_extended,
        "task_track_started": c.track_started,
        "result_expires": c.result_expires,
        "worker_concurrency": ctx.pool.size(),
        "worker_prefetch_multiplier": c.prefetch_multiplier,
        "worker_send_task_events": ctx.state.task_events(),
        "broker_transport_options": {"visibility_timeout": c.visibility_timeout},
        "include": [],
    })
}

/// `report`: `{"ok": text}` in the layout of Celery's `bugreport`.
pub(super) fn report(ctx: &ControlContext) -> Value {
    let c = &ctx.config;
    ok(format!(
        "\nsoftware -> celeriac:{} (rs-celeriac) rust worker\n            platform -> system:{} arch:{}\n            loader -> celeriac (Rust task registry)\n            settings -> transport:{} results:{}\n\nbroker_url: {}\nresult_backend: {}\nnode: {}\nqueues: {:?}\nconcurrency: {}\ntasks: {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::events::sw_sys(),
        std::env::consts::ARCH,
        ctx.transport.name(),
        redact_url(&c.result_backend),
        redact_url(&c.broker_url),
        redact_url(&c.result_backend),
        c.node_name,
        ctx.state.queues(),
        ctx.pool.size(),
        ctx.registry.names().join(", "),
    ))
}

/// `clock`.
pub(super) fn clock(ctx: &ControlContext) -> Value {
    json!({"clock": ctx.state.clock.value()})
}

/// Mingle's `hello`: adopt the peer's revoked ids and answer with ours and our clock (`None` to ourselves).
pub(super) fn hello(ctx: &ControlContext, from: &str, revoked: &Value) -> Value {
    if from == ctx.config.node_name {
        return Value::Null;
    }
    let n = crate::mingle::merge_revoked(&ctx.state, revoked);
    if n > 0 {
        tracing::info!(
            from,
            adopted = n,
            "mingle: revoked ids from a starting peer"
        );
    }
    let revoked = ctx.state.revoked_for_mingle();
    json!({"revoked": revoked, "clock": ctx.state.clock.forward()})
}

/// kombu's `Queue.as_dict(recurse=True)` for a plain direct queue, or for a worker-direct queue `<node>.dq2`
/// (exchange `C.dq2`, routing key the node name, as Celery's `worker_direct` declares it).
pub fn queue_dict(q: &str) -> Value {
    let (exchange, routing_key) = match celery_proto::kombu_amqp::worker_direct_node(q) {
        Some(node) => (celery_proto::kombu_amqp::WORKER_DIRECT_EXCHANGE, node),
        None => (q, q),
    };
    json!({
        "name": q,
        "exchange": {"name": exchange, "type": "direct", "arguments": null, "durable": true, "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": routing_key, "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null, "bindings": [],
        "no_declare": null, "expires": null, "message_ttl": null, "max_length": null, "max_length_bytes": null,
        "max_priority": null,
    })
}

/// kombu's `Connection.info()` for a Redis URL.
pub fn broker_info(url: &str) -> Value {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let scheme = scheme.to_ascii_lowercase();
    let amqp = matches!(scheme.as_str(), "amqp" | "amqps" | "pyamqp");
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let userid = auth
        .and_then(|a| a.split_once(':').map(|(u, _)| u).or(Some(a)))
        .filter(|u| !u.is_empty());
    let (hostport, path) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let hostport = hostport.split(',').next().unwrap_or("");
    let default_port = match scheme.as_str() {
        "amqps" => 5671,
        "amqp" | "pyamqp" => 5672,
        s if s.contains("sentinel") => 26379,
        _ => 6379,
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(default_port)),
        None => (hostport, default_port),
    };
    let path = path.split('?').next().unwrap_or("");
    let virtual_host = if amqp {
        // kombu: the path is the vhost, `/` when empty (`amqp://host//` is `/` too), percent-decoded.
        match transport::percent_decode(path) {
            v if v.is_empty() => "/".to_string(),
            v => v,
        }
    } else {
        match path.split('/').next_back().unwrap_or("") {
            "" => "0".to_string(),
            db => db.to_string(),
        }
    };
    let transport = match scheme.as_str() {
        "amqp" | "amqps" => "amqp",
        "pyamqp" => "pyamqp",
        s if s.contains("sentinel") => "sentinel",
        _ => "redis",
    };
    json!({
        "hostname": host, "userid": userid, "virtual_host": virtual_host,
        "port": port, "insist": false, "ssl": scheme == "rediss" || scheme == "amqps", "transport": transport,
        "connect_timeout": 4, "transport_options": {}, "login_method": if amqp { json!("PLAIN") } else { Value::Null },
        "uri_prefix": null, "heartbeat": 120.0, "failover_strategy": "round-robin", "alternates": [],
        "credential_provider": null,
    })
}

/// `resource.getrusage(RUSAGE_SELF)` from /proc (Linux); `"N/A"` elsewhere, as Celery allows.
pub fn rusage() -> Value {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return json!("N/A");
    };
    // Fields after the parenthesised command name: state is field 3.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = 100.0;
    json!({
        "utime": field(14) as f64 / ticks, "stime": field(15) as f64 / ticks,
        "maxrss": status_kb("VmHWM:"), "ixrss": 0, "idrss": 0, "isrss": 0,
        "minflt": field(10), "majflt": field(12), "nswap": 0, "inblock": 0, "oublock": 0,
        "msgsnd": 0, "msgrcv": 0, "nsignals": 0,
        "nvcsw": status_kb("voluntary_ctxt_switches:"), "nivcsw": status_kb("nonvoluntary_ctxt_switches:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_info_and_redaction_like_kombu() {
        let i = broker_info("redis://:secret@127.0.0.1:6390/3");
        assert_eq!(i["hostname"], "127.0.0.1");
        assert_eq!(i["port"], 6390);
        assert_eq!(i["virtual_host"], "3");
        assert_eq!(i["userid"], Value::Null);
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6390/0"),
            "redis://:********@127.0.0.1:6390/0"
        );
        assert_eq!(broker_info("redis://localhost")["port"], 6379);
    }

    #[test]
    fn broker_info_on_amqp_is_what_celery_reports() {
        let capture: Value = serde_json::from_slice(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/fixtures/celery-wire-amqp/c-remote-control/c04-inspect-stats.json"
            ))
            .expect("fixture"),
        )
        .expect("json");
        let want = &capture["result_returned_to_caller"]["capw@vm"]["broker"];
        assert_eq!(
            &broker_info("amqp://guest:guest@127.0.0.1:5673/capture_amqp"),
            want
        );
        assert_eq!(broker_info("amqp://guest@h//")["virtual_host"], "/");
        assert_eq!(broker_info("amqp://h")["virtual_host"], "/");
        assert_eq!(broker_info("amqp://h/a%2Fb")["virtual_host"], "a/b");
        let tls = broker_info("amqps://u:p@h/v");
        assert_eq!(
            (tls["port"].clone(), tls["ssl"].clone()),
            (json!(5671), json!(true))
        );
    }

    #[test]
    fn queue_dict_has_the_keys_flower_reads() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/celery-wire/c-remote-control/c03-inspect-active_queues.reply.raw"
        ))
        .expect("fixture");
        let msg = celery_proto::Message::decode(&fixture, false).expect("envelope");
        let body = msg.json_body().expect("json");
        let want = &body["w1@vm"][0];
        let got = queue_dict("longtail");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(want));
        assert_eq!(keys(&got["exchange"]), keys(&want["exchange"]));
        assert!(rusage().is_object());
    }

    #[test]
    fn worker_direct_queues_are_described_as_celery_declares_them() {
        let capture: Value = serde_json::from_slice(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/fixtures/celery-wire-amqp/c-remote-control/c05-inspect-active_queues-destination.json"
            ))
            .expect("fixture"),
        )
        .expect("json");
        let replied = capture["result_returned_to_caller"]["capw@vm"]
            .as_array()
            .unwrap();
        for q in ["celery", "capw@vm.dq2"] {
            let want = replied.iter().find(|d| d["name"] == q).unwrap();
            assert_eq!(&queue_dict(q), want, "{q}");
        }
    }
}
