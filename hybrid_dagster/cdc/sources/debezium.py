"""Debezium sources: JSON-lines files (:class:`DebeziumFileSource`) and Kafka (:class:`DebeziumKafkaSource`).

Both share the envelope parser (:mod:`hybrid_dagster.cdc.debezium_envelope`) and :class:`BatchBuilder`:

* One :class:`TableChanges` per table. A batch never mixes two row schemas of one table: when an event
  declares a different schema than the events already in the batch, the batch ends *before* that event
  (the next read starts with it).
* Key columns: the configured ``SourceTable.key_columns`` if given, else the field names of the first
  event key seen for the table, else none.
* Schemaless events are typed per batch with :func:`infer_schema`.
* Snapshot reads (op ``r``) of one snapshot all carry the same log position, and events without log
  fields only have ``ts_ms``. The apply skips changes at or below a table's last applied position, so
  equal positions in two batches would lose the second. The sources therefore give them distinct,
  replay-stable positions from the event's place in the input (``ordinal``: :func:`file_ordinal` of file
  index and line, or :func:`kafka_ordinal` of partition and offset, since Kafka offsets are per
  partition): ``r`` → ``Position(commit - 1, ordinal)`` (just before the stream continues at
  ``commit``); ``ts_ms`` fallback → ``Position(ts_ms, ordinal)``. With several partitions these
  positions only order events within a partition: keep snapshot and ``ts_ms``-only topics at one
  partition (Debezium's default for a table's topic), or the watermark can skip events of a partition.
* Anything that cannot become a row becomes a :class:`DeadLetter` naming the reason; ``read`` never raises
  on bad input.
* Debezium takes its own initial snapshot (op ``r`` events), so ``setup`` creates nothing and these sources
  have no :meth:`snapshot`.

File positions. Event positions (``__commit_pos``/``__event_pos``) come from the events (LSNs). The
batch's ``ack_position`` is ``Position(file_index, line_number)`` of the last line read (1-based lines,
files in name order), and :meth:`DebeziumFileSource.ack` stores ``{file_index, file, line, byte}`` in the
offset store. Files must be appended to or added with names that sort after the existing ones (as
rotating writers do); a stored offset whose file name no longer matches its index is an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_READ,
    OP_TRUNCATE,
    TX_ID_COL,
    UNCHANGED_COL,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    change_schema,
)
from hybrid_dagster.cdc.debezium_envelope import (
    UNAVAILABLE_VALUE,
    EventError,
    EventResult,
    Malformed,
    ParsedChange,
    Skipped,
    decode_json,
    infer_schema,
    parse_envelope,
    parse_event,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable

KAFKA_INSTALL_HINT = "pip install 'hybrid-dagster[kafka]'"
_RECORD_FIELDS = frozenset({"key", "value", "headers", "topic", "partition", "offset", "timestamp"})


@dataclass
class _Event:
    change: ParsedChange
    raw: str
    where: str


@dataclass
class _TableEvents:
    schema: pa.Schema | None = None
    schema_set: bool = False
    events: list[_Event] = field(default_factory=list)


class BatchBuilder:
    """Collects parse results; :meth:`build` returns the batch.

    Example:
        >>> from hybrid_dagster.cdc.debezium_envelope import parse_event
        >>> b = BatchBuilder("debezium-file:///tmp/x", {})
        >>> b.add(parse_event('{"op":"c","after":{"id":1},"source":{"table":"t","lsn":5}}'), "raw", "f:1")
        True
        >>> b.build(ack_position=Position(0, 1)).tables["t"].count
        1
    """

    def __init__(self, source: str, key_columns: dict[str, list[str]], tables: set[str] | None = None):
        self.source = source
        self.key_columns = key_columns
        self.tables = tables
        self.count = 0
        """Changes plus dead letters added so far."""
        self._tables: dict[str, _TableEvents] = {}
        self._dead: list[DeadLetter] = []

    def add(self, result: EventResult, raw: str, where: str, ordinal: int = 0) -> bool:
        """Add one parse result. False means: schema change, end the batch before this event.

        ``ordinal`` is the event's replay-stable place in the input (see the module docstring).
        """
        if isinstance(result, Skipped):
            return True
        if isinstance(result, Malformed):
            if result.table is None or self._captured(result.table):
                self._dead.append(DeadLetter(self.source, raw, result.reason, result.table, where))
                self.count += 1
            return True
        if not self._captured(result.table):
            return True
        entry = self._tables.setdefault(result.table, _TableEvents())
        if result.op != OP_TRUNCATE:
            if not entry.schema_set:
                entry.schema, entry.schema_set = result.data_schema, True
            elif not _same_schema(entry.schema, result.data_schema):
                return False
        entry.events.append(_Event(_stable_position(result, ordinal), raw, where))
        self.count += 1
        return True

    def _captured(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def build(self, ack_position: Position | None, source_position: Position | None = None) -> ChangeBatch:
        batch = ChangeBatch(self.source, ack_position=ack_position, source_position=source_position)
        batch.dead_letters.extend(self._dead)
        for table, entry in self._tables.items():
            changes, dead = self._table_changes(table, entry)
            if changes is not None and changes.count:
                batch.tables[table] = changes
            batch.dead_letters.extend(dead)
        return batch

    def _table_changes(self, table: str, entry: _TableEvents) -> tuple[TableChanges | None, list[DeadLetter]]:
        events = entry.events
        keys = list(self.key_columns.get(table) or [])
        if not keys:
            first_key = next((e.change.key for e in events if e.change.key), None)
            keys = list(first_key or [])
        data_rows = [e.change.row for e in events]
        if entry.schema is not None:
            data_schema = entry.schema
        else:
            data_schema, data_rows = infer_schema(
                [r for e, r in zip(events, data_rows, strict=True) if e.change.op != OP_TRUNCATE]
            )
            data_rows = _reinsert_truncates(events, data_rows)
        missing = [k for k in keys if k not in data_schema.names]
        if missing:
            if all(e.change.op == OP_TRUNCATE for e in events):
                keys = []
            else:
                reason = f"key columns {missing} are not columns of the row (columns: {data_schema.names})"
                return None, [self._dead_letter(e, reason) for e in events]
        schema = change_schema(data_schema, keys)
        rows = [
            _system_row(e.change, keys, data_schema.names, r) for e, r in zip(events, data_rows, strict=True)
        ]
        try:
            return TableChanges(table, keys, data_schema, pa.Table.from_pylist(rows, schema=schema)), []
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        good, dead = [], []
        for event, row in zip(events, rows, strict=True):
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                dead.append(self._dead_letter(event, _unfit_reason(row, schema)))
        return TableChanges(table, keys, data_schema, pa.Table.from_pylist(good, schema=schema)), dead

    def _dead_letter(self, event: _Event, reason: str) -> DeadLetter:
        return DeadLetter(self.source, event.raw, reason, event.change.table, event.where)


def _unfit_reason(row: dict[str, Any], schema: pa.Schema) -> str:
    """Why ``row`` does not fit ``schema``, naming columns and types only (never the values)."""
    bad = []
    for f in schema:
        try:
            pa.array([row.get(f.name)], type=f.type)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            bad.append(f"{f.name!r} ({f.type})")
    columns = ", ".join(bad) if bad else "unknown"
    return f"a value does not fit its column type: column {columns}"


_ORDINAL_BITS = 48
_PARTITION_LIMIT = 1 << (63 - _ORDINAL_BITS)
_FILE_LINE_BITS = 40


def kafka_ordinal(partition: int, offset: int) -> int:
    """Replay-stable ordinal of a Kafka message: ``partition << 48 | offset`` (fits int64).

    Offsets count per partition, so the partition goes into the high bits: two partitions never give
    the same ordinal.

    Example:
        >>> kafka_ordinal(1, 5) > kafka_ordinal(0, 2**40)
        True
    """
    if not 0 <= offset < 1 << _ORDINAL_BITS:
        raise ValueError(f"Kafka offset {offset} is outside the supported range [0, 2**{_ORDINAL_BITS})")
    if not 0 <= partition < _PARTITION_LIMIT:
        raise ValueError(
            f"Kafka partition {partition} is outside the supported range [0, {_PARTITION_LIMIT})"
        )
    return (partition << _ORDINAL_BITS) | offset


def file_ordinal(file_index: int, line: int) -> int:
    """Replay-stable ordinal of a line of the file source: ``file_index << 40 | line`` (fits int64)."""
    if not 0 <= line < 1 << _FILE_LINE_BITS:
        raise ValueError(f"line {line} is outside the supported range [0, 2**{_FILE_LINE_BITS})")
    if not 0 <= file_index < 1 << (63 - _FILE_LINE_BITS):
        raise ValueError(f"file index {file_index} is outside the supported range")
    return (file_index << _FILE_LINE_BITS) | line


def _stable_position(change: ParsedChange, ordinal: int) -> ParsedChange:
    if change.op == OP_READ:
        return replace(change, position=Position(max(change.position.commit - 1, 0), ordinal))
    if change.position_from == "ts_ms":
        return replace(change, position=Position(change.position.commit, ordinal))
    return change


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals(b)


def _reinsert_truncates(events: list[_Event], inferred: list[dict[str, Any]]) -> list[dict[str, Any]]:
    it = iter(inferred)
    return [{} if e.change.op == OP_TRUNCATE else next(it) for e in events]


def _system_row(
    change: ParsedChange, keys: list[str], columns: list[str], data: dict[str, Any]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        OP_COL: change.op,
        COMMIT_POS_COL: change.position.commit,
        EVENT_POS_COL: change.position.event,
        TX_ID_COL: change.tx_id,
        COMMIT_TS_COL: change.commit_ts,
        OLD_KEY_COL: change.old_key(keys),
        UNCHANGED_COL: list(change.unchanged) or None,
    }
    for name in columns:
        row[name] = data.get(name)
    return row


def _table_keys(tables: Sequence[SourceTable | str] | None) -> tuple[dict[str, list[str]], set[str] | None]:
    if tables is None:
        return {}, None
    specs = [t if isinstance(t, SourceTable) else SourceTable(t) for t in tables]
    return {t.name: list(t.key_columns) for t in specs if t.key_columns}, {t.name for t in specs}


# --- one line / one record --------------------------------------------------------------------------------


def decode_record(text: str) -> tuple[Any, Any]:
    """Decode one JSON-lines record into (value, key) JSON objects; raises EventError.

    Detected layouts: the value alone; ``{"key": K, "value": V}`` (K and V as JSON or as strings holding
    JSON, optionally with topic/partition/offset/timestamp/headers); ``KEY<TAB>VALUE`` (the output of
    Debezium's tutorial ``watch-topic``). A blank line is a tombstone.
    """
    stripped = text.strip()
    if not stripped:
        return None, None
    try:
        obj = decode_json(stripped)
    except EventError as whole:
        for index, char in enumerate(stripped):
            if char == "\t":
                try:
                    return decode_json(stripped[index + 1 :]), decode_json(stripped[:index])
                except EventError:
                    continue
        raise whole from None
    if isinstance(obj, dict) and "value" in obj and obj.keys() <= _RECORD_FIELDS:
        return _maybe_json(obj["value"], "value"), _maybe_json(obj.get("key"), "key")
    return obj, None


def _maybe_json(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return decode_json(value)
    except EventError as exc:
        raise EventError(f"record {what} string is {exc}") from None


def parse_record(text: str, placeholder: str = UNAVAILABLE_VALUE) -> EventResult:
    """Parse one JSON-lines record (see :func:`decode_record`). Never raises."""
    try:
        value, key = decode_record(text)
    except EventError as exc:
        return Malformed(f"line is {exc}" if not str(exc).startswith("record") else str(exc))
    return parse_envelope(value, key, placeholder=placeholder)


# --- offsets ---------------------------------------------------------------------------------------------


class OffsetStore(Protocol):
    """Where a file source keeps its acknowledged offset (a small JSON-able dict)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, offset: dict[str, Any]) -> None: ...


