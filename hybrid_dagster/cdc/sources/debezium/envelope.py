"""Parse one Debezium change event (Kafka key + value JSON) into a normalized change.

Accepted value layouts: the JsonConverter ``{"schema": ..., "payload": {...}}`` wrapper (schemas
enabled), ``{"payload": {...}}``, and the bare envelope ``{"before", "after", "source", "op", ...}``.
The result is one of:

* :class:`ParsedChange` for ops ``c``/``u``/``d``/``r``/``t``;
* :class:`Skipped` for events that carry no row change: tombstones (a null value, an empty value, or the
  pre-KAFKA-3832 ``{"schema": null, "payload": null}``), transaction metadata (``BEGIN``/``END``) and
  logical decoding messages (op ``m``);
* :class:`Malformed` with a reason naming what is wrong. Parsing never raises.

Positions (:func:`event_position`) are normalized to ``Position(commit, event)`` so that sorting by
commit then event is the source's commit order, even across interleaved transactions:

* PostgreSQL: ``source.sequence`` = ``'["<last commit LSN>", "<event LSN>"]'`` (either may be null; a
  null falls back to ``source.lsn``), then ``source.lsn`` alone (older connectors: not monotonic across
  interleaved transactions, nothing better exists in the event).
* MySQL: the binlog is written in commit order, so ``commit = file_number << 40 | pos`` and
  ``event = row``.
* SQL Server: ``commit = pack(commit_lsn)``; ``event`` orders ``change_lsn`` then ``event_serial_no``
  inside the commit (see :func:`pack_sqlserver_lsn`).
* Otherwise ``source.ts_ms`` (then the envelope ``ts_ms``) as ``Position(ts_ms, 0)``.

Duplicate object keys (they occur in Debezium's own documentation examples) follow Python's ``json``
module: **the last value wins**. Example: the SQL Server create example has ``ts_ms`` three times in the
envelope; this parser reads ``1559729471739876149``. Source fields are not affected in that example.

Example:
    >>> r = parse_event('{"op": "c", "after": {"id": 1}, "source": {"db": "d", "table": "t", "lsn": 7}}')
    >>> (r.table, r.op, r.position, r.row)
    ('d.t', 'c', Position(commit=7, event=7), {'id': 1})
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from hybrid_dagster.cdc.changes import OP_DELETE, OP_INSERT, OP_READ, OP_TRUNCATE, OP_UPDATE, Position
from hybrid_dagster.cdc.sources.debezium.types import (
    EPOCH,
    EventError as EventError,
    arrow_field,
    decode_json as decode_json,
    infer_schema as infer_schema,
    json_kind,
    opt_int,
    row_converter,
    row_fields,
)

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""Debezium's default ``unavailable.value.placeholder`` (unchanged TOAST columns)."""

OP_MESSAGE = "m"
_ROW_OPS = (OP_INSERT, OP_UPDATE, OP_DELETE, OP_READ)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ParsedChange:
    """One row change, with data values already converted for :attr:`data_schema` (if known).

    ``row`` is the after-image for ``c``/``u``/``r``, the before-image (or the event key) for ``d`` and
    empty for ``t``. ``data_schema`` is None when the event had no schema: the caller infers types
    (:func:`infer_schema`). ``unchanged`` lists columns that held the unavailable-value placeholder;
    they are None in ``row``.
    """

    table: str
    op: str
    position: Position
    row: dict[str, Any]
    before: dict[str, Any] | None = None
    key: dict[str, Any] | None = None
    data_schema: pa.Schema | None = None
    tx_id: int | None = None
    commit_ts: dt.datetime | None = None
    unchanged: tuple[str, ...] = ()
    position_from: str = "log"
    """'log' (LSN, binlog or SQL Server LSN fields) or 'ts_ms' (the timestamp fallback)."""

    def old_key(self, key_columns: list[str]) -> dict[str, Any] | None:
        """The before-image key of an update that changed its key, else None."""
        if self.op != OP_UPDATE or not key_columns or self.before is None:
            return None
        if any(k not in self.before or k not in self.row for k in key_columns):
            return None
        if all(self.before[k] == self.row[k] for k in key_columns):
            return None
        return {k: self.before[k] for k in key_columns}


@dataclass(frozen=True)
class Skipped:
    """An event without a row change (tombstone, transaction marker, logical decoding message)."""

    reason: str


@dataclass(frozen=True)
class Malformed:
    """An event that cannot be parsed; ``reason`` names what is wrong."""

    reason: str
    table: str | None = None


EventResult = ParsedChange | Skipped | Malformed


def parse_event(
    value: str | bytes | None,
    key: str | bytes | None = None,
    *,
    placeholder: str = UNAVAILABLE_VALUE,
) -> EventResult:
    """Parse a raw Kafka value (and optional key) as Debezium JSON. Never raises."""
    if value is None or not value.strip():
        return Skipped("tombstone (null value)")
    try:
        value_obj = decode_json(value)
    except EventError as exc:
        return Malformed(f"value is {exc}")
    key_obj: Any = None
    if key is not None and key.strip():
        try:
            key_obj = decode_json(key)
        except EventError as exc:
            return Malformed(f"key is {exc}")
    return parse_envelope(value_obj, key_obj, placeholder=placeholder)


