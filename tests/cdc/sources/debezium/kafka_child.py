"""A Kafka CDC pipeline in its own process (killed by the tests): ``BOOTSTRAP GROUP CATALOG_DIR TOPIC...``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hybrid_dagster.cdc.pipeline import CdcPipeline, PipelineReport, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.debezium.kafka import DebeziumKafkaChangeSource
from tests.cdc.sink.test_apply import make_catalog

TABLES = ("public.wards", "public.beds")


def build(bootstrap: str, group: str, catalog_dir: Path, topics: list[str], batch_events: int) -> CdcPipeline:
    source = DebeziumKafkaChangeSource(
        bootstrap,
        topics,
        group_id=group,
        tables=[SourceTable(t, ("id",)) for t in TABLES],
        poll_timeout_s=0.5,
        consumer_config={"session.timeout.ms": 3000, "heartbeat.interval.ms": 300},
    )
    applier = IcebergApplier(make_catalog(catalog_dir), source_id=source.source_id)
    mappings = [TableMapping(t, f"lake.{t.split('.')[1]}", ("id",)) for t in TABLES]
    return CdcPipeline(source, applier, mappings, batch_events=batch_events)


def _log_batch(report: PipelineReport) -> None:
    print(f"applied batch {report.batches}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("hybrid_dagster.cdc.pipeline").setLevel(logging.INFO)
    pipeline = build(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:], 200)
    pipeline.on_batch = _log_batch
    pipeline.run()
    pipeline.source.close()
