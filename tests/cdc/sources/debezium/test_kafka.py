"""Debezium topics through Kafka into Iceberg, exactly once: many topics and partitions, restarts,
rebalances inside a consumer group, SIGKILL at random batches.

Kafka is librdkafka's mock cluster (three brokers on loopback, started inside this process, topics
auto-created with four partitions), and also a real broker when ``KAFKA_BOOTSTRAP_SERVERS`` is set
(otherwise those variants are skipped, saying why). A killed child process reaches the mock cluster over
its loopback bootstrap address.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.watermark import EVENTS_PROPERTY, SOURCE_PROPERTY
from hybrid_dagster.cdc.sources.debezium.kafka import (
    OFFSETS_PROPERTY,
    DebeziumKafkaChangeSource,
    table_offsets,
)
from tests.cdc.sink.test_apply import make_catalog
from tests.cdc.sources.debezium.kafka_child import TABLES, build

REPO_ROOT = Path(__file__).resolve().parents[4]
PARTITIONS = 4
CHILD = "tests.cdc.sources.debezium.kafka_child"


@pytest.fixture(scope="module", params=["mock", "broker"])
def bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """librdkafka's mock cluster, and a real broker when ``KAFKA_BOOTSTRAP_SERVERS`` is set."""
    if request.param == "broker":
        real = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not real:
            pytest.skip(
                "KAFKA_BOOTSTRAP_SERVERS is not set: no real Kafka broker to test against "
                "(the same tests ran on librdkafka's mock cluster)"
            )
        yield real
        return
    holder = ck.Producer({"test.mock.num.brokers": 3, "log_level": 3})  # keeps the mock cluster alive
    brokers = holder.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in brokers)
    holder.flush(5)


