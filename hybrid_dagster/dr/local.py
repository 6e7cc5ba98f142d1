"""DR without Dagster: replicate and drill from an operator's script (and the tests, benchmark, demo).

The same steps the Dagster jobs run (:mod:`hybrid_dagster.dr.worker`), in the calling process, except the
failover, which always runs in its own process under the injected outage (:mod:`hybrid_dagster.dr.isolation`).

Example:
    .. code-block:: python

        from hybrid_dagster.dr.local import run_drill
        from hybrid_dagster.dr.targets import secondary_plane

        result = run_drill(eu_onprem, secondary_plane(eu_onprem))
        print(result.rto_s, result.rpo_s, result.rpo_changes, result.objectives_met)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

from hybrid_dagster.dr.drill import DrillResult, capture, new_drill_id, verify
from hybrid_dagster.dr.errors import DrillError
from hybrid_dagster.dr.isolation import isolated_argv
from hybrid_dagster.dr.worker import JOB_ENV
from hybrid_dagster.plane.config import DrSecondaryConfig
from hybrid_dagster.resources.data_plane import DataPlane


def hidden_paths(primary: DataPlane) -> list[str]:
    """Local paths the outage hides from the failover (the primary's file:// warehouse)."""
    parsed = urlparse(primary.warehouse)
    return [parsed.path] if parsed.scheme == "file" else []


def failover_command(primary: DataPlane) -> tuple[list[str], str]:
    """argv of the failover work and the isolation mode it runs under."""
    return isolated_argv([primary.executor.python, "-m", "hybrid_dagster.dr.worker"], hidden_paths(primary))


def run_drill(
    primary: DataPlane, secondary: DataPlane, *, drill_id: str | None = None, timeout_s: float = 600.0
) -> DrillResult:
    """Capture, inject the outage, fail over with a canary, lift the outage, verify; measured.

    Example:
        >>> run_drill(eu_onprem, secondary_plane(eu_onprem)).rpo_changes
        0
    """
    drill_id = drill_id or new_drill_id()
    config = primary.dr_secondary or DrSecondaryConfig()
    captured = capture(primary, secondary, drill_id)
    argv, mode = failover_command(primary)
    job = {
        "mode": "failover",
        "secondary": secondary.to_config(),
        "drill_id": drill_id,
        "hidden": hidden_paths(primary),
        "isolation": mode,
    }
    t0 = time.time()  # the outage: from here on the failover work cannot read the primary
    proc = subprocess.run(
        argv,
        env={**os.environ, JOB_ENV: json.dumps(job)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise DrillError(f"drill {drill_id} of plane {primary.name!r}: the failover failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    checked = verify(primary, secondary, drill_id, captured["heads"])
    return DrillResult(
        plane=primary.name,
        secondary=secondary.name,
        drill_id=drill_id,
        t0=t0,
        rto_s=round(float(result["canary_passed_at"]) - t0, 3),
        rpo_s=float(result["rpo_s"]),
        rpo_changes=int(result["rpo_changes"]),
        tables=int(result["tables_ok"]),
        rows_read=int(result["rows_read"]),
        isolation=mode,
        primary_intact=bool(checked["primary_intact"]),
        leftovers=int(checked["leftovers"]),
        rto_objective_s=config.rto_objective_s,
        rpo_objective_s=config.rpo_objective_s,
        rpo_objective_changes=config.rpo_objective_changes or 0,
    )


if __name__ == "__main__":  # pragma: no cover - a convenience for operators
    sys.exit("use hybrid_dagster.dr.local.run_drill from a script")
