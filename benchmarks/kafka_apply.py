"""Debezium events from a 4-partition Kafka topic into Iceberg, through librdkafka's mock cluster.

Prints ONE JSON object on stdout (progress on stderr)::

    .venv/bin/python -m benchmarks.kafka_apply                    # 100,000 events
    .venv/bin/python -m benchmarks.kafka_apply --events 20000     # a smaller run

The mock cluster keeps at most 5 MB per partition (librdkafka's mock log limit) and drops older messages
beyond it, so a run holds at most about 100,000 events in 4 partitions; ``correct`` catches a larger run
losing events there. A real broker (``--bootstrap``) has no such limit.

The events (creates, updates and deletes of 50,000 keys, keyed by id as Debezium keys them, schemaless
JSON as with ``value.converter.schemas.enable=false``) are produced before the clock starts. Then two
consumer groups read the same topic, side by side in this run, each into its own Iceberg table:

* ``columnar``: :class:`DebeziumKafkaChangeSource` as shipped (values parsed many at once by
  ``pyarrow.json`` and read with pyarrow compute, :mod:`hybrid_dagster.cdc.sources.debezium.columnar`);
* ``per_event`` (the baseline): the same source with ``columnar=False``, every event through
  :func:`parse_event` and :class:`BatchBuilder` one by one, as before the columnar parser. Everything
  else (consumer loop, apply, commits, offsets) is the same, so the ratio is the parser's.

Each run is :class:`CdcPipeline` consuming every event in its consumer group, applying them and committing
each batch's per-partition offsets with the Iceberg snapshot and then to Kafka. ``events_per_s`` is events
/ seconds from the group's partition assignment to the end of the run (the mock cluster, like a broker's
``group.initial.rebalance.delay.ms``, holds a new group's first join for 3 s; ``join_s`` reports it and
``events_per_s_with_join`` includes it). ``cpu_s`` is the CPU time of this process over the run (it
includes the mock brokers' threads, which live in this process); ``events_per_cpu_s`` = events / cpu_s.
``correct``: each table equals the last event per key. Goal: ``events_per_s`` >= 100,000.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _run(
    bootstrap: str, topic: str, group: str, tmp: str, batch_events: int, *, columnar: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    catalog = SqlCatalog(group, uri=f"sqlite:///{tmp}/{group}.db", warehouse=f"file://{tmp}/{group}")
    source = DebeziumKafkaChangeSource(
        bootstrap,
        [topic],
        group_id=group,
        tables=[SourceTable("public.patients", ("id",))],
        poll_timeout_s=0.2,
        columnar=columnar,
    )
    pipeline = CdcPipeline(
        source,
        IcebergApplier(catalog, source_id=source.source_id),
        [TableMapping("public.patients", "lake.patients", ("id",))],
        batch_events=batch_events,
    )
    cpu0, main0 = os.times(), time.thread_time()
    started = time.monotonic()
    report = pipeline.run()
    ended = time.monotonic()
    cpu1, main1 = os.times(), time.thread_time()
    source.close()
    rows = catalog.load_table("lake.patients").scan().to_arrow().to_pylist()
    assigned = source.assigned_at if source.assigned_at is not None else started
    applied = report.events_applied
    seconds = ended - assigned
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    result = {
        "batches": report.batches,
        "events_applied": applied,
        "join_s": round(assigned - started, 2),
        "seconds": round(seconds, 3),
        "events_per_s": round(applied / seconds),
        "events_per_s_with_join": round(applied / (ended - started)),
        "cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(applied / cpu) if cpu > 0 else None,
        "main_thread_cpu_s": round(main1 - main0, 2),
    }
    return result, rows


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events (default 100000)")
    parser.add_argument("--bootstrap", default=None, help="a real broker instead of the mock cluster")
    parser.add_argument("--batch-events", type=int, default=100_000, help="events per batch (default 100000)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-event baseline run")
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
    out: dict[str, Any] = {
        "events": args.events,
        "partitions": partitions,
        "batch_events": args.batch_events,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    runs = [("columnar", True)] + ([] if args.no_baseline else [("per_event", False)])
    with tempfile.TemporaryDirectory(prefix="hd-kafka-") as tmp:
        for name, columnar in runs:
            print(f"kafka_apply: {name}", file=sys.stderr)
            result, rows = _run(bootstrap, topic, f"bench-{name}", tmp, args.batch_events, columnar=columnar)
            result["correct"] = {r["id"]: r for r in rows} == expected
            out[name] = result
    cluster.flush(5)
    best = out["columnar"]
    out.update(
        events_per_s=best["events_per_s"],
        events_per_cpu_s=best["events_per_cpu_s"],
        correct=all(out[name]["correct"] for name, _ in runs),
        load_avg_1m_after=round(os.getloadavg()[0], 2),
    )
    if "per_event" in out:
        out["speedup_vs_per_event"] = round(best["events_per_s"] / out["per_event"]["events_per_s"], 1)
        out["cpu_speedup_vs_per_event"] = round(
            best["events_per_cpu_s"] / out["per_event"]["events_per_cpu_s"], 1
        )
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
