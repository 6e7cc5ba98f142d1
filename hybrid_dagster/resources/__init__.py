"""Dagster resources: data planes and the pieces they are made of."""

from hybrid_dagster.resources.data_plane import (
    PLANE_CONFIG_ENV as PLANE_CONFIG_ENV,
    CatalogConfig as CatalogConfig,
    DataPlane as DataPlane,
    ExecutorConfig as ExecutorConfig,
    SecretsConfig as SecretsConfig,
)
