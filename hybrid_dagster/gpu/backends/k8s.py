"""Kubernetes backend: GPU pods and jobs found by their pool label, deleted with a uid precondition.

Correctness rules: a pod or job is identified by its uid (its incarnation); deletes carry
``preconditions.uid``, so the API server refuses (409) to delete a re-created object with the same name.
A pod in phase ``Unknown`` is unreadable, hence busy; finished pods (Succeeded, Failed) hold no GPUs and
are not capacity; pods owned by a Job are represented by their Job. A failed list makes the whole listing
unreadable.

Example:
    >>> backend = KubernetesBackend(namespace="ml-eu", kube_context="eu-cloud")
    >>> [(u.kind, u.name) for u in backend.list(["eu-cloud-h100"]).units]
    [('pod', 'train-readmission-7f9c'), ('job', 'notebook-gpu')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from hybrid_dagster.gpu.backends.base import (
    GPUS_LABEL,
    LEASE_LABEL,
    POOL_LABEL,
    PROTECTED_LABEL,
    RUN_LABEL,
    GpuBackend,
    Listing,
    parse_gpus,
)
from hybrid_dagster.gpu.errors import BackendUnavailable
from hybrid_dagster.gpu.model import CapacityUnit

GPU_RESOURCE = "nvidia.com/gpu"


class KubernetesBackend(GpuBackend):
    """GPU pods and jobs of pools in one namespace of one cluster (official kubernetes client).

    Example:
        >>> KubernetesBackend(namespace="ml-us", host="https://k8s.us.internal:6443", token_env="K8S_TOKEN")
    """

    kind = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        kube_context: str | None = None,
        kubeconfig_file: str | None = None,
        host: str | None = None,
        api_client: Any = None,
    ) -> None:
        self.namespace = namespace
        self.kube_context = kube_context
        self.host = host
        self._api_client = api_client
        self.kubeconfig_file = kubeconfig_file

    def key(self) -> str:
        return f"kubernetes:{self.host or self.kube_context or 'default'}:{self.namespace}"

    def api_client(self) -> Any:
        import kubernetes

        if self._api_client is None:
            if self.host is not None:
                configuration = kubernetes.client.Configuration(host=self.host)
                self._api_client = kubernetes.client.ApiClient(configuration)
            else:
                self._api_client = kubernetes.config.new_client_from_config(
                    config_file=self.kubeconfig_file, context=self.kube_context
                )
        return self._api_client

    def list(self, pools: Sequence[str]) -> Listing:
        import kubernetes

        selector = f"{POOL_LABEL} in ({','.join(sorted(pools))})"
        try:
            core = kubernetes.client.CoreV1Api(self.api_client())
            batch = kubernetes.client.BatchV1Api(self.api_client())
            pods = core.list_namespaced_pod(self.namespace, label_selector=selector).items
            jobs = batch.list_namespaced_job(self.namespace, label_selector=selector).items
        except Exception as error:  # any API, transport or config failure: the listing is unreadable
            return Listing(self.kind, error=f"list failed: {type(error).__name__}", pools=tuple(pools))
        units = [self._pod_unit(p) for p in pods if _is_capacity_pod(p)]
        units.extend(self._job_unit(j) for j in jobs if (j.status and j.status.active))
        return Listing(self.kind, units=units, pools=tuple(pools))

    def _pod_unit(self, pod: Any) -> CapacityUnit:
        labels: Mapping[str, str] = pod.metadata.labels or {}
        phase = (pod.status.phase if pod.status else None) or "Unknown"
        limits = _gpu_limits(pod.spec.containers if pod.spec else [])
        gpus = parse_gpus(labels.get(GPUS_LABEL), limits)
        started: datetime | None = (
            pod.status.start_time if pod.status else None
        ) or pod.metadata.creation_timestamp
        why = None
        if phase == "Unknown":
            why = "pod phase Unknown: the node stopped reporting"
        elif gpus is None:
            why = f"label {GPUS_LABEL} is not a GPU count"
        return CapacityUnit(
            backend=self.kind,
            pool=labels.get(POOL_LABEL, "?"),
            incarnation=str(pod.metadata.uid),
            name=str(pod.metadata.name),
            gpus=gpus or 0,
            launched_at=started.timestamp() if started else None,
            state=phase,
            readable=why is None,
            why_unreadable=why,
            protected=labels.get(PROTECTED_LABEL, "").lower() == "true",
            lease_id=labels.get(LEASE_LABEL),
            run_id=labels.get(RUN_LABEL),
            kind="pod",
            namespace=self.namespace,
        )

    def _job_unit(self, job: Any) -> CapacityUnit:
        labels: Mapping[str, str] = job.metadata.labels or {}
        template = job.spec.template.spec if job.spec and job.spec.template else None
        per_pod = _gpu_limits(template.containers if template else [])
        gpus = parse_gpus(labels.get(GPUS_LABEL), per_pod * int(job.status.active or 0))
        started: datetime | None = job.status.start_time or job.metadata.creation_timestamp
        return CapacityUnit(
            backend=self.kind,
            pool=labels.get(POOL_LABEL, "?"),
            incarnation=str(job.metadata.uid),
            name=str(job.metadata.name),
            gpus=gpus or 0,
            launched_at=started.timestamp() if started else None,
            state="Active",
            readable=gpus is not None,
            why_unreadable=None if gpus is not None else f"label {GPUS_LABEL} is not a GPU count",
            protected=labels.get(PROTECTED_LABEL, "").lower() == "true",
            lease_id=labels.get(LEASE_LABEL),
            run_id=labels.get(RUN_LABEL),
            kind="job",
            namespace=self.namespace,
        )

    def terminate(self, unit: CapacityUnit) -> None:
        import kubernetes

        body = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(uid=unit.incarnation),
            propagation_policy="Background",
        )
        try:
            if unit.kind == "job":
                kubernetes.client.BatchV1Api(self.api_client()).delete_namespaced_job(
                    unit.name, unit.namespace or self.namespace, body=body
                )
            else:
                kubernetes.client.CoreV1Api(self.api_client()).delete_namespaced_pod(
                    unit.name, unit.namespace or self.namespace, body=body
                )
        except kubernetes.client.ApiException as error:
            raise BackendUnavailable(
                f"Kubernetes delete of {unit.kind} {unit.name!r} (uid {unit.incarnation}) in namespace "
                f"{unit.namespace or self.namespace} refused with HTTP {error.status} "
                "(409: it was re-created under the same name, so it is kept)"
            ) from None


def _gpu_limits(containers: Sequence[Any]) -> int:
    total = 0
    for container in containers or []:
        limits = (container.resources.limits if container.resources else None) or {}
        try:
            total += int(limits.get(GPU_RESOURCE, 0))
        except ValueError:
            continue
    return total


def _is_capacity_pod(pod: Any) -> bool:
    phase = (pod.status.phase if pod.status else None) or "Unknown"
    if phase in {"Succeeded", "Failed"}:
        return False
    owners = pod.metadata.owner_references or []
    return not any(o.kind == "Job" for o in owners)
