"""The plane side of DR: ``python -m hybrid_dagster.dr.worker``, started by ``DataPlane.run`` (Pipes
extras ``hybrid_dr``) or by :mod:`hybrid_dagster.dr.local` (the job in ``HYBRID_DAGSTER_DR_JOB``, the
result printed as one JSON line).

Correctness rules: a job names its mode (``replicate``, ``capture``, ``failover``, ``verify``) and the
planes by their secret-free configuration; what comes back is numbers and table identifiers only. The
failover mode installs the fallback isolation (an audit hook) when it was not started in a private
mount namespace.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from hybrid_dagster.dr.drill import capture, failover, verify
from hybrid_dagster.dr.isolation import AUDIT_HOOK, HIDDEN_ENV, install_audit_hook
from hybrid_dagster.dr.plane import replicate_plane
from hybrid_dagster.plane.work import open_plane_work
from hybrid_dagster.residency.model import ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane

JOB_ENV = "HYBRID_DAGSTER_DR_JOB"
EXTRAS_KEY = "hybrid_dr"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one DR job in this process and return its metadata-only result.

    Example:
        >>> run_job({"mode": "capture", "primary": eu.to_config(), "secondary": dr.to_config(),
        ...          "drill_id": "d1"})["tables"]
        3
    """
    mode = job["mode"]
    secondary = DataPlane.from_config(job["secondary"])
    if mode == "failover":
        hidden = list(job.get("hidden", []))
        if job.get("isolation") == AUDIT_HOOK:
            install_audit_hook(hidden)
        return failover(secondary, job["drill_id"], hidden).to_json()
    primary = DataPlane.from_config(job["primary"])
    if mode == "replicate":
        policy = ResidencyPolicy.model_validate(job.get("policy") or {})
        result = replicate_plane(primary, secondary, policy, secret_refs=job.get("secret_refs", []))
        return {**result.metadata(), "tables": [t.identifier for t in result.tables], "routes": result.routes}
    if mode == "capture":
        return capture(primary, secondary, job["drill_id"])
    if mode == "verify":
        return verify(primary, secondary, job["drill_id"], job.get("heads"))
    raise ValueError(f"unknown DR job mode {mode!r}")


def _pipes() -> None:
    with open_plane_work() as work:
        job = dict(work.pipes.extras[EXTRAS_KEY])
        result = run_job(job)
        metadata: dict[str, Any] = {}
        for key, value in result.items():
            if isinstance(value, bool | int | float):
                metadata[key if key.startswith("dr/") else f"dr/{key}"] = value
        if "tables" in result and isinstance(result["tables"], list):
            metadata["dr/table_names"] = {"raw_value": ", ".join(result["tables"]), "type": "text"}
        for lag in result.get("lags", []):
            name = lag["identifier"]
            metadata[f"dr/lag_s/{name}"] = float(lag["rpo_s"])
            metadata[f"dr/lag_changes/{name}"] = int(lag["rpo_changes"])
            for end in ("primary", "secondary"):  # CDC source positions (identifiers, not row values)
                if lag[f"{end}_position"]:
                    text = str(lag[f"{end}_position"])
                    metadata[f"dr/{end}_position/{name}"] = {"raw_value": text, "type": "text"}
        work.report(str(job["asset"]), metadata)


def main() -> int:
    raw = os.environ.get(JOB_ENV)
    if raw:
        print(json.dumps(run_job(json.loads(raw)), sort_keys=True), flush=True)
        return 0
    _pipes()
    return 0


if __name__ == "__main__":
    os.environ.pop(HIDDEN_ENV, None)
    sys.exit(main())
