"""hybrid-dagster: Dagster plugins for hybrid-cloud AI data pipelines that keep data in its jurisdiction."""

from hybrid_dagster.assets.cdc_tables import CdcTable as CdcTable, cdc_table_assets as cdc_table_assets
from hybrid_dagster.cdc.sources.config import (
    DebeziumFileCdcSource as DebeziumFileCdcSource,
    DebeziumKafkaCdcSource as DebeziumKafkaCdcSource,
    PostgresCdcSource as PostgresCdcSource,
    SqlTriggerCdcSource as SqlTriggerCdcSource,
)
from hybrid_dagster.guard import WriteIntent as WriteIntent, check_write as check_write
from hybrid_dagster.pinning import pinned as pinned
from hybrid_dagster.residency import (
    Classification as Classification,
    Jurisdiction as Jurisdiction,
    ResidencyError as ResidencyError,
    ResidencyPolicy as ResidencyPolicy,
    ResidencyViolation as ResidencyViolation,
    TransferRoute as TransferRoute,
)
from hybrid_dagster.resources.data_plane import (
    CatalogConfig as CatalogConfig,
    DataPlane as DataPlane,
    ExecutorConfig as ExecutorConfig,
    SecretsConfig as SecretsConfig,
)
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager as PlaneIcebergIOManager
from hybrid_dagster.validation import (
    ResidencyReport as ResidencyReport,
    enforce_residency as enforce_residency,
    validate_definitions as validate_definitions,
)

__version__ = "0.1.0"
