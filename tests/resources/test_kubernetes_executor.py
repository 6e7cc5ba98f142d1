"""The Kubernetes executor: no cluster can run here, so the pod dagster-k8s would launch is validated
against the Kubernetes OpenAPI schema (kubernetes-validate) instead."""

from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest

from hybrid_dagster.resources import DataPlane, ExecutorConfig
from tests.planes import make_plane


def k8s_plane(warehouse: Path) -> DataPlane:
    return make_plane(
        warehouse,
        name="eu-cloud",
        region="eu-central-1",
        location="cloud",
        executor=ExecutorConfig(
            kind="kubernetes",
            kube_context="eu-cloud-cluster",
            namespace="clinical-eu",
            image="registry.example.org/clinical-plane:1.4.2",
            node_selector={"topology.kubernetes.io/region": "eu-central-1", "hybrid/pool": "cpu"},
            labels={"team": "clinical-data"},
            service_account_name="plane-worker",
            resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        ),
    )


def as_manifest(pod: kubernetes.client.V1Pod) -> dict[str, Any]:
    manifest: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    return {"apiVersion": "v1", "kind": "Pod", **manifest}


def test_pod_spec_validates_against_kubernetes_openapi_schema(warehouse: Path) -> None:
    pod = k8s_plane(warehouse).build_pod("ingest-patients-1", ["python", "-m", "clinical.ingest"])
    manifest = as_manifest(pod)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)

    assert manifest["metadata"]["namespace"] == "clinical-eu"
    labels = manifest["metadata"]["labels"]
    assert labels["hybrid-dagster/plane"] == "eu-cloud"
    assert labels["hybrid-dagster/jurisdiction"] == "EU"
    assert labels["team"] == "clinical-data"
    assert labels["app.kubernetes.io/name"] == "dagster"  # dagster-k8s common labels kept
    spec = manifest["spec"]
    assert spec["nodeSelector"] == {"topology.kubernetes.io/region": "eu-central-1", "hybrid/pool": "cpu"}
    assert spec["serviceAccountName"] == "plane-worker"
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["image"] == "registry.example.org/clinical-plane:1.4.2"
    assert container["command"] == ["python", "-m", "clinical.ingest"]
    assert container["resources"]["limits"] == {"memory": "2Gi"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert '"name":"eu-cloud"' in env["HYBRID_DAGSTER_PLANE"].replace(" ", "")


def test_invalid_pod_is_rejected_by_the_schema(warehouse: Path) -> None:
    manifest = as_manifest(k8s_plane(warehouse).build_pod("p", ["true"]))
    manifest["spec"]["containers"][0]["resources"] = {"requests": {"cpu": ["not", "a", "quantity"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_module_work_uses_the_image_python(warehouse: Path) -> None:
    plane = k8s_plane(warehouse)
    assert plane.launcher.argv(command=None, module="clinical.ingest", args=["--full"]) == [
        "python",
        "-m",
        "clinical.ingest",
        "--full",
    ]


def test_subprocess_plane_cannot_build_pods(warehouse: Path) -> None:
    plane = DataPlane(
        name="eu-onprem", jurisdiction="EU", region="r", location="on_prem", warehouse=f"file://{warehouse}"
    )
    with pytest.raises(ValueError, match="uses the subprocess executor"):
        plane.build_pod("p", ["true"])


def test_regulated_work_in_a_pod_keeps_its_output_in_the_plane(warehouse: Path) -> None:
    plane = k8s_plane(warehouse)
    argv = plane.kept_in_plane(["python", "-m", "clinical.ingest"], plane.work_log_path("run-1", "patients"))
    manifest = as_manifest(plane.build_pod("ingest-patients-1", argv))
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    command = manifest["spec"]["containers"][0]["command"]
    assert command[:5] == [
        "python",
        "-m",
        "hybrid_dagster.plane.launch",
        "--log",
        "/var/log/hybrid-dagster/run-1/patients.log",
    ]
    assert command[5:] == ["--", "python", "-m", "clinical.ingest"]
