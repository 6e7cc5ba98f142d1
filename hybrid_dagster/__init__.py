"""hybrid-dagster: Dagster plugins for hybrid-cloud AI data pipelines that keep data in its jurisdiction.

The residency model, data planes and checks load eagerly; everything that pulls in pyiceberg, pyarrow
or the CDC engine loads on first use (``tests/test_import_cost.py`` keeps it that way).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from hybrid_dagster.errors import (
    HybridDagsterError as HybridDagsterError,
    PlaneWorkError as PlaneWorkError,
    ResidencyError as ResidencyError,
    ResidencyViolation as ResidencyViolation,
    ValueFreeError as ValueFreeError,
)
from hybrid_dagster.pinning import pinned as pinned
from hybrid_dagster.plane.config import (
    CatalogConfig as CatalogConfig,
    ExecutorConfig as ExecutorConfig,
    SecretsConfig as SecretsConfig,
)
from hybrid_dagster.residency.guard import WriteIntent as WriteIntent, check_write as check_write
from hybrid_dagster.residency.model import (
    Classification as Classification,
    Jurisdiction as Jurisdiction,
    ResidencyPolicy as ResidencyPolicy,
    TransferRoute as TransferRoute,
)
from hybrid_dagster.resources.data_plane import DataPlane as DataPlane
from hybrid_dagster.validation import (
    ResidencyReport as ResidencyReport,
    enforce_residency as enforce_residency,
    validate_definitions as validate_definitions,
)

if TYPE_CHECKING:
    from hybrid_dagster.assets.cdc_tables import CdcTable as CdcTable, cdc_table_assets as cdc_table_assets
    from hybrid_dagster.cdc.sources.config import (
        DebeziumFileCdcSource as DebeziumFileCdcSource,
        DebeziumKafkaCdcSource as DebeziumKafkaCdcSource,
        PostgresCdcSource as PostgresCdcSource,
        SqlTriggerCdcSource as SqlTriggerCdcSource,
    )
    from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager as PlaneIcebergIOManager

_LAZY = {
    "CdcTable": "hybrid_dagster.assets.cdc_tables",
    "cdc_table_assets": "hybrid_dagster.assets.cdc_tables",
    "DebeziumFileCdcSource": "hybrid_dagster.cdc.sources.config",
    "DebeziumKafkaCdcSource": "hybrid_dagster.cdc.sources.config",
    "PostgresCdcSource": "hybrid_dagster.cdc.sources.config",
    "SqlTriggerCdcSource": "hybrid_dagster.cdc.sources.config",
    "PlaneIcebergIOManager": "hybrid_dagster.resources.iceberg_io_manager",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hybrid_dagster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


try:
    __version__ = version("hybrid-dagster")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "CatalogConfig",
    "CdcTable",
    "Classification",
    "DataPlane",
    "DebeziumFileCdcSource",
    "DebeziumKafkaCdcSource",
    "ExecutorConfig",
    "HybridDagsterError",
    "Jurisdiction",
    "PlaneIcebergIOManager",
    "PlaneWorkError",
    "PostgresCdcSource",
    "ResidencyError",
    "ResidencyPolicy",
    "ResidencyReport",
    "ResidencyViolation",
    "SecretsConfig",
    "SqlTriggerCdcSource",
    "TransferRoute",
    "ValueFreeError",
    "WriteIntent",
    "cdc_table_assets",
    "check_write",
    "enforce_residency",
    "pinned",
    "validate_definitions",
]
