"""The lease store on SQLite and PostgreSQL: no over-booking under concurrent processes, release on every
ending, expiry of a killed run's lease, disjoint devices."""

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from hybrid_dagster.gpu.errors import PoolFull
from hybrid_dagster.gpu.leases import LeaseStore
from tests.planes import make_plane

FORK = multiprocessing.get_context("fork")  # real processes that start without re-importing Dagster


def _ask(url: str, pool: str, capacity: int, run_id: str, barrier: Any, results: Any, hold: bool) -> None:
    """In a child process: wait for every worker, ask for one GPU, report; optionally hold it."""
    store = LeaseStore(url, ttl_s=1.0 if hold else 600.0)
    barrier.wait()
    try:
        lease = store.acquire(pool, gpus=1, capacity=capacity, run_id=run_id)
    except PoolFull:
        results.put((run_id, None))
        return
    results.put((run_id, lease.cuda_visible_devices))
    while hold:
        store.heartbeat(lease.lease_id)
        time.sleep(0.2)


def _workers(
    url: str, count: int, capacity: int, hold: bool = False, pool: str = "pool-a"
) -> tuple[list[Any], Any]:
    LeaseStore(url).dispose()  # tables exist before the race
    barrier, results = FORK.Barrier(count), FORK.Queue()
    workers = [
        FORK.Process(target=_ask, args=(url, pool, capacity, f"run-{i}", barrier, results, hold))
        for i in range(count)
    ]
    for worker in workers:
        worker.start()
    return workers, results


def test_concurrent_processes_cannot_overbook_a_pool(lease_url: str) -> None:
    for race in range(3):  # three races, each between eight processes released by one barrier
        workers, results = _workers(lease_url, count=8, capacity=3, pool=f"pool-{race}")
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        granted = sorted(devices for _, devices in outcomes if devices is not None)
        assert granted == ["0", "1", "2"], outcomes  # exactly the capacity, on disjoint devices
    assert len(LeaseStore(lease_url).live_leases()) == 9


def test_a_killed_runs_lease_expires(lease_url: str) -> None:
    (worker,), results = _workers(lease_url, count=1, capacity=1, hold=True)
    assert results.get(timeout=60) == ("run-0", "0")
    store = LeaseStore(lease_url, ttl_s=1.0)
    with pytest.raises(PoolFull, match="has 0 of 1 GPUs free"):
        store.acquire("pool-a", gpus=1, capacity=1, run_id="late")
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=10)
    time.sleep(1.5)
    lease = store.acquire("pool-a", gpus=1, capacity=1, run_id="late")
    assert lease.devices == (0,)
    history = store.leases_since(0.0)
    assert {(x.run_id, x.release_reason) for x in history if x.run_id == "run-0"} == {("run-0", "expired")}


def test_release_is_idempotent_and_frees_capacity(lease_url: str) -> None:
    store = LeaseStore(lease_url)
    first = store.acquire("p", gpus=3, capacity=4, run_id="r1")
    with pytest.raises(PoolFull):
        store.acquire("p", gpus=2, capacity=4, run_id="r2")
    assert store.release(first.lease_id, "succeeded")
    assert not store.release(first.lease_id, "succeeded")
    assert store.acquire("p", gpus=2, capacity=4, run_id="r2").devices == (0, 1)
    assert store.release_runs({"r2"}, "run ended") == 1
    assert store.free_gpus({"p": 4}) == {"p": 4}


def test_lineage_versions_are_pinned_by_the_first_run(lease_url: str) -> None:
    store = LeaseStore(lease_url)
    assert store.lineage_versions("readmission") is None
    store.record_lineage("readmission", ("550.54", "12.4"), "eu-onprem-a100")
    store.record_lineage("readmission", ("535.104", "12.2"), "eu-cloud-h100")
    assert store.lineage_versions("readmission") == ("550.54", "12.4")


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_a_run_that_ends_releases_its_lease(tmp_path: Path, ending: str) -> None:
    from hybrid_dagster.resources import GpuPool

    pool = GpuPool(
        name="eu-onprem-a100",
        plane=make_plane(tmp_path),
        location="on_prem",
        accelerator="A100",
        capacity_gpus=2,
        price_per_gpu_hour=1.0,
        driver_version="550.54",
        cuda_version="12.4",
        lease_store=f"sqlite:///{tmp_path / 'leases.db'}",
    )
    errors = {"succeeded": None, "failed": RuntimeError("boom"), "cancelled": KeyboardInterrupt()}
    try:
        with pool.leased("run-1", gpus=2, heartbeat_s=0.05) as lease:
            assert pool.store().free_gpus({pool.name: 2}) == {pool.name: 0}
            time.sleep(0.2)
            if errors[ending] is not None:
                raise errors[ending]  # type: ignore[misc]
    except (RuntimeError, KeyboardInterrupt):
        pass
    assert pool.store().free_gpus({pool.name: 2}) == {pool.name: 2}
    (record,) = [x for x in pool.store().leases_since(0.0) if x.lease_id == lease.lease_id]
    assert record.release_reason == f"run {ending}"
    assert record.heartbeat > record.since  # the heartbeat thread ran


def _churn(url: str, seed: int) -> None:
    """In a child process: take and give back one GPU of pool-k as fast as possible, forever."""
    rng = random.Random(seed)
    store = LeaseStore(url, ttl_s=1.0)
    while True:
        try:
            lease = store.acquire("pool-k", gpus=1, capacity=2, run_id=f"churn-{seed}")
        except PoolFull:
            time.sleep(0.01)
            continue
        time.sleep(rng.uniform(0, 0.02))
        store.release(lease.lease_id, "run succeeded")


def test_sigkill_at_random_points_never_overbooks(lease_url: str) -> None:
    """Workers are SIGKILLed at random moments (mid-transaction included); the pool is never over-booked,
    devices never overlap, and every lease a killed worker held expires."""
    LeaseStore(lease_url).dispose()
    rng = random.Random(11)
    store = LeaseStore(lease_url, ttl_s=1.0)
    workers = [FORK.Process(target=_churn, args=(lease_url, i)) for i in range(3)]
    for worker in workers:
        worker.start()
    kills = 0
    try:
        for round_ in range(12):
            time.sleep(rng.uniform(0.05, 0.4))
            victim = rng.randrange(len(workers))
            os.kill(workers[victim].pid, signal.SIGKILL)  # type: ignore[arg-type]
            workers[victim].join(timeout=10)
            kills += 1
            live = store.live_leases()
            assert sum(x.gpus for x in live) <= 2, live
            devices = [d for x in live for d in x.devices]
            assert len(devices) == len(set(devices)) and set(devices) <= {0, 1}, live
            workers[victim] = FORK.Process(target=_churn, args=(lease_url, 100 + round_))
            workers[victim].start()
    finally:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
            worker.join(timeout=10)
    assert kills == 12
    time.sleep(1.5)  # every killed worker's lease is past its TTL
    assert store.live_leases() == []
    assert store.acquire("pool-k", gpus=2, capacity=2, run_id="after").devices == (0, 1)
