"""Debezium events from Kafka topics (:class:`DebeziumKafkaChangeSource`), via ``confluent_kafka``.

Correctness rules (those of the Iceberg Kafka Connect sink):

* The Iceberg tables are the record of what was applied. Every table commit records, in its snapshot
  summary (``hybrid.cdc.kafka.offsets``, JSON ``{"topic/partition": next_offset}``), the offsets of every
  partition the batch read, merged with what the table held. Kafka's own group offsets are committed only
  after every table of the batch has committed (``ack``), and serve only as a floor.
* Events are ordered by their place in their partition: each gets ``Position(ordinal, 0)`` with
  ``ordinal = topic index << 52 | partition << 36 | offset``. One position cannot order several
  partitions, so the apply does not skip by a watermark; it keeps, per table, exactly the events at or
  after the table's recorded offset of their partition (:meth:`DebeziumKafkaChangeSource.commit_hooks`).
  That filter runs on the table as loaded for each commit attempt, so after a rebalance two consumers
  racing on one table never both apply an event: the second's commit fails, reloads and filters again.
* On assignment (start and every rebalance) each partition is sought to the smallest offset any table
  recorded for it, lowered to the group's committed offset if some table has no record for it (a table
  that never committed), or to the beginning when neither exists. Re-read events are filtered as above.
* Debezium keys a table's events by primary key, so the events of one key are in one partition, in order.
* Reading: large ``consume`` batches, each asking for no more messages than the partitions hold by their
  cached high watermarks; a read ends when every assigned partition is at its end, and polls at least
  once (ends seen by an earlier read may be stale). Values are parsed many at once where that gives
  exactly the per-event result (:func:`~hybrid_dagster.cdc.sources.debezium.columnar.add_many`), else
  one by one; a batch holding Kafka Connect schemas is parsed one by one, so a schema change ends it
  before its event (that partition, and every later message, is read again next time).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from hybrid_dagster.cdc.changes import COMMIT_POS_COL, ChangeBatch, Position
from hybrid_dagster.cdc.sink.watermark import SOURCE_PROPERTY
from hybrid_dagster.cdc.sources.base import ChangeSource, CommitHooks, SourceTable
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder, table_keys
from hybrid_dagster.cdc.sources.debezium.columnar import add_many
from hybrid_dagster.cdc.sources.debezium.envelope import UNAVAILABLE_VALUE, EventResult, parse_event

KAFKA_INSTALL_HINT = "pip install 'hybrid-dagster[kafka]'"
OFFSETS_PROPERTY = "hybrid.cdc.kafka.offsets"
_OFFSET_BITS, _PARTITION_BITS = 36, 16
_CONSUME_BATCH = 50_000
_FIRST_BATCH = 10_000  # while the partitions' ends are unknown

log = logging.getLogger(__name__)

Offsets = dict[str, int]
"""``{"topic/partition": next offset}``."""


def message_ordinal(topic_index: int, partition: int, offset: int) -> int:
    """The replay-stable position of a message: ``topic_index << 52 | partition << 36 | offset``.

    Example:
        >>> message_ordinal(1, 0, 0) > message_ordinal(0, 3, 2**35)
        True
    """
    if not 0 <= offset < 1 << _OFFSET_BITS or not 0 <= partition < 1 << _PARTITION_BITS:
        raise ValueError(f"Kafka partition {partition} / offset {offset} outside the supported range")
    return (topic_index << (_OFFSET_BITS + _PARTITION_BITS)) | (partition << _OFFSET_BITS) | offset


@dataclass
class _Messages:
    """The messages of one read, as parallel lists."""

    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.offsets)

    def extend(self, messages: list[Any]) -> tuple[list[str], list[int], list[int]]:
        """Append consumed (error-free) messages; their topics, partitions and offsets."""
        topics = [m.topic() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        self.topics += topics
        self.partitions += partitions
        self.offsets += offsets
        self.keys += [m.key() for m in messages]
        self.values += [m.value() for m in messages]
        return topics, partitions, offsets

    def ordinals(self, topic_index: dict[str, int]) -> list[int]:
        """:func:`message_ordinal` of every message."""
        if not self.offsets:
            return []
        offsets = np.asarray(self.offsets, dtype=np.int64)
        partitions = np.asarray(self.partitions, dtype=np.int64)
        if min(offsets.min(), partitions.min()) < 0 or (
            offsets.max() >= 1 << _OFFSET_BITS or partitions.max() >= 1 << _PARTITION_BITS
        ):  # message_ordinal names the bad one
            for t, p, o in zip(self.topics, self.partitions, self.offsets, strict=True):
                message_ordinal(topic_index[t], p, o)
        topics = np.asarray([topic_index[t] for t in self.topics], dtype=np.int64)
        ordinals = (topics << (_OFFSET_BITS + _PARTITION_BITS)) | (partitions << _OFFSET_BITS) | offsets
        return ordinals.tolist()  # type: ignore[no-any-return]

    def next_offsets(self, idx: Sequence[int] | None = None) -> Offsets:
        """``{"topic/partition": largest offset + 1}`` over the messages at ``idx`` (all if None)."""
        chosen = np.arange(self.count) if idx is None else np.asarray(idx, dtype=np.int64)
        if not len(chosen):
            return {}
        names = sorted(set(self.topics))
        number = {t: n for n, t in enumerate(names)}
        topics = np.asarray([number[t] for t in self.topics], dtype=np.int64)[chosen]
        partitions = np.asarray(self.partitions, dtype=np.int64)[chosen]
        offsets = np.asarray(self.offsets, dtype=np.int64)[chosen]
        tags = (topics << _PARTITION_BITS) | partitions
        unique, inverse = np.unique(tags, return_inverse=True)
        largest = np.full(len(unique), -1, dtype=np.int64)
        np.maximum.at(largest, inverse, offsets)
        return {
            f"{names[tag >> _PARTITION_BITS]}/{tag & ((1 << _PARTITION_BITS) - 1)}": offset + 1
            for tag, offset in zip(unique.tolist(), largest.tolist(), strict=True)
        }


def table_offsets(table: Table, source_id: str) -> Offsets:
    """The offsets recorded by ``source_id`` in the newest snapshot of ``table`` that has them.

    Example:
        >>> table_offsets(catalog.load_table("lake.customers"), source.source_id)  # doctest: +SKIP
        {'dbserver1.inventory.customers/0': 1042, 'dbserver1.inventory.customers/1': 977}
    """
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        if summary is None or summary[SOURCE_PROPERTY] != source_id:
            continue
        raw = summary[OFFSETS_PROPERTY]
        if raw:
            return {str(k): int(v) for k, v in json.loads(raw).items()}
    return {}


class DebeziumKafkaChangeSource(ChangeSource):
    """Debezium events from Kafka topics, in a consumer group (``pip install 'hybrid-dagster[kafka]'``).

    Offsets per partition live in the Iceberg snapshots (see the module docstring); ``ack`` then commits
    them to the group. ``read`` without ``ack`` returns the same events again.

    Example:
        >>> topics = ["dbserver1.inventory.customers"]
        >>> src = DebeziumKafkaChangeSource("broker:9092", topics, group_id="lake")  # doctest: +SKIP
        >>> applier = IcebergApplier(catalog, source_id=src.source_id)  # doctest: +SKIP
        >>> CdcPipeline(src, applier, mappings).run()  # doctest: +SKIP
    """

    kind = "debezium"
    offsets_in_tables = True

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        group_id: str,
        tables: Sequence[SourceTable | str] | None = None,
        consumer_config: dict[str, Any] | None = None,
        poll_timeout_s: float = 1.0,
        join_timeout_s: float = 30.0,
        idle_polls: int = 4,
        placeholder: str = UNAVAILABLE_VALUE,
        columnar: bool = True,
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
        self._topic_index = {t: i for i, t in enumerate(self.topics)}
        self.poll_timeout_s, self.join_timeout_s = poll_timeout_s, join_timeout_s
        self.placeholder, self.idle_polls = placeholder, idle_polls
        self.columnar = columnar
        """Parse many events at once where exactly the same (:func:`add_many`); False: one by one."""
        self.assigned_at: float | None = None
        """``time.monotonic()`` of the latest partition assignment (group join or rebalance)."""
        self._keys, self._tables = table_keys(tables)
        self._config = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            **(consumer_config or {}),
        }
        self._consumer: Any = None
        self._loader: Callable[[], dict[str, Any]] = dict
        self._read_from: dict[tuple[str, int], int] = {}  # where the next read starts, per partition
        self._reads: dict[int, Offsets] = {}  # read number -> next offsets after it
        self._read_number = 0
        self._at_end: set[tuple[str, int]] = set()  # partitions read to their end, none read since
        self.rebalances = 0
        self._closing = False

    @property
    def source_id(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{','.join(self.topics)}#{self.group_id}"

    def bind_applied(self, loader: Callable[[], dict[str, Any]]) -> None:
        self._loader = loader

    def setup(self) -> Position | None:
        if self._consumer is None:
            self._consumer = self._kafka.Consumer(self._config)
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return None

    # --- group membership ---

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if self._closing:  # a rebalance while the consumer leaves: nothing is read any more
            return
        self.rebalances += 1
        recorded = [
            table_offsets(table, self.source_id) if table is not None else {}
            for table in self._loader().values()
        ]
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=30)}
        for tp in partitions:
            key = f"{tp.topic}/{tp.partition}"
            records = [offsets[key] for offsets in recorded if key in offsets]
            group = committed.get((tp.topic, tp.partition), -1)
            if records and len(records) == len(recorded):  # every table recorded this partition
                start = min(records)
            elif group >= 0:  # the group commits only after every table of a batch committed
                start = min([*records, group])
            else:  # a table without a record may not have applied anything yet: from the beginning
                start = self._kafka.OFFSET_BEGINNING
            tp.offset = start
            self._read_from[(tp.topic, tp.partition)] = start
            self._at_end.discard((tp.topic, tp.partition))
        log.info("assigned %d partitions of %s", len(partitions), self.source_id)
        consumer.assign(partitions)
        self.assigned_at = time.monotonic()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._read_from.pop((tp.topic, tp.partition), None)
            self._at_end.discard((tp.topic, tp.partition))
        if not self._closing:
            consumer.unassign()

    # --- reading ---

    def read(self, max_events: int) -> ChangeBatch:
        self.setup()
        tp = self._kafka.TopicPartition
        assigned = [tp(t, p) for (t, p), o in self._read_from.items() if o >= 0]
        for current in self._consumer.position(assigned) if assigned else []:
            wanted = self._read_from[(current.topic, current.partition)]
            if current.offset != wanted:  # a read not acknowledged: read its events again
                self._consumer.seek(tp(current.topic, current.partition, wanted))
                self._at_end.discard((current.topic, current.partition))
        builder = BatchBuilder(self.source_id, self._keys, self._tables, ordinal_positions=True)
        # Python's cyclic garbage collector is paused while messages are consumed and parsed: it would
        # scan every message object (and the whole heap) many times over, and they hold no cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            messages = self._collect(max_events)
            next_offsets = self._parse(messages, builder)
        finally:
            if collecting:
                gc.enable()
        if not messages.count:
            return builder.build(None)
        self._read_number += 1
        self._reads[self._read_number] = next_offsets
        return builder.build(ack_position=Position(self._read_number, messages.count))

    def _collect(self, max_events: int) -> _Messages:
        """Consume up to ``max_events`` messages, in large batches.

        A batch asks for no more messages than the partitions hold by their cached high watermarks, so it
        returns as soon as they are there instead of waiting out the poll timeout. A read that has
        messages ends when every assigned partition is at its end (EOF events, or positions at the cached
        high watermarks); a read without any ends after one poll timeout with nothing new.
        """
        out = _Messages()
        position = {key: offset for key, offset in self._read_from.items() if offset >= 0}
        idle_polls, started = 0, time.monotonic()
        eof = self._kafka.KafkaError._PARTITION_EOF
        polled_once = False  # ends seen by earlier reads may be stale: poll at least once
        while out.count < max_events:
            if polled_once and self._read_from and self._at_end >= set(self._read_from):
                break  # every assigned partition read to its end
            lag = self._lag(position)
            if lag == 0 and out.count:
                break
            want = max_events - out.count
            want = min(want, _FIRST_BATCH if lag is None else max(lag, 1), _CONSUME_BATCH)
            polled = self._consumer.consume(want, self.poll_timeout_s)
            polled_once = True
            if not polled:
                if lag == 0:
                    break  # nothing new within the poll timeout: at the end
                if self._consumer.assignment():
                    idle_polls += 1
                if idle_polls >= self.idle_polls or time.monotonic() - started > self.join_timeout_s:
                    break
                continue
            idle_polls = 0
            data = [msg for msg in polled if msg.error() is None]
            ends = {}
            for msg in polled if len(data) < len(polled) else ():
                error = msg.error()
                if error is None:
                    continue
                if error.code() != eof:
                    raise RuntimeError(f"Kafka error on {self.source_id}: {error}")
                ends[(msg.topic(), msg.partition())] = msg.offset()
            topics, partitions, offsets = out.extend(data)
            # a partition's messages arrive in offset order: its last one is its largest
            for tp, offset in dict(zip(zip(topics, partitions, strict=True), offsets, strict=True)).items():
                position[tp] = max(position.get(tp, -1), offset + 1)
            self._at_end.difference_update(zip(topics, partitions, strict=True))
            for tp, offset in ends.items():
                if position.get(tp, -1) <= offset:
                    position[tp] = offset
                    self._at_end.add(tp)
        return out

    def _lag(self, position: dict[tuple[str, int], int], *, cached: bool = True) -> int | None:
        """Messages between the positions and the high watermarks of the assigned partitions (None: a
        position or watermark is unknown)."""
        if not self._read_from or set(position) != set(self._read_from):
            return None
        lag = 0
        for (topic, partition), offset in position.items():
            tp = self._kafka.TopicPartition(topic, partition)
            try:
                if cached:
                    _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                else:
                    _, high = self._consumer.get_watermark_offsets(tp, timeout=self.poll_timeout_s)
            except self._kafka.KafkaException:
                return None
            if high is None or high < 0:
                return None
            lag += max(high - offset, 0)
        return lag

    def _parse(self, messages: _Messages, builder: BatchBuilder) -> Offsets:
        """Parse the messages into ``builder``; the next offset per partition after this batch.

        Each topic's messages are parsed many at once (:func:`parse_many`); the events it hands back, and
        every event of a table any of them belongs to, go through :func:`parse_event` in message order. A
        batch holding events with a Kafka Connect schema goes wholly through :func:`parse_event`, since a
        schema change ends it there (that partition, and every later message, is read again next time).
        """
        ordinals = messages.ordinals(self._topic_index)
        by_topic: dict[str, list[int]] = {}
        if len(set(messages.topics)) == 1:
            by_topic[messages.topics[0]] = list(range(messages.count))
        else:
            for i, topic in enumerate(messages.topics):
                by_topic.setdefault(topic, []).append(i)
        if self.columnar and add_many(
            builder,
            messages.values,
            messages.keys,
            ordinals,
            list(by_topic.values()),
            lambda i: f"{messages.topics[i]}[{messages.partitions[i]}]@{messages.offsets[i]}",
            self.placeholder,
        ):
            return messages.next_offsets()
        return self._parse_each(messages, ordinals, range(messages.count), builder)

    def _parse_one(self, messages: _Messages, i: int) -> EventResult:
        return parse_event(messages.values[i], messages.keys[i], placeholder=self.placeholder)

    def _add(
        self, messages: _Messages, ordinals: list[int], i: int, result: EventResult, builder: BatchBuilder
    ) -> bool:
        value = messages.values[i]
        raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""
        where = f"{messages.topics[i]}[{messages.partitions[i]}]@{messages.offsets[i]}"
        return builder.add(result, raw, where, ordinals[i])

    def _parse_each(
        self, messages: _Messages, ordinals: list[int], idx: range, builder: BatchBuilder
    ) -> Offsets:
        """Every message through :func:`parse_event`; a schema change ends the batch before its event."""
        tp = self._kafka.TopicPartition
        cut: Offsets = {}
        for i in idx:
            topic, partition, offset = messages.topics[i], messages.partitions[i], messages.offsets[i]
            key = f"{topic}/{partition}"
            ended = bool(cut) or not self._add(messages, ordinals, i, self._parse_one(messages, i), builder)
            if ended and key not in cut:  # this partition resumes at this message
                cut[key] = offset
                self._consumer.seek(tp(topic, partition, offset))
        done = [
            i
            for i in idx
            if f"{messages.topics[i]}/{messages.partitions[i]}" not in cut
            or messages.offsets[i] < cut[f"{messages.topics[i]}/{messages.partitions[i]}"]
        ]
        offsets = messages.next_offsets(done)
        for key, offset in cut.items():
            offsets.setdefault(key, offset)
        return offsets

    def commit_hooks(self, ack_position: Position) -> CommitHooks:
        read = self._reads.get(ack_position.commit, {})
        batch = dict(read)

        def pending(table: Table, rows: pa.Table) -> pa.Table:
            held = table_offsets(table, self.source_id)
            if not held or rows.num_rows == 0:
                return rows
            ordinals = rows.column(COMMIT_POS_COL).to_numpy(zero_copy_only=False)
            partitions = ordinals >> _OFFSET_BITS
            offsets = ordinals & ((1 << _OFFSET_BITS) - 1)
            floor = np.zeros(len(ordinals), dtype=np.int64)
            for key, next_offset in held.items():
                topic, _, partition = key.rpartition("/")
                if topic not in self._topic_index:
                    continue
                tag = (self._topic_index[topic] << _PARTITION_BITS) | int(partition)
                floor[partitions == tag] = next_offset
            return rows.filter(pa.array(offsets >= floor))

        def properties(table: Table) -> dict[str, str]:
            merged = table_offsets(table, self.source_id)
            for key, offset in batch.items():
                merged[key] = max(merged.get(key, 0), offset)
            return {OFFSETS_PROPERTY: json.dumps(merged, sort_keys=True)}

        return CommitHooks(pending_filter=pending, properties=properties)

    def ack(self, position: Position) -> None:
        done = {n: offsets for n, offsets in self._reads.items() if n <= position.commit}
        commit: Offsets = {}
        for offsets in done.values():
            for key, offset in offsets.items():
                commit[key] = max(commit.get(key, 0), offset)
        for n in done:
            del self._reads[n]
        if not commit:
            return
        tp = self._kafka.TopicPartition
        owned = []
        for key, offset in commit.items():
            topic, _, partition = key.rpartition("/")
            if (topic, int(partition)) in self._read_from:  # still assigned to this consumer
                self._read_from[(topic, int(partition))] = offset
                owned.append(tp(topic, int(partition), offset))
        if owned:
            try:
                self._consumer.commit(offsets=owned, asynchronous=False)
            except self._kafka.KafkaException as error:  # the tables hold the offsets: a floor only
                log.warning(
                    "%s: Kafka offset commit failed (%s); the tables hold them", self.source_id, error
                )

    def close(self) -> None:
        if self._consumer is not None:
            # librdkafka may run the rebalance callbacks inside close(); they must not ask the terminating
            # handle anything (committed offsets fail with _DESTROY there)
            self._closing = True
            try:
                self._consumer.close()
            finally:
                self._consumer = None
                self._closing = False
