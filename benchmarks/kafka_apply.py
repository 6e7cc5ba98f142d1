"""Debezium events from a 4-partition Kafka topic into Iceberg, through librdkafka's mock cluster.

Prints ONE JSON object on stdout (progress on stderr)::

    .venv/bin/python -m benchmarks.kafka_apply                    # 100,000 events
    .venv/bin/python -m benchmarks.kafka_apply --events 20000     # a smaller run

The mock cluster keeps at most 5 MB per partition (librdkafka's mock log limit) and drops older messages
beyond it, so a run holds at most about 100,000 events in 4 partitions; ``correct`` catches a larger run
losing events there. A real broker (``--bootstrap``) has no such limit.

The events (creates, updates and deletes of 50,000 keys, keyed by id as Debezium keys them) are produced
before the clock starts; ``events_per_s`` is events / seconds for :class:`CdcPipeline` with
:class:`DebeziumKafkaChangeSource` to consume them all in its consumer group, apply them and commit each
batch's per-partition offsets with the Iceberg snapshot and then to Kafka (goal >= 100,000). ``correct``:
the table equals the last event per key.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/NAME.py`: import this checkout's packages, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.debezium.kafka import DebeziumKafkaChangeSource

KEYS = 50_000


def _produce(confluent_kafka: Any, bootstrap: str, topic: str, events: int) -> dict[int, dict[str, Any]]:
    rng = random.Random(1)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000}
    )
    state: dict[int, dict[str, Any]] = {}
    for n in range(events):
        key = rng.randrange(KEYS)
        op = "d" if key in state and rng.random() < 0.1 else ("u" if key in state else "c")
        row = {"id": key, "name": f"p{key}", "ward": key % 40, "version": n}
        if op == "d":
            state.pop(key)
        else:
            state[key] = row
        value = {
            "op": op,
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {"schema": "public", "table": "patients", "lsn": n},
        }
        while True:
            try:
                producer.produce(
                    topic, key=b'{"id":%d}' % key, value=json.dumps(value, separators=(",", ":")).encode()
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return state


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events (default 100000)")
    parser.add_argument("--bootstrap", default=None, help="a real broker instead of the mock cluster")
    parser.add_argument("--batch-events", type=int, default=100_000, help="events per batch (default 100000)")
    args = parser.parse_args(argv)
    import confluent_kafka

    cluster = confluent_kafka.Producer(
        {"bootstrap.servers": args.bootstrap}
        if args.bootstrap
        else {"test.mock.num.brokers": 3, "log_level": 3}
    )
    bootstrap = args.bootstrap or ",".join(
        f"{b.host}:{b.port}" for b in cluster.list_topics(timeout=10).brokers.values()
    )
    topic = f"db1.public.patients.{uuid.uuid4().hex[:6]}"
    print(f"kafka_apply: producing {args.events} events", file=sys.stderr)
    expected = _produce(confluent_kafka, bootstrap, topic, args.events)
    partitions = len(cluster.list_topics(topic, timeout=10).topics[topic].partitions)
    with tempfile.TemporaryDirectory(prefix="hd-kafka-") as tmp:
        catalog = SqlCatalog("bench", uri=f"sqlite:///{tmp}/catalog.db", warehouse=f"file://{tmp}/warehouse")
        source = DebeziumKafkaChangeSource(
            bootstrap,
            [topic],
            group_id="bench",
            tables=[SourceTable("public.patients", ("id",))],
            poll_timeout_s=0.5,
        )
        pipeline = CdcPipeline(
            source,
            IcebergApplier(catalog, source_id=source.source_id),
            [TableMapping("public.patients", "lake.patients", ("id",))],
            batch_events=args.batch_events,
        )
        started = time.perf_counter()
        report = pipeline.run()
        elapsed = time.perf_counter() - started
        source.close()
        rows = catalog.load_table("lake.patients").scan().to_arrow().to_pylist()
        correct = {r["id"]: r for r in rows} == expected
    cluster.flush(5)
    applied = report.events_applied
    return {
        "events": args.events,
        "partitions": partitions,
        "batch_events": args.batch_events,
        "batches": report.batches,
        "events_applied": applied,
        "seconds": round(elapsed, 2),
        "events_per_s": round(applied / elapsed),
        "correct": correct,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
