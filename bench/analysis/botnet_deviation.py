"""Why `botnet_detection` finds a different number of "IPs with similar commands" than the
original on the real corpus (issue 14, item 5): runs the ORIGINAL cowrieprocessor botnet detector
over the sessions this crate builds (`analysis_bench dump` with CORPUS_DIR), once per order in
which the sessions can be handed to it, and compares each with the crate's result.

Usage: botnet_deviation.py <sessions.jsonl> <rust_result.json>
Env:   COWRIEPROCESSOR_SRC (default /tmp/cowrieprocessor), the exported source tree of
       datagen24/cowrieprocessor (see bench/analysis/side_by_side.sh); imported at run time only.
       Needs scikit-learn and numpy (the side-by-side venv, ~/.cache/celeriac/orig-venv).

The original's `_extract_coordination_data` keeps, for every IP, the commands of the LAST session
(in the order it is given) that has any: `command_data[ip] = commands`. Its `_extract_commands`
and `_extract_credentials` scan the whole raw-event list once per session (53 s on this corpus);
here they are replaced on the instance by dictionary look-ups that return exactly what those scans
return (the first cowrie.login.success with a non-empty username and password; the non-empty
command inputs in log order). Everything else (TF-IDF, cosine_similarity, thresholds, the
averages and the score) is the original's own code.

Prints, per order: the score, avg_similarity, the number of similar-command IPs, and the IPs
that differ from the crate's set, with the session each side took for them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src = os.environ.get("COWRIEPROCESSOR_SRC", "/tmp/cowrieprocessor")
    if not Path(src, "cowrieprocessor", "threat_detection", "botnet.py").exists():
        sys.exit(f"original source not found under {src} (see bench/analysis/side_by_side.sh)")
    sys.path.insert(0, src)
    from cowrieprocessor.threat_detection.botnet import BotnetCoordinatorDetector

    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    rust = json.load(open(sys.argv[2]))
    by_id = {r["session_id"]: r for r in rows}
    sessions = [
        SimpleNamespace(
            session_id=r["session_id"],
            first_event_at=datetime.fromisoformat(r["start"]),
            last_event_at=datetime.fromisoformat(r["end"]),
            enrichment={"session": {r["src_ip"]: {}}} if r.get("src_ip") else None,
        )
        for r in rows
    ]

    def creds(session, raw_events=None):
        for login in by_id[session.session_id].get("logins", []):
            if login.get("success") and login.get("username") and login.get("password"):
                return {"username": login["username"], "password": login["password"]}
        return None

    def commands(session, command_stats=None, raw_events=None):
        return [c for c in by_id[session.session_id].get("commands", []) if c]

    # Which session each side lets stand for an IP (for the report).
    def rep_last(order):
        rep = {}
        for s in order:
            r = by_id[s.session_id]
            if r.get("src_ip") and commands(s):
                rep[r["src_ip"]] = s.session_id
        return rep

    rust_similar = set(rust["similar_command_ips"])
    rust_rep = rep_last(sorted(sessions, key=lambda s: (s.first_event_at, s.session_id), reverse=True))
    print(
        f"crate: score={rust['coordination_score']} "
        f"avg_similarity={rust['indicators']['commands']['avg_similarity']:.9f} "
        f"similar_command_ips={len(rust_similar)} credential_reuse_ips={len(rust['credential_reuse_ips'])} "
        f"unique_ips={rust['analysis_metadata']['unique_ips']}"
    )
    orders = {
        "session id ascending (the golden harness's order)": sorted(sessions, key=lambda s: s.session_id),
        "start ascending (log order: the latest session stands for an IP)": sorted(
            sessions, key=lambda s: (s.first_event_at, s.session_id)
        ),
        "start descending (the earliest session stands for an IP, as the crate)": sorted(
            sessions, key=lambda s: (s.first_event_at, s.session_id), reverse=True
        ),
    }
    for name, order in orders.items():
        det = BotnetCoordinatorDetector()
        det._extract_credentials = creds
        det._extract_commands = commands
        r = det.detect(order, window_hours=24.0 * 56, raw_events=[None])
        similar = set(r["similar_command_ips"])
        c = r["indicators"]["commands"]
        print(f"\noriginal, sessions in {name}:")
        print(
            f"  score={r['coordination_score']} avg_similarity={float(c['avg_similarity']):.9f} "
            f"similar_command_ips={len(similar)} credential_reuse_ips={len(r['credential_reuse_ips'])} "
            f"unique_ips={r['analysis_metadata']['unique_ips']} same credential IPs: "
            f"{set(r['credential_reuse_ips']) == set(rust['credential_reuse_ips'])}"
        )
        rep = rep_last(order)
        for ip in sorted(similar ^ rust_similar):
            side = "original only" if ip in similar else "crate only"
            o, k = rep.get(ip), rust_rep.get(ip)
            print(
                f"  {side}: {ip}  original's session {o} {commands(SimpleNamespace(session_id=o))!r}"
                f"  crate's session {k} {commands(SimpleNamespace(session_id=k))!r}"
            )


if __name__ == "__main__":
    main()
