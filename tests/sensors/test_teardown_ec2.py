"""The teardown tick against EC2 in moto's server over real HTTP (boto3 is not patched)."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.clinical_ai.teardown_scenario import launch, launch_fleet
from hybrid_dagster.gpu.history import CapacityHistory
from hybrid_dagster.gpu.teardown import run_tick
from hybrid_dagster.resources import Ec2GpuSettings, GpuPool
from tests.fixtures.moto import CREDENTIALS, MotoServer
from tests.planes import make_plane

HOURS = 3600.0


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])


@pytest.fixture
def pool(tmp_path: Path, moto_server: MotoServer, aws_env: None) -> Iterator[GpuPool]:
    yield GpuPool(
        name=f"us-cloud-a10g-{tmp_path.name[-12:]}".replace("_", "-"),
        plane=make_plane(tmp_path / "wh", name="us-cloud", jurisdiction="US", location="cloud"),
        location="cloud",
        accelerator="A10G",
        capacity_gpus=16,
        price_per_gpu_hour=1.25,
        driver_version="535.104",
        cuda_version="12.2",
        idle_minutes=30,
        max_lifetime_hours=72,
        backend="ec2",
        ec2=Ec2GpuSettings(region="us-east-1", endpoint_url=moto_server.endpoint),
        lease_store=f"sqlite:///{tmp_path / 'leases.db'}",
        team="us-ml",
    )


def _states(moto_server: MotoServer, ids: list[str]) -> dict[str, str]:
    reply = moto_server.client("ec2").describe_instances(InstanceIds=ids)
    return {i["InstanceId"]: i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]}


def test_idle_goes_busy_protected_recreated_and_unreadable_stay(
    pool: GpuPool, moto_server: MotoServer
) -> None:
    now = time.time() + 2 * HOURS  # the fleet has been up for two hours
    store = pool.store()
    fleet = launch_fleet(moto_server.client("ec2"), store, pool=pool.name, capacity=16, now=now)

    report = run_tick([pool.facts()], {pool.name: pool.capacity_backend()}, store, now=now)

    assert [d.unit.incarnation for d in report.terminated] == [fleet["gpu-idle"]]
    why = {d.unit.name: d.why for d in report.kept}
    assert why["gpu-busy"].startswith("busy: run run-busy holds lease")
    assert why["gpu-protected"] == "protected: tag hybrid-dagster/protected=true"
    assert why["gpu-a"].startswith("recently used: idle 5 min")
    assert why["gpu-unreadable"].startswith("unreadable: tag hybrid-dagster/gpus is not a GPU count")
    # 4 GPUs x $1.25 until the 72 h maximum lifetime (70 h left)
    assert report.terminated[0].cost_saved_usd == pytest.approx(4 * 1.25 * 70, abs=0.1)

    states = _states(moto_server, list(fleet.values()))
    assert states[fleet["gpu-idle"]] in {"shutting-down", "terminated"}
    for name in ("gpu-busy", "gpu-protected", "gpu-a", "gpu-unreadable"):
        assert states[fleet[name]] == "running", name
    (record,) = CapacityHistory(store).teardowns(since=0.0)
    assert (record.incarnation, record.pool) == (fleet["gpu-idle"], pool.name)


def test_dry_run_touches_nothing(pool: GpuPool, moto_server: MotoServer) -> None:
    ec2 = moto_server.client("ec2")
    idle = launch(ec2, pool.name, "gpu-idle")
    report = run_tick(
        [pool.facts()],
        {pool.name: pool.capacity_backend()},
        pool.store(),
        dry_run=True,
        now=time.time() + HOURS,
    )
    assert [d.unit.incarnation for d in report.terminated] == [idle]
    assert "would tear down" in report.summary() and "dry-run" in report.summary()
    assert _states(moto_server, [idle]) == {idle: "running"}
    assert CapacityHistory(pool.store()).teardowns(since=0.0) == []


def test_past_max_lifetime_goes_even_when_busy(pool: GpuPool, moto_server: MotoServer) -> None:
    busy = launch(moto_server.client("ec2"), pool.name, "gpu-long")
    now = time.time() + 80 * HOURS
    store = pool.store()
    lease = store.acquire(pool.name, gpus=4, capacity=16, run_id="run-long", incarnation=busy, now=now)
    report = run_tick([pool.facts()], {pool.name: pool.capacity_backend()}, store, now=now)
    (gone,) = report.terminated
    assert gone.warning and gone.unit.incarnation == busy
    assert f"although run run-long holds lease {lease.lease_id}" in gone.why


def test_an_unreachable_backend_keeps_everything(pool: GpuPool, tmp_path: Path) -> None:
    broken = pool.model_copy(
        update={"ec2": Ec2GpuSettings(region="us-east-1", endpoint_url="http://127.0.0.1:9")}
    )
    report = run_tick(
        [broken.facts()], {broken.name: broken.capacity_backend()}, broken.store(), now=time.time()
    )
    assert report.terminated == []
    assert "could not list ec2:us-east-1:http://127.0.0.1:9 (DescribeInstances failed" in report.summary()


def test_batch_limit_defers_the_rest(pool: GpuPool, moto_server: MotoServer) -> None:
    ec2 = moto_server.client("ec2")
    ids = [launch(ec2, pool.name, f"gpu-{i}") for i in range(3)]
    report = run_tick(
        [pool.facts()],
        {pool.name: pool.capacity_backend()},
        pool.store(),
        max_teardowns=2,
        now=time.time() + HOURS,
    )
    assert len(report.terminated) == 2
    (deferred,) = [d for d in report.kept if d.unit.incarnation in ids]
    assert deferred.why.startswith("deferred: batch limit 2 reached")
