"""Demo step: disaster recovery of the EU on-prem plane to an EU secondary on S3 (moto), and one drill.

Starts moto in server mode (real HTTP on loopback), creates the secondary's bucket, then runs the
example's own Dagster jobs: ``dr_replicate_eu_onprem`` (every Iceberg table of the plane - paths
rewritten to ``s3://meridian-eu-dr/warehouse`` - its model artifacts, the registration in the
secondary's catalog) and ``dr_drill_eu_onprem`` (the primary's storage made unreadable to the failover,
a canary at the secondary, RTO and RPO measured against the plane's objectives). Stops moto at the end.

Standalone, after ``make demo``: ``python -m examples.clinical_ai.demo_dr --home .demo``.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

from examples.clinical_ai.demo_home import existing_demo_home

BUCKET = "meridian-eu-dr"
KEY_ID_ENV, SECRET_KEY_ENV = "MERIDIAN_EU_DR_S3_KEY_ID", "MERIDIAN_EU_DR_S3_SECRET_KEY"


def run_demo(home: Path) -> dict[str, Any]:
    """Replicate eu-onprem to its S3 secondary and drill it; returns the ``dr`` section of summary.json.

    Example:
        .. code-block:: python

            run_demo(Path(".demo"))["dr"][0]["objectives_met"]  # True
    """
    # Imported here, as in demo.py: the example's planes read HYBRID_DAGSTER_HOME when first imported.
    import dagster as dg

    from examples.clinical_ai.planes import EU_ONPREM, PLANES, POLICY
    from hybrid_dagster.assets.dr import dr_definitions, drill_key, replica_key
    from hybrid_dagster.plane.config import CatalogConfig, DrSecondaryConfig
    from hybrid_dagster.resources import DataPlane
    from hybrid_dagster.testing.moto import REGION, start_moto_server
    from hybrid_dagster.validation import validate_definitions

    work_dir = Path(home).resolve() / "dr"
    work_dir.mkdir(parents=True, exist_ok=True)
    # moto keeps the bucket in memory: a secondary catalog left by an earlier run points at nothing
    (work_dir / "eu-dr-catalog.db").unlink(missing_ok=True)
    moto = start_moto_server(enforce_iam=False, log_file=work_dir / "moto.log")
    try:
        os.environ[KEY_ID_ENV] = moto.admin.access_key_id
        os.environ[SECRET_KEY_ENV] = moto.admin.secret_access_key
        moto.client("s3").create_bucket(Bucket=BUCKET)
        secondary = DrSecondaryConfig(
            name="eu-dr-s3",
            jurisdiction="EU",
            region="eu-central-1",
            location="cloud",
            warehouse=f"s3://{BUCKET}/warehouse",
            catalog=CatalogConfig(
                uri=f"sqlite:///{work_dir / 'eu-dr-catalog.db'}",
                properties={
                    "s3.endpoint": moto.endpoint,
                    "s3.region": REGION,
                    "s3.access-key-id": f"{{env:{KEY_ID_ENV}}}",
                    "s3.secret-access-key": f"{{env:{SECRET_KEY_ENV}}}",
                },
            ),
            work_log_dir=str(work_dir / "logs"),
            rto_objective_s=900,
            rpo_objective_s=300,
        )
        eu = DataPlane.from_config({**EU_ONPREM.to_config(), "dr_secondary": secondary.model_dump()})
        defs = dr_definitions([eu], POLICY, all_planes={p.name: p for p in PLANES})
        report = validate_definitions(defs)
        if not report.ok:
            raise RuntimeError("\n".join(report.lines()))
        instance = dg.DagsterInstance.get()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        replicated = defs.resolve_job_def("dr_replicate_eu_onprem").execute_in_process(
            instance=instance, run_config=quiet
        )
        drilled = defs.resolve_job_def("dr_drill_eu_onprem").execute_in_process(
            instance=instance, run_config=quiet, raise_on_error=False
        )
        if not drilled.success:
            raise RuntimeError("the DR drill run failed; see its run in the Dagster UI (make ui)")
        replica = _metadata(replicated, replica_key(eu))
        drill = _metadata(drilled, drill_key(eu))
        checks = {e.check_name: e.passed for e in drilled.get_asset_check_evaluations()}
        entry = {
            "plane": eu.name,
            "secondary": secondary.name,
            "tables_replicated": int(replica["dr/tables_replicated"]),
            "rto_s": float(drill["dr/rto_s"]),
            "rpo_s": float(drill["dr/rpo_s"]),
            "rpo_changes": int(drill["dr/rpo_changes"]),
            "objectives_met": bool(drill["dr/objectives_met"]) and all(checks.values()),
        }
    finally:
        moto.stop()
    return {"dr": [entry]}


def _metadata(result: Any, key: Any) -> dict[str, Any]:
    events = result.asset_materializations_for_node(key.to_python_identifier())
    return {k: v.value for k, v in events[-1].metadata.items()}


def main(argv: list[str] | None = None) -> int:
    home = existing_demo_home("python -m examples.clinical_ai.demo_dr", argv)
    if home is None:
        return 1
    print(json.dumps(run_demo(home)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