class JsonFileOffsetStore:
    """Offset kept in a JSON file, replaced atomically (write, fsync, rename).

    Example:
        >>> store = JsonFileOffsetStore(Path(tempfile.mkdtemp()) / "offset.json")
        >>> store.save({"file_index": 0, "file": "a.jsonl", "line": 3}); store.load()["line"]
        3
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"offset file {self.path} does not hold a JSON object")
        return data

    def save(self, offset: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(offset, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- file source -----------------------------------------------------------------------------------------


class DebeziumFileSource(ChangeSource):
    """Debezium events from JSON-lines files (Debezium Server file sink, kcat dumps, test fixtures).

    ``paths`` is a directory (every non-hidden file in it matching ``pattern``, in name order) or a list
    of files. ``read`` never consumes; ``ack(batch.ack_position)`` stores the offset after the commit.
    Only the ``tables`` given are captured (all tables if None); their ``key_columns`` override the keys
    found in event keys.

    Example:
        >>> src = DebeziumFileSource("/data/debezium", tables=[SourceTable("inventory.customers", ("id",))])
        >>> batch = src.read(10_000)  # doctest: +SKIP
        >>> ...  # apply batch.tables, commit the Iceberg snapshot  # doctest: +SKIP
        >>> src.ack(batch.ack_position)  # doctest: +SKIP
    """

    kind = "debezium"

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        tables: Sequence[SourceTable | str] | None = None,
        offset_store: OffsetStore | str | Path | None = None,
        pattern: str = "*",
        placeholder: str = UNAVAILABLE_VALUE,
    ):
        if isinstance(paths, str | Path):
            self._dir: Path | None = Path(paths).resolve()
            self._paths: list[Path] = []
        else:
            self._dir = None
            self._paths = [Path(p).resolve() for p in paths]
            if not self._paths:
                raise ValueError("DebeziumFileSource needs a directory or at least one file")
        self.pattern = pattern
        self.placeholder = placeholder
        self._keys, self._tables = _table_keys(tables)
        root = self._dir if self._dir is not None else self._paths[0].parent
        if offset_store is None:
            offset_store = root / ".hybrid-cdc-offset.json"
        self.offsets: OffsetStore = (
            JsonFileOffsetStore(offset_store) if isinstance(offset_store, str | Path) else offset_store
        )
        self._byte_after: dict[Position, int] = {}

    @property
    def source_id(self) -> str:
        if self._dir is not None:
            return f"debezium-file://{self._dir}"
        return f"debezium-file://{os.path.commonpath([str(p) for p in self._paths])}"

    def files(self) -> list[Path]:
        """The input files in reading order."""
        if self._dir is None:
            return list(self._paths)
        return sorted(p for p in self._dir.glob(self.pattern) if p.is_file() and not p.name.startswith("."))

    def setup(self) -> Position | None:
        return None

    def _start(self, files: list[Path]) -> tuple[int, int, int | None]:
        """(file index, last acknowledged line, byte offset after it if known)."""
        offset = self.offsets.load()
        if offset is None:
            return 0, 0, None
        index, line = int(offset["file_index"]), int(offset["line"])
        if index >= len(files) or files[index].name != offset.get("file"):
            found = files[index].name if index < len(files) else "no file"
            raise ValueError(
                f"offset names file #{index} {offset.get('file')!r} but that index now holds {found}: "
                "input files were removed, renamed or inserted before it"
            )
        byte = offset.get("byte")
        return index, line, int(byte) if isinstance(byte, int) else None

    def read(self, max_events: int) -> ChangeBatch:
        files = self.files()
        builder = BatchBuilder(self.source_id, self._keys, self._tables)
        if not files:
            return builder.build(None)
        index, line_no, byte = self._start(files)
        last: Position | None = None
        last_byte = 0
        exhausted = True
        while index < len(files) and exhausted:
            path = files[index]
            with path.open("rb") as fh:
                if byte is not None:
                    fh.seek(byte)
                else:
                    for _ in range(line_no):
                        if not fh.readline():
                            break
                while True:
                    if builder.count >= max_events:
                        exhausted = False
                        break
                    raw = fh.readline()
                    if not raw:
                        break
                    if not raw.endswith(b"\n") and index == len(files) - 1 and not _complete(raw):
                        break  # a writer is still appending this line
                    where = f"{path.name}:{line_no + 1}"
                    text = raw.decode("utf-8", errors="replace")
                    result: EventResult = (
                        Malformed("line is not valid UTF-8")
                        if "\ufffd" in text and _invalid_utf8(raw)
                        else parse_record(text, self.placeholder)
                    )
                    ordinal = file_ordinal(index, line_no + 1)
                    if not builder.add(result, text.rstrip("\r\n"), where, ordinal):
                        exhausted = False
                        break
                    line_no += 1
                    last, last_byte = Position(index, line_no), fh.tell()
            if exhausted:
                index, line_no, byte = index + 1, 0, None
        if last is not None:
            self._byte_after[last] = last_byte
        source_position = (last or self._acked_position()) if exhausted else None
        return builder.build(ack_position=last, source_position=source_position)

    def _acked_position(self) -> Position | None:
        offset = self.offsets.load()
        return Position(int(offset["file_index"]), int(offset["line"])) if offset else None

    def ack(self, position: Position) -> None:
        """Store ``position`` (file index, line) as done. Older positions than the stored one are ignored."""
        current = self._acked_position()
        if current is not None and position <= current:
            return
        files = self.files()
        if not 0 <= position.commit < len(files):
            raise ValueError(f"cannot acknowledge {position}: there is no file #{position.commit}")
        offset: dict[str, Any] = {
            "file_index": position.commit,
            "file": files[position.commit].name,
            "line": position.event,
        }
        if position in self._byte_after:
            offset["byte"] = self._byte_after[position]
        self.offsets.save(offset)
        self._byte_after = {p: b for p, b in self._byte_after.items() if p > position}


def _complete(raw: bytes) -> bool:
    try:
        decode_json(raw)
    except EventError:
        return False
    return True


def _invalid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- Kafka source ----------------------------------------------------------------------------------------


class DebeziumKafkaSource(ChangeSource):
    """Debezium events from Kafka topics, via ``confluent_kafka`` (``pip install 'hybrid-dagster[kafka]'``).

    The consumer never auto-commits: ``read`` polls (rewinding to the first unacknowledged offset of each
    partition, so a read without ack returns the same events) and ``ack`` commits the offsets of the
    batches read up to that position. ``ack_position`` is ``Position(read_number, message_count)``, a
    token of this process; after a restart, reading resumes at the last committed offsets.

    Example:
        >>> topics = ["dbserver1.inventory.customers"]
        >>> src = DebeziumKafkaSource("broker:9092", topics, group_id="lake")  # doctest: +SKIP
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
                f"DebeziumKafkaSource needs the optional dependency confluent-kafka: {KAFKA_INSTALL_HINT}"
            ) from exc
        self._kafka = confluent_kafka
        self.bootstrap_servers, self.topics, self.group_id = bootstrap_servers, list(topics), group_id
        self.poll_timeout_s, self.placeholder = poll_timeout_s, placeholder
        self._keys, self._tables = _table_keys(tables)
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
        for (topic, partition), offset in self._unacked_from.items():
            self._consumer.seek(tp(topic, partition, offset))
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
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            value, key = msg.value(), msg.key()
            result = parse_event(value, key, placeholder=self.placeholder)
            raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""
            if not builder.add(result, raw, where, kafka_ordinal(msg.partition(), msg.offset())):
                self._consumer.seek(tp(msg.topic(), msg.partition(), msg.offset()))
                break
            part = (msg.topic(), msg.partition())
            self._unacked_from.setdefault(part, msg.offset())
            last_offsets[part] = msg.offset()
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
