"""Settings of a GPU pool's capacity backend, apart from the GpuPool resource itself.

Correctness rule: settings carry where capacity lives and how pods are placed - never credentials (EC2
uses the default AWS credential chain; Kubernetes a kubeconfig context, the in-cluster account or an API
server URL).

Example:
    >>> KubernetesGpuSettings(namespace="ml-eu", kube_context="eu-cloud",
    ...                       node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    ...                       tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class KubernetesGpuSettings(dg.Config):
    """Where a pool's GPU pods run and how they are placed on its nodes.

    Example:
        >>> KubernetesGpuSettings(namespace="ml-us", node_selector={"pool": "l40s"})
    """

    namespace: str = Field(default="default", description="Namespace of the pool's pods and jobs.")
    kube_context: str | None = Field(default=None, description="kubeconfig context of the pool's cluster.")
    kubeconfig_file: str | None = Field(default=None, description="Path to a kubeconfig file.")
    host: str | None = Field(
        default=None, description="API server URL, used instead of a kubeconfig (e.g. a local test server)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector that puts pods on the pool's GPU nodes."
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description="Tolerations for the GPU nodes' taints, e.g. [{'key': 'nvidia.com/gpu', 'operator': "
        "'Exists', 'effect': 'NoSchedule'}].",
    )
    image: str | None = Field(
        default=None, description="Training image; default: the plane's executor image."
    )


class Ec2GpuSettings(dg.Config):
    """Where a pool's GPU instances live.

    Example:
        >>> Ec2GpuSettings(region="eu-central-1", instance_type="p5.48xlarge")
    """

    region: str = Field(default="us-east-1", description="AWS region of the pool's instances.")
    endpoint_url: str | None = Field(
        default=None, description="EC2 endpoint override (an EC2-compatible API or moto in tests)."
    )
    instance_type: str | None = Field(default=None, description="Instance type the pool scales with.")
