"""Demo step "evidence": the audit log, the transfer ledger and the compliance report of Meridian Health.

Run after the main demo's materializations (``run_demo(home)``), or standalone:
``python -m examples.clinical_ai.demo_evidence --home .demo``. Standalone, it first seeds the two
aggregates the group benchmark reads (when they are missing) and materializes the real
``analytics/group_ward_benchmark`` asset, whose plane work reads the EU aggregate into the US cloud plane
on the declared SCC route - a real cross-plane transfer, hashed and recorded. Then it verifies the
audit chain, materializes the checkpoint, the transfer ledger with its checks and the compliance report,
and returns the ``summary.json`` section (``audit.url`` is the store's URL).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
BENCHMARK = ["analytics", "group_ward_benchmark"]


def _ensure_dagster_home(home: Path) -> None:
    os.environ.setdefault("HYBRID_DAGSTER_HOME", str(home))
    if not os.environ.get("DAGSTER_HOME"):
        dagster_home = home / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        config = dagster_home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(dagster_home)


def _seed_aggregates() -> None:
    """The benchmark's inputs, synthetic, when the main demo has not produced them."""
    import datetime as dt

    import pyarrow as pa

    from examples.clinical_ai.planes import EU_ONPREM, US_ONPREM
    from hybrid_dagster.resources.tables import replace_table

    wards = ["cardiology", "oncology", "orthopaedics", "paediatrics"]
    eu = EU_ONPREM.load_catalog()
    if not eu.table_exists("analytics.ward_occupancy"):
        month = dt.datetime(2026, 1, 1)
        occupancy = pa.table(
            {
                "ward": wards,
                "month": pa.array([month] * len(wards), pa.timestamp("us")),
                "admissions": pa.array([42, 31, 27, 18], pa.int64()),
            }
        )
        replace_table(eu, "analytics.ward_occupancy", occupancy)
    us = US_ONPREM.load_catalog()
    if not us.table_exists("claims.by_ward"):
        totals = pa.table(
            {
                "ward": wards,
                "claims": pa.array([120, 95, 80, 40], pa.int64()),
                "amount_usd": [512_000.0, 734_500.0, 288_250.0, 96_100.0],
            }
        )
        replace_table(us, "claims.by_ward", totals)


def run_demo(home: Path) -> dict[str, Any]:
    """Run the evidence step in ``home`` and return its ``summary.json`` section.

    Example:
        >>> run_demo(Path(".demo"))["audit"]["verified"]
        True
    """
    home = Path(home).resolve()
    _ensure_dagster_home(home)
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)

    from examples.clinical_ai.definitions import defs as clinical
    from examples.clinical_ai.evidence import evidence_definitions
    from hybrid_dagster.audit import AuditLog
    from hybrid_dagster.audit.checkpoint import latest_checkpoint
    from hybrid_dagster.audit.transfers import TransferLedger

    instance = dg.DagsterInstance.get()
    log = AuditLog()
    if not TransferLedger(log).transfers():
        _seed_aggregates()
        benchmark = clinical.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(BENCHMARK)], run_config=QUIET
        )
        assert benchmark.success

    evidence = evidence_definitions(lambda: clinical, output_dir=home / "evidence")
    job = evidence.resolve_implicit_global_asset_job_def()
    monitor = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("audit_checkpoint"), dg.AssetKey("transfer_ledger")],
        run_config=QUIET,
        raise_on_error=False,
    )
    report = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("compliance_report")], run_config=QUIET
    )
    [materialization] = report.asset_materializations_for_node("compliance_report")
    metadata = materialization.metadata
    checks = {
        e.check_name: e.passed for result in (monitor, report) for e in result.get_asset_check_evaluations()
    }
    checkpoint = latest_checkpoint(instance)
    verified = log.verify(checkpoint=checkpoint)
    ledger = TransferLedger(log)
    return {
        "audit": {
            "url": log.safe_url,
            "records": verified.count,
            "verified": verified.ok,
            "head": verified.head_hash,
            "checkpoint_count": checkpoint[0] if checkpoint else None,
            "verify_command": f"hybrid-dagster audit verify --url {log.safe_url}",
        },
        "transfers": {
            "records": len(ledger.transfers()),
            "by_route": ledger.cost_by_route(),
        },
        "checks": checks,
        "compliance_report": {
            "json": str(metadata["hybrid/evidence_json"].value),
            "markdown": str(metadata["hybrid/evidence_md"].value),
            "controls": metadata["hybrid/controls"].value,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.clinical_ai.demo_evidence")
    parser.add_argument("--home", default=".demo", help="Folder of the demo (Dagster home inside).")
    args = parser.parse_args(argv)
    summary = run_demo(Path(args.home))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0 if summary["audit"]["verified"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