def parse_envelope(value: Any, key: Any = None, *, placeholder: str = UNAVAILABLE_VALUE) -> EventResult:
    """Parse an already JSON-decoded value (and key). Never raises."""
    table: str | None = None
    try:
        payload, schema = _unwrap(value)
        if payload is None:
            return Skipped("tombstone (null payload)")
        if not isinstance(payload, dict):
            raise EventError(f"payload is a JSON {json_kind(payload)}, not an object")
        if "op" not in payload:
            if payload.get("status") in ("BEGIN", "END") and "id" in payload:
                return Skipped(f"transaction {payload['status']} marker")
            raise EventError("missing 'op'")
        op = payload["op"]
        if op == OP_MESSAGE:
            return Skipped("logical decoding message (op 'm')")
        if op not in (*_ROW_OPS, OP_TRUNCATE):
            raise EventError(f"unknown op {op!r} (expected c, u, d, r, t or m)")
        source = payload.get("source")
        if not isinstance(source, dict):
            raise EventError("missing 'source' object")
        table = table_name(source)
        return _parse_change(payload, schema, source, op, table, key, placeholder)
    except EventError as exc:
        return Malformed(str(exc), table)
    except (ValueError, TypeError, ArithmeticError, RecursionError, KeyError) as exc:  # defensive net
        return Malformed(f"unexpected {type(exc).__name__} while parsing the event", table)


def _unwrap(value: Any) -> tuple[Any, dict[str, Any] | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise EventError(f"value is a JSON {json_kind(value)}, not an object")
    if "payload" in value and "op" not in value:
        schema = value.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise EventError("'schema' is not an object")
        return value["payload"], schema
    return value, None


def table_name(source: dict[str, Any]) -> str:
    """``schema.table`` (PostgreSQL, SQL Server), else ``db.table`` (MySQL), else ``table``."""
    table = source.get("table") or source.get("collection")
    if not isinstance(table, str) or not table:
        raise EventError("source.table is missing or empty")
    for prefix_field in ("schema", "db"):
        prefix = source.get(prefix_field)
        if isinstance(prefix, str) and prefix:
            return f"{prefix}.{table}"
    return table


def _parse_change(
    payload: dict[str, Any],
    schema: dict[str, Any] | None,
    source: dict[str, Any],
    op: str,
    table: str,
    key: Any,
    placeholder: str,
) -> ParsedChange:
    position = event_position(source, payload)
    position_from = "log" if _has_log_position(source) else "ts_ms"
    tx_id = opt_int(source.get("txId"), "source.txId")
    commit_ts = _commit_ts(source)
    columns = row_fields(schema)
    data_schema = pa.schema([arrow_field(f) for f in columns]) if columns is not None else None
    convert = row_converter(columns, placeholder)
    key_row = _parse_key(key)

    before_raw, after_raw = payload.get("before"), payload.get("after")
    unchanged: tuple[str, ...] = ()
    before = None
    if before_raw is not None:
        if not isinstance(before_raw, dict):
            raise EventError(f"'before' is a JSON {json_kind(before_raw)}, not an object")
        before, _ = convert(before_raw, "before")
    if op == OP_TRUNCATE:
        row: dict[str, Any] = {}
    elif op == OP_DELETE:
        if before is not None:
            row = before
        elif key_row is not None:
            row = key_row
        else:
            raise EventError("op 'd' without 'before' and without a key")
    else:
        if not isinstance(after_raw, dict):
            what = "missing" if after_raw is None else f"a JSON {json_kind(after_raw)}"
            raise EventError(f"op {op!r} needs an 'after' object, but it is {what}")
        row, unchanged = convert(after_raw, "after")
    return ParsedChange(
        table=table,
        op=op,
        position=position,
        row=row,
        before=before,
        key=key_row,
        data_schema=data_schema,
        tx_id=tx_id,
        commit_ts=commit_ts,
        unchanged=unchanged,
        position_from=position_from,
    )


def _parse_key(key: Any) -> dict[str, Any] | None:
    if key is None:
        return None
    if isinstance(key, dict) and "payload" in key and ("schema" in key or len(key) == 1):
        key = key["payload"]
        if key is None:
            return None
    if not isinstance(key, dict):
        raise EventError(f"key is a JSON {json_kind(key)}, not an object")
    return key


# --- positions -------------------------------------------------------------------------------------------


def _has_log_position(source: dict[str, Any]) -> bool:
    return any(source.get(f) is not None for f in ("sequence", "lsn", "commit_lsn", "change_lsn")) or (
        source.get("file") is not None and source.get("pos") is not None
    )


def event_position(source: dict[str, Any], payload: dict[str, Any] | None = None) -> Position:
    """Normalize the connector-specific position fields (see the module docstring)."""
    if source.get("sequence") is not None or source.get("lsn") is not None:
        return _postgres_position(source)
    if source.get("commit_lsn") is not None or source.get("change_lsn") is not None:
        return _sqlserver_position(source)
    if source.get("file") is not None and source.get("pos") is not None:
        return _mysql_position(source)
    for where, container in (("source", source), ("envelope", payload or {})):
        ts = opt_int(container.get("ts_ms"), f"{where}.ts_ms")
        if ts is not None:
            return Position(_check_int64(ts, f"{where}.ts_ms"), 0)
    raise EventError("no position: none of source.sequence/lsn, commit_lsn, file+pos or ts_ms is set")


def _postgres_position(source: dict[str, Any]) -> Position:
    lsn = opt_int(source.get("lsn"), "source.lsn")
    commit, event = lsn, lsn
    raw = source.get("sequence")
    if raw is not None:
        seq = decode_json(raw) if isinstance(raw, str) else raw
        if not isinstance(seq, list) or len(seq) != 2:
            raise EventError(f"source.sequence is not a two-element array: {raw!r}")
        first = opt_int(seq[0], "source.sequence[0]")
        second = opt_int(seq[1], "source.sequence[1]")
        event = second if second is not None else lsn
        commit = first if first is not None else event
    if commit is None or event is None:
        raise EventError(f"source.sequence has no LSN and source.lsn is null: {raw!r}")
    return Position(_check_int64(commit, "commit LSN"), _check_int64(event, "event LSN"))


def _mysql_position(source: dict[str, Any]) -> Position:
    file = source["file"]
    match = re.search(r"(\d+)$", file) if isinstance(file, str) else None
    if match is None:
        raise EventError(f"source.file {file!r} has no binlog file number")
    file_no = int(match.group(1))
    pos = opt_int(source["pos"], "source.pos") or 0
    row = opt_int(source.get("row"), "source.row") or 0
    if file_no >= 2**22 or not 0 <= pos < 2**40:
        raise EventError(f"binlog position {file}:{pos} is outside the supported range")
    return Position((file_no << 40) | pos, _check_int64(row, "source.row"))


_SQLSERVER_LSN = re.compile(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,4})$")
_VLF_BITS, _BLOCK_BITS, _SLOT_BITS = 26, 24, 13
_DELTA_BITS, _SERIAL_BITS = 50, 12


