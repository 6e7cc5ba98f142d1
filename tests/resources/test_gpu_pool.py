"""GpuPool: jurisdiction from the plane, the leased plane for subprocess and Kubernetes work, and training
pod specs validated against the Kubernetes OpenAPI schema."""

from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest

from hybrid_dagster.gpu.backends.base import GPUS_LABEL, LEASE_LABEL, POOL_LABEL, RUN_LABEL
from hybrid_dagster.resources import ExecutorConfig, GpuPool, KubernetesGpuSettings
from tests.planes import make_plane

TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _pool(tmp_path: Path, kind: str) -> GpuPool:
    executor = (
        ExecutorConfig(
            kind="kubernetes",
            namespace="ml-eu",
            image="registry.example.org/clinical-plane:1.4.2",
            node_selector={"topology.kubernetes.io/region": "eu-central-1"},
            resources={"requests": {"cpu": "2", "memory": "8Gi"}},
        )
        if kind == "kubernetes"
        else ExecutorConfig()
    )
    return GpuPool(
        name="eu-cloud-h100",
        plane=make_plane(tmp_path / "wh", name="eu-cloud", location="cloud", executor=executor),
        location="cloud",
        accelerator="H100",
        capacity_gpus=8,
        price_per_gpu_hour=3.0,
        driver_version="550.54",
        cuda_version="12.4",
        backend="kubernetes",
        kubernetes=KubernetesGpuSettings(
            namespace="ml-eu",
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            tolerations=[TOLERATION],
        ),
        lease_store=f"sqlite:///{tmp_path / 'leases.db'}",
    )


def _manifest(pod: kubernetes.client.V1Pod) -> dict[str, Any]:
    body: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    return {"apiVersion": "v1", "kind": "Pod", **body}


def test_the_pool_jurisdiction_is_its_planes(tmp_path: Path) -> None:
    pool = _pool(tmp_path, "subprocess")
    assert pool.jurisdiction == "EU" and pool.facts().jurisdiction == "EU"
    assert pool.facts().plane == "eu-cloud"


def test_subprocess_work_sees_the_leased_devices(tmp_path: Path) -> None:
    pool = _pool(tmp_path, "subprocess")
    pool.store().acquire(pool.name, gpus=2, capacity=8, run_id="other")
    with pool.leased("run-1", gpus=3) as lease:
        plane = pool.leased_plane(lease)
        assert plane.name == "eu-cloud"
        assert plane.plane_env()["CUDA_VISIBLE_DEVICES"] == "2,3,4"


def test_training_pod_spec_validates_and_carries_what_the_sensor_reads(tmp_path: Path) -> None:
    pool = _pool(tmp_path, "kubernetes")
    with pool.leased("run-42", gpus=2) as lease:
        plane = pool.leased_plane(lease)
        pod = plane.build_pod("train-readmission-1", ["python", "-m", "examples.clinical_ai.work.train"])
    manifest = _manifest(pod)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)

    labels = manifest["metadata"]["labels"]
    assert labels[POOL_LABEL] == "eu-cloud-h100"
    assert labels[LEASE_LABEL] == lease.lease_id
    assert labels[RUN_LABEL] == "run-42"
    assert labels[GPUS_LABEL] == "2"
    assert labels["hybrid-dagster/jurisdiction"] == "EU"
    spec = manifest["spec"]
    assert spec["nodeSelector"] == {
        "topology.kubernetes.io/region": "eu-central-1",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert spec["tolerations"] == [TOLERATION]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "2"}
    assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}


def test_a_bad_toleration_fails_the_schema(tmp_path: Path) -> None:
    pool = _pool(tmp_path, "kubernetes")
    with pool.leased("run-43", gpus=1) as lease:
        manifest = _manifest(pool.leased_plane(lease).build_pod("p", ["true"]))
    manifest["spec"]["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "tolerationSeconds": "x"}
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
