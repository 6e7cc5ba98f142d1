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
    DrSecondaryConfig as DrSecondaryConfig,
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
    from hybrid_dagster.assets.audit_checkpoint import audit_checkpoint_asset as audit_checkpoint_asset
    from hybrid_dagster.assets.cdc_tables import CdcTable as CdcTable, cdc_table_assets as cdc_table_assets
    from hybrid_dagster.assets.compliance import compliance_report_asset as compliance_report_asset
    from hybrid_dagster.assets.documents import document_assets as document_assets
    from hybrid_dagster.assets.dr import dr_definitions as dr_definitions
    from hybrid_dagster.assets.training import training_asset as training_asset
    from hybrid_dagster.assets.transfer_monitor import transfer_monitor as transfer_monitor
    from hybrid_dagster.cdc.sources.config import (
        DebeziumFileCdcSource as DebeziumFileCdcSource,
        DebeziumKafkaCdcSource as DebeziumKafkaCdcSource,
        PostgresCdcSource as PostgresCdcSource,
        SqlTriggerCdcSource as SqlTriggerCdcSource,
    )
    from hybrid_dagster.resources.audit import AuditLogResource as AuditLogResource
    from hybrid_dagster.resources.gpu_pool import GpuPool as GpuPool
    from hybrid_dagster.resources.guarded_io_manager import (
        ResidencyGuardedIOManager as ResidencyGuardedIOManager,
    )
    from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager as PlaneIcebergIOManager
    from hybrid_dagster.sensors.openlineage import openlineage_sensor as openlineage_sensor
    from hybrid_dagster.sensors.teardown import gpu_teardown_sensor as gpu_teardown_sensor

_LAZY = {
    "CdcTable": "hybrid_dagster.assets.cdc_tables",
    "cdc_table_assets": "hybrid_dagster.assets.cdc_tables",
    "DebeziumFileCdcSource": "hybrid_dagster.cdc.sources.config",
    "DebeziumKafkaCdcSource": "hybrid_dagster.cdc.sources.config",
    "PostgresCdcSource": "hybrid_dagster.cdc.sources.config",
    "SqlTriggerCdcSource": "hybrid_dagster.cdc.sources.config",
    "PlaneIcebergIOManager": "hybrid_dagster.resources.iceberg_io_manager",
    "AuditLogResource": "hybrid_dagster.resources.audit",
    "GpuPool": "hybrid_dagster.resources.gpu_pool",
    "ResidencyGuardedIOManager": "hybrid_dagster.resources.guarded_io_manager",
    "audit_checkpoint_asset": "hybrid_dagster.assets.audit_checkpoint",
    "compliance_report_asset": "hybrid_dagster.assets.compliance",
    "document_assets": "hybrid_dagster.assets.documents",
    "dr_definitions": "hybrid_dagster.assets.dr",
    "gpu_teardown_sensor": "hybrid_dagster.sensors.teardown",
    "openlineage_sensor": "hybrid_dagster.sensors.openlineage",
    "training_asset": "hybrid_dagster.assets.training",
    "transfer_monitor": "hybrid_dagster.assets.transfer_monitor",
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
    "AuditLogResource",
    "CatalogConfig",
    "CdcTable",
    "Classification",
    "DataPlane",
    "DebeziumFileCdcSource",
    "DebeziumKafkaCdcSource",
    "DrSecondaryConfig",
    "ExecutorConfig",
    "GpuPool",
    "HybridDagsterError",
    "Jurisdiction",
    "PlaneIcebergIOManager",
    "PlaneWorkError",
    "PostgresCdcSource",
    "ResidencyError",
    "ResidencyGuardedIOManager",
    "ResidencyPolicy",
    "ResidencyReport",
    "ResidencyViolation",
    "SecretsConfig",
    "SqlTriggerCdcSource",
    "TransferRoute",
    "ValueFreeError",
    "WriteIntent",
    "audit_checkpoint_asset",
    "cdc_table_assets",
    "check_write",
    "compliance_report_asset",
    "document_assets",
    "dr_definitions",
    "enforce_residency",
    "gpu_teardown_sensor",
    "openlineage_sensor",
    "pinned",
    "training_asset",
    "transfer_monitor",
    "validate_definitions",
]
