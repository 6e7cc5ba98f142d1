"""gpu_cost_report: spend, waste and savings per pool, team and jurisdiction from the lease store."""

import time
from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.assets.gpu_cost import gpu_cost_report_asset, pool_costs
from hybrid_dagster.gpu.history import CapacityHistory
from hybrid_dagster.gpu.model import CapacityUnit
from hybrid_dagster.resources import GpuPool
from tests.planes import make_plane

HOUR = 3600.0


def _pools(tmp_path: Path) -> list[GpuPool]:
    store = f"sqlite:///{tmp_path / 'leases.db'}"
    eu = make_plane(tmp_path / "eu")
    us = make_plane(tmp_path / "us", name="us-cloud", jurisdiction="US", location="cloud")
    common = {"driver_version": "550.54", "cuda_version": "12.4", "lease_store": store}
    return [
        GpuPool(
            name="eu-onprem-a100",
            plane=eu,
            location="on_prem",
            accelerator="A100",
            capacity_gpus=2,
            price_per_gpu_hour=1.0,
            team="clinical-ml",
            **common,
        ),
        GpuPool(
            name="us-cloud-a10g",
            plane=us,
            location="cloud",
            accelerator="A10G",
            capacity_gpus=8,
            price_per_gpu_hour=2.0,
            team="us-ml",
            backend="ec2",
            **common,
        ),
    ]


def test_costs_per_pool_team_and_jurisdiction(tmp_path: Path) -> None:
    eu, us = _pools(tmp_path)
    now = time.time()
    store = eu.store()
    lease = store.acquire(eu.name, gpus=1, capacity=2, run_id="r1", now=now - 3 * HOUR)
    store.release(lease.lease_id, "run succeeded", now=now - 1 * HOUR)  # 2 GPU-hours used
    history = CapacityHistory(store)
    instance = CapacityUnit(
        "ec2", us.name, "i-1", "gpu-a", gpus=4, launched_at=now - 5 * HOUR, state="running"
    )
    history.observe([instance], now=now - 1 * HOUR)  # 4 GPUs up for 4 hours, never leased
    history.record_teardown(instance, at=now - 1 * HOUR, reason="idle", cost_saved_usd=99.0)

    costs = {c.pool: c for c in pool_costs([eu.facts(), us.facts()], history, since=now - 10 * HOUR, now=now)}
    assert costs[eu.name].spend_usd == pytest.approx(20.0, abs=0.05)  # on-prem: 2 GPUs x 10 h x $1
    assert costs[eu.name].used_gpu_h == pytest.approx(2.0, abs=0.01)
    assert costs[eu.name].waste_usd == pytest.approx(18.0, abs=0.05)
    assert costs[us.name].spend_usd == pytest.approx(32.0, abs=0.05)  # cloud: 16 GPU-h observed x $2
    assert costs[us.name].waste_usd == pytest.approx(32.0, abs=0.05)
    assert costs[us.name].saved_usd == 99.0

    result = dg.materialize([gpu_cost_report_asset([eu, us], plane="eu-onprem", window_hours=10)])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    md = event.materialization.metadata
    rows = {r.data["pool"]: r.data for r in md["by_pool"].value.records}
    assert rows["us-cloud-a10g"]["team"] == "us-ml" and rows["us-cloud-a10g"]["jurisdiction"] == "US"
    assert "| clinical-ml |" in md["by_team"].value and "| US |" in md["by_jurisdiction"].value
    assert md["chart"].value.startswith("![GPU spend per pool: used vs idle](data:image/svg+xml;base64,")
    assert md["chart_vega_lite"].value["mark"] == "bar"
    assert md["saved_usd"].value == 99.0
