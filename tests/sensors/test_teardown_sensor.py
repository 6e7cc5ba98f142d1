"""The teardown sensor in Dagster: live and ended runs from the instance, typed cursor, SkipReason."""

import time
from pathlib import Path

import dagster as dg

from hybrid_dagster.audit import AuditLog
from hybrid_dagster.gpu.backends.local import LocalBackend
from hybrid_dagster.resources import GpuPool
from hybrid_dagster.sensors import TeardownCursor, gpu_teardown_sensor
from tests.planes import make_plane


def _pool(tmp_path: Path, **fields: object) -> GpuPool:
    settings: dict[str, object] = {
        "name": "eu-onprem-a100",
        "plane": make_plane(tmp_path / "wh"),
        "location": "on_prem",
        "accelerator": "A100",
        "capacity_gpus": 8,
        "price_per_gpu_hour": 1.1,
        "driver_version": "550.54",
        "cuda_version": "12.4",
        "idle_minutes": 0.01,
        "lease_store": f"sqlite:///{tmp_path / 'leases.db'}",
        **fields,
    }
    return GpuPool(**settings)  # type: ignore[arg-type]


def _run(instance: dg.DagsterInstance, *, cancelled: bool) -> str:
    """A run record: NOT_STARTED (a live status) or CANCELED."""

    @dg.op
    def noop() -> None: ...

    @dg.job
    def some_job() -> None:
        noop()

    run = instance.create_run_for_job(some_job)
    if cancelled:
        instance.report_run_canceled(run)
    return run.run_id


def test_sensor_releases_ended_runs_and_keeps_live_ones(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    backend = LocalBackend(pool.store())
    past = time.time() - 3600
    live_node = backend.register(pool.name, "dgx-01", gpus=8, launched_at=past)
    ended_node = backend.register(pool.name, "dgx-02", gpus=8, launched_at=past)
    with dg.instance_for_test() as instance:
        live = _run(instance, cancelled=False)
        ended = _run(instance, cancelled=True)
        store = pool.store()
        store.acquire(pool.name, gpus=4, capacity=8, run_id=live, incarnation=live_node.incarnation)
        store.acquire(pool.name, gpus=4, capacity=8, run_id=ended, incarnation=ended_node.incarnation)
        time.sleep(1.0)  # longer than idle_minutes (0.6 s)

        sensor = gpu_teardown_sensor([pool])
        context = dg.build_sensor_context(instance=instance, cursor="not json")
        result = sensor(context)

    assert isinstance(result, dg.SensorResult)
    assert result.skip_reason is not None
    reason = result.skip_reason.skip_message or ""
    assert "tore down nothing" in reason  # the ended run's lease was just released: idle clock restarts
    assert "kept 1 busy, 1 recently used" in reason
    cursor = TeardownCursor.parse(result.cursor)
    assert cursor.ticks == 1 and cursor.last_tick_at > 0
    assert [x.run_id for x in store.live_leases()] == [live]

    with dg.instance_for_test() as instance:
        time.sleep(1.0)
        sensor = gpu_teardown_sensor([pool], audit_url=audit_url)
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SensorResult) and again.skip_reason is not None
    assert "tore down dgx-02" in (again.skip_reason.skip_message or "")
    assert TeardownCursor.parse(again.cursor).recent[0]["incarnation"] == ended_node.incarnation
    # the teardown is in the tamper-evident audit log, with its plane and the cost it saved
    log = AuditLog(audit_url)
    (entry,) = list(log.records("gpu.teardown"))
    assert (entry.actor, entry.plane) == ("sensor:gpu_cost_teardown", "eu-onprem")
    assert entry.details["incarnation"] == ended_node.incarnation and entry.details["name"] == "dgx-02"
    assert entry.details["cost_saved_usd"] > 0
    assert log.verify().ok


def test_protected_pool_is_never_torn_down(tmp_path: Path) -> None:
    pool = _pool(tmp_path, protected=True)
    LocalBackend(pool.store()).register(pool.name, "dgx-09", gpus=8, launched_at=time.time() - 86400)
    with dg.instance_for_test() as instance:
        result = gpu_teardown_sensor([pool], dry_run=True)(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult) and result.skip_reason is not None
    assert "would tear down nothing" in (result.skip_reason.skip_message or "")
    assert "kept 1 protected" in (result.skip_reason.skip_message or "")
