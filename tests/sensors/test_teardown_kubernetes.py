"""The teardown tick against a kube-apiserver serving recorded-format responses over real HTTP."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hybrid_dagster.gpu.teardown import run_tick
from hybrid_dagster.resources import GpuPool, KubernetesGpuSettings
from tests.gpu.kube_apiserver import KubeApiServer
from tests.planes import make_plane

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC).timestamp()
LIVE_RUN = "9a1f3c2e-7b4d-4c61-8e2a-5d3f1b0c9e77"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


def _pool(tmp_path: Path, api: KubeApiServer) -> GpuPool:
    return GpuPool(
        name="eu-cloud-h100",
        plane=make_plane(tmp_path / "wh", name="eu-cloud", location="cloud"),
        location="cloud",
        accelerator="H100",
        capacity_gpus=16,
        price_per_gpu_hour=3.0,
        driver_version="550.54",
        cuda_version="12.4",
        idle_minutes=30,
        max_lifetime_hours=72,
        backend="kubernetes",
        kubernetes=KubernetesGpuSettings(namespace="ml-eu", host=api.url),
        lease_store=f"sqlite:///{tmp_path / 'leases.db'}",
    )


def test_idle_pods_and_jobs_go_by_uid(tmp_path: Path, api: KubeApiServer) -> None:
    pool = _pool(tmp_path, api)
    pool.store().acquire(pool.name, gpus=1, capacity=16, run_id=LIVE_RUN, now=NOW)
    report = run_tick([pool.facts()], {pool.name: pool.capacity_backend()}, pool.store(), now=NOW)

    assert sorted((d.unit.kind, d.unit.name) for d in report.terminated) == [
        ("job", "sweep-7"),
        ("pod", "notebook-gpu-idle"),
    ]
    why = {d.unit.name: d.why for d in report.kept}
    assert why["train-readmission-7f9c2"].startswith(f"busy: run {LIVE_RUN} holds lease")
    assert why["gpu-node-lost-pod"].startswith("unreadable: pod phase Unknown")
    assert "finished-eval" not in why and "sweep-7-xk2pq" not in why  # not capacity / represented by its job
    # 2 GPUs x $3 for the 70 h left of the notebook's 72 h lifetime
    notebook = next(d for d in report.terminated if d.unit.name == "notebook-gpu-idle")
    assert notebook.cost_saved_usd == pytest.approx(2 * 3.0 * 70, abs=0.1)

    lists = [r for r in api.requests if r["method"] == "GET"]
    assert {tuple(r["query"]["labelSelector"]) for r in lists} == {
        ("hybrid-dagster/gpu-pool in (eu-cloud-h100)",)
    }
    deletes = {r["path"]: r["body"] for r in api.requests if r["method"] == "DELETE"}
    assert deletes["/api/v1/namespaces/ml-eu/pods/notebook-gpu-idle"]["preconditions"] == {
        "uid": "6f1c2f0e-8d2a-4b8e-9d55-0c1f4f0a1a01"
    }
    job = deletes["/apis/batch/v1/namespaces/ml-eu/jobs/sweep-7"]
    assert job["preconditions"] == {"uid": "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c05"}
    assert job["propagationPolicy"] == "Background"


def test_a_pod_recreated_under_the_same_name_is_kept(tmp_path: Path, api: KubeApiServer) -> None:
    pool = _pool(tmp_path, api)
    api.recreate("pods", "notebook-gpu-idle", "11111111-2222-4333-8444-555555555555")
    report = run_tick([pool.facts()], {pool.name: pool.capacity_backend()}, pool.store(), now=NOW)
    kept = {d.unit.name: d.why for d in report.kept}
    assert kept["notebook-gpu-idle"].startswith(
        "teardown refused: Kubernetes delete of pod 'notebook-gpu-idle'"
    )
    assert "HTTP 409" in kept["notebook-gpu-idle"]
    assert ("pods", "notebook-gpu-idle") not in {(k, n) for k, n, _ in api.deleted}


def test_an_unreachable_api_server_keeps_everything(tmp_path: Path, api: KubeApiServer) -> None:
    pool = _pool(tmp_path, api).model_copy(
        update={"kubernetes": KubernetesGpuSettings(namespace="ml-eu", host="http://127.0.0.1:9")}
    )
    report = run_tick([pool.facts()], {pool.name: pool.capacity_backend()}, pool.store(), now=NOW)
    assert report.terminated == [] and report.decisions == []
    assert "could not list kubernetes:http://127.0.0.1:9:ml-eu (list failed" in report.summary()
