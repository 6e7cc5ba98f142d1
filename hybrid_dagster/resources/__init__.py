"""Dagster resources: data planes, IO managers and the pieces they are made of."""

from hybrid_dagster.keys import PLANE_CONFIG_ENV as PLANE_CONFIG_ENV
from hybrid_dagster.plane.config import (
    CatalogConfig as CatalogConfig,
    ExecutorConfig as ExecutorConfig,
    SecretsConfig as SecretsConfig,
)
from hybrid_dagster.resources.data_plane import DataPlane as DataPlane
from hybrid_dagster.resources.gpu_pool import GPU_POOL_TAG as GPU_POOL_TAG, GpuPool as GpuPool
from hybrid_dagster.resources.gpu_pool_settings import (
    Ec2GpuSettings as Ec2GpuSettings,
    KubernetesGpuSettings as KubernetesGpuSettings,
)
