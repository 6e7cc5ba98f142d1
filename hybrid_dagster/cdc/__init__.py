"""Change data capture: sources, the normalized change batch, and the Iceberg apply."""

from hybrid_dagster.cdc.changes import (
    ChangeBatch as ChangeBatch,
    DeadLetter as DeadLetter,
    Position as Position,
    TableChanges as TableChanges,
)
from hybrid_dagster.cdc.pipeline import (
    CdcPipeline as CdcPipeline,
    DeadLetterStop as DeadLetterStop,
    PipelineReport as PipelineReport,
    TableMapping as TableMapping,
)
from hybrid_dagster.cdc.sink.apply import ApplyResult as ApplyResult, IcebergApplier as IcebergApplier
from hybrid_dagster.cdc.sink.changelog import ChangelogWriter as ChangelogWriter
from hybrid_dagster.cdc.sink.dead_letters import DeadLetterTable as DeadLetterTable
from hybrid_dagster.cdc.sink.schema_evolution import SchemaEvolutionError as SchemaEvolutionError