def pack_sqlserver_lsn(lsn: Any) -> int:
    """Pack ``VLF:block:slot`` (hex) into 63 bits: 26 bits VLF, 24 bits block, 13 bits slot.

    Order-preserving for LSNs inside that range (VLF sequence numbers below 67M, log blocks below
    8 GiB per VLF, under 8192 records per block); anything larger is rejected, never wrapped.
    """
    match = _SQLSERVER_LSN.match(lsn) if isinstance(lsn, str) else None
    if match is None:
        raise EventError(f"not a SQL Server LSN (expected 'VLF:BLOCK:SLOT' in hex): {lsn!r}")
    vlf, block, slot = (int(part, 16) for part in match.groups())
    if vlf >= 1 << _VLF_BITS or block >= 1 << _BLOCK_BITS or slot >= 1 << _SLOT_BITS:
        raise EventError(f"SQL Server LSN {lsn} is outside the packable range")
    return (vlf << (_BLOCK_BITS + _SLOT_BITS)) | (block << _SLOT_BITS) | slot


def _sqlserver_position(source: dict[str, Any]) -> Position:
    commit_raw, change_raw = source.get("commit_lsn"), source.get("change_lsn")
    commit = pack_sqlserver_lsn(commit_raw if commit_raw is not None else change_raw)
    change = pack_sqlserver_lsn(change_raw) if change_raw is not None else commit
    serial = opt_int(source.get("event_serial_no"), "source.event_serial_no") or 0
    delta = commit - change
    if delta < 0:
        raise EventError(f"change_lsn {change_raw} is after commit_lsn {commit_raw}")
    # Inside a commit: a later change_lsn means a smaller distance to the commit LSN.
    distance = min(delta, (1 << _DELTA_BITS) - 1)
    event = (((1 << _DELTA_BITS) - 1 - distance) << _SERIAL_BITS) | min(
        max(serial, 0), (1 << _SERIAL_BITS) - 1
    )
    return Position(commit, event)


def _check_int64(value: int, what: str) -> int:
    if not -(2**63) <= value <= _INT64_MAX:
        raise EventError(f"{what} {value} does not fit in int64")
    return value


def _commit_ts(source: dict[str, Any]) -> dt.datetime | None:
    """Source commit time, µs precision; 0 (snapshot events of some connectors) means unknown."""
    micros = opt_int(source.get("ts_us"), "source.ts_us")
    if micros is None:
        ms = opt_int(source.get("ts_ms"), "source.ts_ms")
        if ms is None:
            sec = opt_int(source.get("ts_sec"), "source.ts_sec")  # legacy MySQL layout
            micros = sec * 1_000_000 if sec is not None else None
        else:
            micros = ms * 1000
    if micros is None or micros <= 0:
        return None
    try:
        return EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise EventError(f"source timestamp {micros} µs is out of range") from None