def make_topics(bootstrap: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    topics = [f"db1.public.{t.split('.')[1]}.{tag}" for t in TABLES]
    if bootstrap == os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # a real broker: create 4 partitions
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
            future.result(30)
    return topics


def envelope(table: str, op: str, key: int, version: int) -> bytes:
    row = {"id": key, "name": f"{table}-{key}", "version": version}
    body = {
        "op": op,
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": {"schema": "public", "table": table, "lsn": version, "txId": version},
    }
    return json.dumps(body).encode()


def produce(
    bootstrap: str, topics: list[str], events: int, seed: int, state: dict[str, dict[int, Any]]
) -> None:
    """Random creates, updates and deletes, keyed by id; ``state`` becomes the expected tables."""
    rng = random.Random(seed)
    producer = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in range(events):
        index = rng.randrange(len(TABLES))
        table, topic = TABLES[index].split(".")[1], topics[index]
        rows = state.setdefault(TABLES[index], {})
        key = rng.randrange(300)
        op = "d" if key in rows and rng.random() < 0.2 else ("u" if key in rows else "c")
        version = state.setdefault("_version", {}).get(0, 0) + 1
        state["_version"][0] = version
        if op == "d":
            rows.pop(key)
        else:
            rows[key] = {"id": key, "name": f"{table}-{key}", "version": version}
        while True:
            try:
                producer.produce(
                    topic, key=json.dumps({"id": key}).encode(), value=envelope(table, op, key, version)
                )
                break
            except BufferError:
                producer.poll(0.1)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def assert_exactly_once(catalog_dir: Path, state: dict[str, dict[int, Any]], events: dict[str, int]) -> None:
    catalog = make_catalog(catalog_dir)
    for source_table in TABLES:
        table = catalog.load_table(f"lake.{source_table.split('.')[1]}")
        rows = {r["id"]: r for r in table.scan().to_arrow().to_pylist()}
        assert rows == state.get(source_table, {}), source_table
        # Every event applied once: the commits' event counts add up to the events produced for it.
        applied = sum(int(s.summary[EVENTS_PROPERTY] or 0) for s in table.metadata.snapshots if s.summary)
        assert applied == events[source_table], source_table


def produced(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Messages per table in the topics (end offsets summed over partitions)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    counts = {}
    for source_table, topic in zip(TABLES, topics, strict=True):
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        counts[source_table] = sum(
            consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
    consumer.close()
    return counts


def test_topics_and_partitions_resume_exactly_after_a_restart(bootstrap: str, tmp_path: Path) -> None:
    topics, state = make_topics(bootstrap), {}
    produce(bootstrap, topics, 2_000, seed=1, state=state)
    group = f"lake-{uuid.uuid4().hex[:6]}"
    first = build(bootstrap, group, tmp_path, topics, 400)
    first.run(max_batches=2)
    first.source.close()
    second = build(bootstrap, group, tmp_path, topics, 400)
    second.run()
    produce(bootstrap, topics, 1_000, seed=2, state=state)
    second.run()
    second.source.close()
    state.pop("_version")
    assert_exactly_once(tmp_path, state, produced(bootstrap, topics))
    # The offsets of every partition are in the tables' snapshots; Kafka's group offsets follow them. A
    # table records the offsets of the batches it committed in (a batch need not hold events of both).
    catalog = make_catalog(tmp_path)
    offsets: dict[str, int] = {}
    for name in ("lake.wards", "lake.beds"):
        for key, offset in table_offsets(catalog.load_table(name), second.source.source_id).items():
            offsets[key] = max(offsets.get(key, 0), offset)
    assert len(offsets) == 2 * PARTITIONS
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    parts = [ck.TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    committed = {f"{tp.topic}/{tp.partition}": tp.offset for tp in consumer.committed(parts, timeout=10)}
    consumer.close()
    assert committed == offsets


def test_two_consumers_in_a_group_rebalance_and_apply_each_event_once(bootstrap: str, tmp_path: Path) -> None:
    topics, state = make_topics(bootstrap), {}
    produce(bootstrap, topics, 2_000, seed=3, state=state)
    group = f"lake-{uuid.uuid4().hex[:6]}"
    pipelines = [build(bootstrap, group, tmp_path, topics, 300) for _ in range(2)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            pipelines[index].run()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    threads[0].start()
    threads[1].start()  # joins while the first consumes: a rebalance splits the partitions
    for thread in threads:
        thread.join(120)
    for pipeline in pipelines:
        pipeline.source.close()
    assert not errors, errors
    assert sum(p.source.rebalances for p in pipelines) >= 2
    state.pop("_version")
    assert_exactly_once(tmp_path, state, produced(bootstrap, topics))


def test_sigkill_at_random_batches_applies_each_event_once(bootstrap: str, tmp_path: Path) -> None:
    topics, state = make_topics(bootstrap), {}
    produce(bootstrap, topics, 2_500, seed=4, state=state)
    group = f"lake-{uuid.uuid4().hex[:6]}"
    rng, kills = random.Random(5), 0
    for _ in range(2):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cdc.sources.debezium.kafka_child",
                bootstrap,
                group,
                str(tmp_path),
                *topics,
            ],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stderr is not None
        wanted, seen = rng.randint(1, 3), 0
        for line in child.stderr:
            seen += "applied batch" in line
            # Right after one table of the next batch committed, before the other table and the ack:
            # the restart re-reads the batch and must apply it to the other table only.
            if seen >= wanted and "received" in line:
                break
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
    assert kills == 2
    final = build(bootstrap, group, tmp_path, topics, 500)
    final.run()
    final.source.close()
    state.pop("_version")
    assert_exactly_once(tmp_path, state, produced(bootstrap, topics))
    table = make_catalog(tmp_path).load_table("lake.beds")
    assert any(s.summary and s.summary[OFFSETS_PROPERTY] for s in table.metadata.snapshots)
    assert all(
        s.summary[SOURCE_PROPERTY] == final.source.source_id for s in table.metadata.snapshots if s.summary
    )


def schema_event(key: int, columns: list[str]) -> bytes:
    fields = [{"field": "id", "type": "int32"}] + [
        {"field": c, "type": "string", "optional": True} for c in columns
    ]
    row = {"id": key, **{c: f"{c}-{key}" for c in columns}}
    return json.dumps(
        {
            "schema": {"type": "struct", "fields": [{"field": "after", "type": "struct", "fields": fields}]},
            "payload": {
                "op": "c",
                "after": row,
                "source": {"schema": "public", "table": "wards", "lsn": key},
            },
        }
    ).encode()


def test_a_schema_change_ends_the_batch_before_its_event(bootstrap: str, tmp_path: Path) -> None:
    """Events with a Kafka Connect schema are parsed one by one; a new schema starts the next batch."""
    topic = make_topics(bootstrap)[0]
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    for key in range(20):
        columns = ["name"] if key < 12 else ["name", "ward"]
        producer.produce(topic, key=b'{"id":0}', value=schema_event(key, columns))  # one partition
    assert producer.flush(30) == 0
    source = DebeziumKafkaChangeSource(
        bootstrap,
        [topic],
        group_id=f"lake-{uuid.uuid4().hex[:6]}",
        tables=["public.wards"],
        poll_timeout_s=0.5,
    )
    pipeline = CdcPipeline(
        source,
        IcebergApplier(make_catalog(tmp_path), source_id=source.source_id),
        [TableMapping("public.wards", "lake.wards", ("id",))],
    )
    report = pipeline.run()
    source.close()
    assert report.batches == 2 and report.events_applied == 20
    rows = make_catalog(tmp_path).load_table("lake.wards").scan().to_arrow().sort_by("id").to_pylist()
    assert [r["ward"] for r in rows] == [None] * 12 + [f"ward-{k}" for k in range(12, 20)]
