"""Plane work that resolves a secret and then tries every way of leaking it to the orchestrator."""

import logging
import sys
import time

from hybrid_dagster.plane.work import open_plane_work

with open_plane_work() as work:
    ref = work.pipes.get_extra("db_password")
    value = work.secret(ref)
    print(f"stdout: connecting with {value}")
    print(f"stderr: connecting with {value}", file=sys.stderr)
    logging.getLogger("clinical.work").warning("logger: password is %s", value)
    work.pipes.log.info(f"pipes log: password is {value}")
    time.sleep(float(work.pipes.extras.get("sleep_s") or 0))  # a long job: the plane's token is renewed
    again = work.secret(ref)
    work.report(
        work.pipes.get_extra("asset"),
        {"dsn": {"raw_value": f"host=db password={again}", "type": "text"}, "same": again == value},
    )
    if work.pipes.extras.get("fail"):
        raise RuntimeError(f"could not log in with password {value}")
