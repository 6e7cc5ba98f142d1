"""Appends N records to an audit log as fast as it can (run as a separate process by the tests).

Usage: append_worker.py URL COUNT ACTOR READY_FILE GO_FILE - it opens the log, creates READY_FILE, waits
for GO_FILE, then appends, so that several workers really write at the same time.
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
with AuditLog(url) as log:
    ready.touch()
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.01)
    for i in range(count):
        log.append("test.concurrent", actor=actor, details={"i": i})
