"""Appends N records to an audit log as fast as it can (run as a separate process by the tests).

Usage: append_worker.py URL COUNT ACTOR READY_FILE GO_FILE [FIRST_FILE PEER_FIRST_FILE] - it opens the
log, creates READY_FILE, waits for GO_FILE, then appends, so that several workers really write at the same
time. With FIRST_FILE and PEER_FIRST_FILE it creates FIRST_FILE after its first record and waits for the
peer's before the rest, so the two writers' records are bound to interleave (one writer could otherwise win
the lock for its whole run on a busy machine).
"""

import sys
import time
from pathlib import Path

from hybrid_dagster.audit import AuditLog

url, count, actor, ready, go = (
    sys.argv[1],
    int(sys.argv[2]),
    sys.argv[3],
    Path(sys.argv[4]),
    Path(sys.argv[5]),
)
first, peer_first = (Path(sys.argv[6]), Path(sys.argv[7])) if len(sys.argv) > 7 else (None, None)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"no {path.name} signal")
        time.sleep(0.01)


with AuditLog(url) as log:
    ready.touch()
    wait_for(go)
    for i in range(count):
        log.append("test.concurrent", actor=actor, details={"i": i})
        if i == 0 and first is not None and peer_first is not None:
            first.touch()
            wait_for(peer_first)
