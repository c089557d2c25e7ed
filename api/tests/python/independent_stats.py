"""Statistics over Cowrie JSON log files, computed from the lines alone (no database, none of the project's SQL).

Usage: independent_stats.py START END FALLBACK_SENSOR=FILE[,FILE...] ...
An event's sensor is its own `sensor` field, or FALLBACK_SENSOR (what `cowrie-loader --sensor` names) when it has none.
Prints one JSON object: per sensor and for all sensors together ("*"), the figures the API's
/statistics endpoints define (docs/api.md): sessions by the time of their first event, events by their own time.
"""
import json
import sys
from collections import defaultdict
from datetime import datetime, timezone


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


def read(files):
    for path in files:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    e = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(e, dict) and "eventid" in e and "timestamp" in e:
                    yield e


def figures(events, start, end):
    sessions = defaultdict(list)
    for e in events:
        if e.get("session"):
            sessions[e["session"]].append(e)
    chosen = {}
    for sid, evs in sessions.items():
        evs.sort(key=lambda e: ts(e["timestamp"]))
        if start <= ts(evs[0]["timestamp"]) < end:
            chosen[sid] = evs
    durations = [max(float(e["duration"]) for e in evs if "duration" in e)
                 for evs in chosen.values() if any("duration" in e for e in evs)]
    ips = defaultdict(lambda: {"sessions": 0, "events": 0})
    for evs in chosen.values():
        ip = next((e["src_ip"] for e in evs if e.get("src_ip")), None)
        if ip:
            ips[ip]["sessions"] += 1
            ips[ip]["events"] += len(evs)
    in_window = [e for e in events if start <= ts(e["timestamp"]) < end]
    creds = defaultdict(lambda: [0, 0])
    for e in in_window:
        if e["eventid"] in ("cowrie.login.success", "cowrie.login.failed"):
            c = creds[(e.get("username"), e.get("password"))]
            c[0] += 1
            c[1] += e["eventid"] == "cowrie.login.success"
    commands = defaultdict(int)
    for e in in_window:
        if e["eventid"] == "cowrie.command.input" and "input" in e:
            commands[e["input"]] += 1
    logins = lambda evs: [e for e in evs if e["eventid"] in ("cowrie.login.success", "cowrie.login.failed")]
    return {
        "total_sessions": len(chosen),
        "unique_ips": len({next((e["src_ip"] for e in evs if e.get("src_ip")), None) for evs in chosen.values()} - {None}),
        "login_attempts": sum(len(logins(evs)) for evs in chosen.values()),
        "successful_logins": sum(any(e["eventid"] == "cowrie.login.success" for e in evs) for evs in chosen.values()),
        "sessions_with_commands": sum(any(e["eventid"] == "cowrie.command.input" for e in evs) for evs in chosen.values()),
        "file_downloads": sum(sum(e["eventid"].startswith("cowrie.session.file_") for e in evs) for evs in chosen.values()),
        "avg_session_seconds": sum(durations) / len(durations) if durations else None,
        "events": len(in_window),
        "ips": {ip: v for ip, v in ips.items()},
        "credentials": [[u, p, a, s] for (u, p), (a, s) in creds.items()],
        "commands": commands,
    }


def main():
    start, end = ts(sys.argv[1]), ts(sys.argv[2])
    by_sensor = defaultdict(list)
    for arg in sys.argv[3:]:
        fallback, files = arg.split("=", 1)
        for e in read(files.split(",")):
            by_sensor[e.get("sensor") or fallback].append(e)
    out = {s: figures(evs, start, end) for s, evs in by_sensor.items()}
    out["*"] = figures([e for evs in by_sensor.values() for e in evs], start, end)
    print(json.dumps(out))


main()
