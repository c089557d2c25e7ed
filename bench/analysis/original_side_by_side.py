"""Runs one detector of the ORIGINAL Python cowrieprocessor over sessions dumped by
`analysis_bench dump` (JSON lines), for the side-by-side benchmark in docs/benchmarks.md.

Usage: original_side_by_side.py <longtail|snowshoe|botnet> <sessions.jsonl> <days>
Env:   COWRIEPROCESSOR_SRC (default /tmp/cowrieprocessor), the exported source tree of
       datagen24/cowrieprocessor; it is imported at run time and never copied into this repo.

The original detectors take SQLAlchemy `SessionSummary` rows (and, for longtail, read raw events
through PostgreSQL-only SQL). This harness feeds them in-memory objects with the same attributes
instead of a database:
- every session is a SimpleNamespace with session_id, first_event_at, last_event_at,
  command_count, login_attempts, file_downloads, risk_score and
  enrichment = {"session": {src_ip: {}}} (the original reads the source IP only from the keys of
  enrichment["session"]; this is the same "IP from the session's own events" shim as the golden
  fixtures, without SPUR data, so no countries or ASNs);
- longtail: the two methods that run PostgreSQL-only SQL (_extract_commands_for_sessions,
  _extract_ips_for_sessions) are replaced on the instance by dictionary look-ups returning what
  the golden harness's SQLite queries returned (command inputs in log order, cleaned the same way,
  and the session's src_ip); password intelligence is off, as in the golden harness;
- botnet: raw_events = the sessions' cowrie.login.success and cowrie.command.input events as
  in-memory objects (the only event types its loops read), in session then log order; the
  sessions are handed over sorted by (start, session_id) DESCENDING, because the original lets
  the LAST session it meets stand for an IP's command text and the Rust crate defines that as the
  IP's earliest session (docs/analysis.md); in file order the scores differ by about 2e-3.

Prints one line: `analysis=... sessions=... analysis_s=... <summary>` (analysis_s is the detector
call only; run under /usr/bin/time -v for whole-process wall time and peak RSS).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace


def parse_ts(s: str) -> datetime:
    # chrono writes RFC 3339 with 'Z' and up to nanoseconds; Python 3.11 accepts 'Z' but only
    # up to microseconds, which is all the generator produces.
    return datetime.fromisoformat(s)


def load(path: str):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    sessions = []
    for r in rows:
        sessions.append(
            SimpleNamespace(
                session_id=r["session_id"],
                first_event_at=parse_ts(r["start"]),
                last_event_at=parse_ts(r["end"]),
                command_count=r.get("command_events", 0),
                login_attempts=r.get("login_attempts", 0),
                file_downloads=r.get("file_events", 0),
                risk_score=None,
                enrichment={"session": {r["src_ip"]: {}}} if r.get("src_ip") else None,
            )
        )
    return rows, sessions


def main() -> None:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    what, path, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
    src = os.environ.get("COWRIEPROCESSOR_SRC", "/tmp/cowrieprocessor")
    if not Path(src, "cowrieprocessor", "threat_detection", "longtail.py").exists():
        sys.exit(f"original source not found under {src} (see bench/analysis/side_by_side.sh)")
    sys.path.insert(0, src)

    t_load = time.perf_counter()
    rows, sessions = load(path)
    load_s = time.perf_counter() - t_load

    if what == "longtail":
        from cowrieprocessor.threat_detection.longtail import LongtailAnalyzer

        commands = {}
        ips = {}
        for r in rows:
            cleaned = []
            for c in r.get("commands", []):
                c = "".join(ch for ch in str(c) if ord(ch) >= 32 or ch in "\t\n\r").strip()
                if c:
                    cleaned.append(c)
            if cleaned:
                commands[r["session_id"]] = cleaned
            ips[r["session_id"]] = r.get("src_ip")
        vocab = Path(tempfile.mkdtemp(prefix="orig-vocab-")) / "vocab.pkl"
        analyzer = LongtailAnalyzer(
            session_factory=None, vocab_path=vocab, enable_password_intelligence=False
        )
        analyzer._extract_commands_for_sessions = lambda ids: {i: commands[i] for i in ids if i in commands}
        analyzer._extract_ips_for_sessions = lambda ids: {i: ips.get(i) for i in ids}
        t = time.perf_counter()
        r = analyzer.analyze(sessions, lookback_days=days)
        secs = time.perf_counter() - t
        method = r.statistical_summary.get("analysis_method", "full")
        summary = (
            f"rare={r.rare_command_count} anomalous={r.anomalous_sequence_count} "
            f"outliers={r.outlier_session_count} method={method}"
        )
    elif what == "snowshoe":
        from cowrieprocessor.threat_detection.snowshoe import SnowshoeDetector

        t = time.perf_counter()
        r = SnowshoeDetector().detect(sessions, window_hours=24 * days)
        secs = time.perf_counter() - t
        summary = f"score={r['confidence_score']} ips={r['analysis_metadata'].get('unique_ips')}"
    elif what == "botnet":
        from cowrieprocessor.threat_detection.botnet import BotnetCoordinatorDetector

        order = sorted(range(len(rows)), key=lambda i: (sessions[i].first_event_at, rows[i]["session_id"]), reverse=True)
        rows = [rows[i] for i in order]
        sessions = [sessions[i] for i in order]
        events = []
        for r in rows:
            for login in r.get("logins", []):
                if login.get("success"):
                    events.append(
                        SimpleNamespace(
                            session_id=r["session_id"],
                            event_type="cowrie.login.success",
                            payload={"username": login["username"], "password": login["password"]},
                        )
                    )
            for c in r.get("commands", []):
                events.append(
                    SimpleNamespace(
                        session_id=r["session_id"],
                        event_type="cowrie.command.input",
                        payload={"input": c},
                    )
                )
        t = time.perf_counter()
        r = BotnetCoordinatorDetector().detect(sessions, window_hours=24.0 * days, raw_events=events)
        secs = time.perf_counter() - t
        summary = (
            f"score={r['coordination_score']} ips={r['analysis_metadata'].get('unique_ips')} "
            f"raw_events={len(events)}"
        )
    else:
        sys.exit(f"unknown analysis {what}")
    print(
        f"analysis={what} sessions={len(sessions)} load_s={load_s:.2f} analysis_s={secs:.3f} {summary}"
    )


if __name__ == "__main__":
    main()
