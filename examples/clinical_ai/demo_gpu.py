"""Demo step: train the EU and US models on GPU pools of their own jurisdiction, then run one cost-teardown
tick against EC2 (moto's server, real HTTP) with an idle, a busy, a protected, a re-created and an
unreadable instance.

``run_demo(home)`` returns the ``summary.json`` section::

    {"training": {"models/eu_readmission_risk": {"pool": ..., "jurisdiction": "EU", "metrics": {...}}, ...},
     "teardown": {"terminated": [...], "kept": [{"id": ..., "name": ..., "why": ...}], "cost_saved_usd": x}}

When the Dagster instance already holds the example's input tables (``clinical/encounters``,
``clinical/lab_results`` from CDC, ``us/claims``), only the models are trained; run on its own, it first
writes synthetic stand-ins into the EU on-prem plane and generates the US claims. The teardown tick is
evaluated as of two hours after the fleet was launched (moto stamps launch times with the wall clock).

Standalone: ``python -m examples.clinical_ai.demo_gpu --home .demo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
from moto.server import ThreadedMotoServer

from examples.clinical_ai.definitions import us_claims
from examples.clinical_ai.teardown_scenario import launch_fleet
from examples.clinical_ai.training import (
    EU_MODEL_KEY,
    US_MODEL_KEY,
    GpuFleet,
    gpu_fleet,
    model_assets,
    synthetic_clinical_inputs,
)
from hybrid_dagster.gpu.teardown import run_tick
from hybrid_dagster.resources import DataPlane

MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
PLANES = [
    ("eu-onprem", "EU", "fra-dc2", "on_prem"),
    ("eu-cloud", "EU", "eu-central-1", "cloud"),
    ("us-onprem", "US", "bos-dc1", "on_prem"),
    ("us-cloud", "US", "us-east-1", "cloud"),
]
INPUTS = [
    dg.AssetKey(["clinical", "encounters"]),
    dg.AssetKey(["clinical", "lab_results"]),
    dg.AssetKey(["us", "claims"]),
]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def planes_at(home: Path) -> dict[str, DataPlane]:
    """The example's four planes with their warehouses under ``home`` (the layout of ``planes.py``)."""
    return {
        name: DataPlane(
            name=name,
            jurisdiction=jurisdiction,
            region=region,
            location=location,  # type: ignore[arg-type]
            warehouse=f"file://{home / 'planes' / name / 'warehouse'}",
            owners=["team:platform"],
        )
        for name, jurisdiction, region, location in PLANES
    }


@contextmanager
def moto_ec2() -> Iterator[str]:
    """moto's server on a free loopback port, with its test credentials in the environment."""
    saved = {k: os.environ.get(k) for k in MOTO_CREDENTIALS}
    os.environ.update(MOTO_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _instance(home: Path) -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        dagster_home = home / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        config = dagster_home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dg.DagsterInstance.get()


def train_models(home: Path, fleet: GpuFleet, planes: dict[str, DataPlane]) -> dict[str, Any]:
    """Materialize both models (and their inputs when the instance has none); per model: pool, metrics."""
    instance = _instance(home)
    have_inputs = all(instance.get_latest_materialization_event(key) is not None for key in INPUTS)
    assets: list[Any] = model_assets(fleet)
    if not have_inputs:
        assets = [synthetic_clinical_inputs(planes["eu-onprem"]), us_claims, *assets]
    resources = {name.replace("-", "_"): plane for name, plane in planes.items()}
    result = dg.materialize(assets, instance=instance, resources=resources, run_config=QUIET)
    training: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key not in (EU_MODEL_KEY, US_MODEL_KEY):
            continue
        md = event.materialization.metadata
        training[event.asset_key.to_user_string()] = {
            "pool": md["hybrid/gpu_pool"].value,
            "jurisdiction": md["hybrid/jurisdiction"].value,
            "placement": md["hybrid/placement"].value,
            "metrics": {
                k.removeprefix("metric/"): round(float(v.value), 4)
                for k, v in md.items()
                if k.startswith("metric/")
            },  # type: ignore[arg-type]
        }
    return training


def teardown_tick(fleet: GpuFleet, ec2_endpoint: str) -> dict[str, Any]:
    """Launch the scenario fleet in the US burst pool and run one tick over every pool; each teardown goes
    into the audit log ($DAGSTER_HOME/hybrid_audit.db unless HYBRID_DAGSTER_AUDIT_URL says otherwise)."""
    pool = fleet.us_cloud
    store = pool.store()
    ec2 = boto3.client("ec2", region_name=pool.ec2.region, endpoint_url=ec2_endpoint)
    as_of = time.time() + 2 * 3600
    launch_fleet(ec2, store, pool=pool.name, capacity=pool.capacity_gpus, now=as_of)
    report = run_tick(
        [p.facts() for p in fleet.pools],
        {p.name: p.capacity_backend() for p in fleet.pools},
        store,
        now=as_of,
    )
    return {
        "terminated": [d.unit.incarnation for d in report.terminated],
        "kept": [{"id": d.unit.incarnation, "name": d.unit.name, "why": d.why} for d in report.kept],
        "cost_saved_usd": report.cost_saved_usd,
    }


def run_demo(home: Path) -> dict[str, Any]:
    """Train both models, then one teardown tick against moto's EC2; returns the summary section."""
    home = Path(home).resolve()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    planes = planes_at(home)
    with moto_ec2() as endpoint:
        fleet = gpu_fleet(planes, f"sqlite:///{home / 'gpu' / 'leases.db'}", ec2_endpoint=endpoint)
        training = train_models(home, fleet, planes)
        teardown = teardown_tick(fleet, endpoint)
    return {"training": training, "teardown": teardown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.clinical_ai.demo_gpu")
    parser.add_argument("--home", default=".demo", help="Folder for the planes, the lease store and Dagster.")
    args = parser.parse_args(argv)
    print(json.dumps(run_demo(Path(args.home)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
