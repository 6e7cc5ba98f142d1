"""Debezium events from Kafka topics (:class:`DebeziumKafkaChangeSource`), via ``confluent_kafka``.

Positions: see :mod:`hybrid_dagster.cdc.sources.debezium.batch` (``kafka_ordinal`` of partition and offset).
The consumer never auto-commits; offsets are committed by ``ack`` only, after the Iceberg commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybrid_dagster.cdc.changes import (
    ChangeBatch,
    Position,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder, kafka_ordinal, table_keys
from hybrid_dagster.cdc.sources.debezium.envelope import (
    UNAVAILABLE_VALUE,
    parse_event,
)

KAFKA_INSTALL_HINT = "pip install 'hybrid-dagster[kafka]'"


class DebeziumKafkaChangeSource(ChangeSource):
    """Debezium events from Kafka topics, via ``confluent_kafka`` (``pip install 'hybrid-dagster[kafka]'``).

    The consumer never auto-commits: ``read`` polls (rewinding to the first unacknowledged offset of each
    partition, so a read without ack returns the same events) and ``ack`` commits the offsets of the
    batches read up to that position. ``ack_position`` is ``Position(read_number, message_count)``, a
    token of this process; after a restart, reading resumes at the last committed offsets.

    Example:
        >>> topics = ["dbserver1.inventory.customers"]
        >>> src = DebeziumKafkaChangeSource("broker:9092", topics, group_id="lake")  # doctest: +SKIP
        >>> batch = src.read(10_000); ...; src.ack(batch.ack_position)  # doctest: +SKIP
    """

    kind = "debezium"

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        group_id: str,
        tables: Sequence[SourceTable | str] | None = None,
        consumer_config: dict[str, Any] | None = None,
        poll_timeout_s: float = 1.0,
        placeholder: str = UNAVAILABLE_VALUE,
    ):
        try:
            import confluent_kafka
        except ImportError as exc:
            raise ImportError(
                "DebeziumKafkaChangeSource needs the optional dependency confluent-kafka: "
                f"{KAFKA_INSTALL_HINT}"
            ) from exc
        self._kafka = confluent_kafka
        self.bootstrap_servers, self.topics, self.group_id = bootstrap_servers, list(topics), group_id
        self.poll_timeout_s, self.placeholder = poll_timeout_s, placeholder
        self._keys, self._tables = table_keys(tables)
        config = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(consumer_config or {}),
        }
        self._consumer = confluent_kafka.Consumer(config)
        self._consumer.subscribe(self.topics)
        self._unacked_from: dict[tuple[str, int], int] = {}
        self._reads: dict[int, dict[tuple[str, int], int]] = {}
        self._read_number = 0

    @property
    def source_id(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{','.join(self.topics)}#{self.group_id}"

    def setup(self) -> Position | None:
        return None

    def read(self, max_events: int) -> ChangeBatch:
        tp = self._kafka.TopicPartition
        for (unacked_topic, unacked_partition), unacked in self._unacked_from.items():
            self._consumer.seek(tp(unacked_topic, unacked_partition, unacked))
        self._reads.clear()
        builder = BatchBuilder(self.source_id, self._keys, self._tables)
        last_offsets: dict[tuple[str, int], int] = {}
        messages = 0
        while builder.count < max_events:
            msg = self._consumer.poll(self.poll_timeout_s)
            if msg is None:
                break
            if msg.error():
                raise RuntimeError(f"Kafka error: {msg.error()}")
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                raise RuntimeError("Kafka returned a consumed message without topic, partition or offset")
            where = f"{topic}[{partition}]@{offset}"
            value, key = msg.value(), msg.key()
            result = parse_event(value, key, placeholder=self.placeholder)
            raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""
            if not builder.add(result, raw, where, kafka_ordinal(partition, offset)):
                self._consumer.seek(tp(topic, partition, offset))
                break
            part = (topic, partition)
            self._unacked_from.setdefault(part, offset)
            last_offsets[part] = offset
            messages += 1
        if not messages:
            return builder.build(None)
        self._read_number += 1
        self._reads[self._read_number] = last_offsets
        return builder.build(ack_position=Position(self._read_number, messages))

    def ack(self, position: Position) -> None:
        done = {n: offsets for n, offsets in self._reads.items() if n <= position.commit}
        commit: dict[tuple[str, int], int] = {}
        for offsets in done.values():
            for part, offset in offsets.items():
                commit[part] = max(commit.get(part, -1), offset)
        if not commit:
            return
        tp = self._kafka.TopicPartition
        self._consumer.commit(offsets=[tp(t, p, o + 1) for (t, p), o in commit.items()], asynchronous=False)
        for n in done:
            del self._reads[n]
        for part, offset in commit.items():
            self._unacked_from[part] = offset + 1

    def close(self) -> None:
        self._consumer.close()
