"""A CDC pipeline run in its own process (killed by the snapshot tests): ``DSN CATALOG_DIR CHUNK_ROWS``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from tests.cdc.sink.test_apply import make_catalog

SLOT = "snap_slot"
MAPPING = TableMapping("public.items", "lake.items")


def build(dsn: str, catalog_dir: Path, chunk_rows: int) -> CdcPipeline:
    source = PostgresChangeSource(dsn, [SourceTable("public.items")], slot_name=SLOT)
    applier = IcebergApplier(make_catalog(catalog_dir), source_id=source.source_id)
    return CdcPipeline(source, applier, [MAPPING], snapshot_chunk_rows=chunk_rows, batch_events=5_000)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    pipeline = build(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
    pipeline.run(max_batches=0)
    pipeline.source.close()
