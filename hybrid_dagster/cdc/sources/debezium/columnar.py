"""Many Debezium events at once: JSON parsed by ``pyarrow.json``, envelopes read with pyarrow compute.

Correctness rules:

* One parser. For every event it accepts, the result is exactly what :func:`parse_event` and
  :class:`~hybrid_dagster.cdc.sources.debezium.batch.BatchBuilder` give (same rows, types, column order,
  dead letters). It accepts only what it can show parses the same way: schemaless envelopes (bare or
  ``{"payload": ...}``) of ops ``c``/``u``/``d``/``r`` whose row values are numbers, booleans and strings,
  with a PostgreSQL/MySQL/``ts_ms`` position. Every other event is handed back (:attr:`Parsed.slow`) to the
  per-event parser, which turns the bad ones into dead letters and never stops the good ones.
* A table is built by one path only: if the per-event parser returns a change for a table, every event of
  that table in the batch goes that way, so column types are inferred over the table's whole batch.
* An event with a Kafka Connect schema (``{"schema": {...}, "payload": ...}``) may end a batch at a schema
  change, so a batch holding one is left wholly to the per-event path (``None``).
* Values are never logged; reasons name fields and types only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    TX_ID_COL,
    UNCHANGED_COL,
    TableChanges,
    change_schema,
)
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder
from hybrid_dagster.cdc.sources.debezium.envelope import ParsedChange, parse_event

_ROW_TYPES = (pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.null())
_INT_TYPES = (pa.int64(), pa.null())
_MAX_MICROS = 253_402_300_800_000_000  # datetime.max (year 9999) in µs since the epoch
_INT64_LIMIT = 2.0**63
_SPLIT = 16
_SPLIT_BUDGET = 8  # lines parsed while looking for rejected ones, per line
_MAX_PARTS = 64
_BLOCK_BYTES = 1 << 20
_LSN = r'("-?\d{1,18}"|-?(0|[1-9]\d{0,17}))'  # a decimal string, or a JSON integer (no leading zero)
_PG_SEQUENCE = rf"^\[\s*(null|{_LSN})\s*,\s*(null|{_LSN})\s*\]$"
_PG_SEQUENCE_EVENT = rf",\s*{_LSN}\s*\]$"


@dataclass
class Parsed:
    """What :func:`parse_many` made of a batch of events."""

    tables: dict[str, TableChanges] = field(default_factory=dict)
    """Changes per table, built without the per-event parser."""
    counts: dict[str, int] = field(default_factory=dict)
    """Events per table in :attr:`tables`."""
    slow: list[int] = field(default_factory=list)
    """Indexes (ascending) of the events to parse one by one."""


def parse_many(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    ordinals: Sequence[int],
    *,
    key_columns: dict[str, list[str]],
    tables: set[str] | None,
    placeholder: str,
) -> Parsed | None:
    """Parse Kafka message values (and keys) of one topic; ``None``: leave the whole batch to the per-event
    path. Events are at ``Position(ordinal, 0)`` (the Kafka source's ordinal positions).

    Example:
        >>> p = parse_many([b'{"op":"c","after":{"id":1},"source":{"table":"t","lsn":5}}'], [None], [7],
        ...                key_columns={"t": ["id"]}, tables=None, placeholder="?")
        >>> p.tables["t"].rows.column("id").to_pylist(), p.slow
        ([1], [])
    """
    n = len(values)
    joined = _joined(values)
    if joined is not None:
        fast, slow = list(range(n)), set()
    else:
        suspect = _suspect(values, missing=True)
        fast = [i for i in range(n) if not suspect[i]]
        slow = {i for i in range(n) if suspect[i]}
    key_joined = _joined(keys) if len(fast) == n else None
    if key_joined is not None:
        keyed = fast  # every message has a key
    else:
        keyed = [i for i in fast if keys[i] and not keys[i].isspace()]  # type: ignore[union-attr]
        key_joined = _joined([keys[i] for i in keyed])
    if key_joined is None and keyed:
        key_suspect = _suspect([keys[i] for i in keyed], missing=False)
        slow.update(i for i, bad in zip(keyed, key_suspect, strict=True) if bad)
        keyed = [i for i, bad in zip(keyed, key_suspect, strict=True) if not bad]
    bad_keys: set[int] = set()
    key_parts = _segments(keyed, keys, bad_keys, key_joined)  # keys pyarrow cannot read: one by one
    if bad_keys:
        slow |= bad_keys
        fast = [i for i in fast if i not in bad_keys]
    key_table = key_parts[0][2] if len(key_parts) == 1 and len(key_parts[0][0]) == len(keyed) else None
    result = Parsed()
    groups: dict[str, list[int]] = {}
    whole: dict[str, pa.Table] = {}  # a table whose events are exactly one segment, all valid
    for idx, envelope, parsed in _segments(fast, values, slow, joined if len(fast) == n else None):
        if envelope is None:
            return None
        tables_of, valid = _tables_and_validity(envelope)
        if all(valid) and len(set(tables_of)) == 1 and tables_of[0] is not None:
            if tables is None or tables_of[0] in tables:
                whole[tables_of[0]] = parsed
                groups.setdefault(tables_of[0], []).extend(idx)
            continue
        for i, table, ok in zip(idx, tables_of, valid, strict=True):
            if not ok or table is None:
                slow.add(i)
            elif tables is None or table in tables:
                groups.setdefault(table, []).append(i)
            # an event of a table not captured: nothing to do (the per-event path skips it too)
    for table, idx in groups.items():
        keys_of = list(key_columns.get(table) or [])
        reuse = whole.get(table)
        if reuse is not None and reuse.num_rows != len(idx):
            reuse = None
        reuse_keys = key_table if key_table is not None and keyed == idx else None
        changes = _build_table(table, idx, values, keys, ordinals, keys_of, placeholder, reuse, reuse_keys)
        if changes is None:
            slow.update(idx)
        else:
            result.tables[table] = changes
            result.counts[table] = len(idx)
    result.slow = sorted(slow)
    return result


def _joined(lines: Sequence[bytes | None]) -> bytes | None:
    """The lines joined by newlines when none needs a look of its own (see :func:`_suspect`), else None."""
    if not lines or None in lines or b"" in lines:
        return None
    text = b"\n".join(lines)  # type: ignore[arg-type]
    if text.count(b"\n") != len(lines) - 1 or any(s in text for s in (b"\r", b"NaN", b"Infinity", _BOM)):
        return None
    return text


def _suspect(raw: Sequence[bytes | None], *, missing: bool) -> list[bool]:
    """Lines pyarrow would read differently from ``json.loads``, or that cannot be joined by newlines:
    NaN/Infinity constants (rejected by the per-event parser), line breaks, a byte order mark; empty or
    missing lines are suspect when ``missing``."""
    arr = pa.array(raw, pa.binary())
    flags = pc.starts_with(arr, _BOM)
    for needle in ("NaN", "Infinity", "\n", "\r"):
        flags = pc.or_(flags, pc.match_substring(arr, needle))
    if missing:
        flags = pc.or_(flags, pc.equal(pc.binary_length(arr), 0))
    return pc.fill_null(flags, missing).to_pylist()  # type: ignore[no-any-return]


_BOM = b"\xef\xbb\xbf"


def add_many(
    builder: BatchBuilder,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    ordinals: Sequence[int],
    topics: Sequence[Sequence[int]],
    where: Callable[[int], str],
    placeholder: str,
) -> bool:
    """Add the events to ``builder``, many at once where exact; False (nothing added): parse each instead.

    ``topics`` holds the event indexes of each topic. The events :func:`parse_many` hands back, and every
    event of a table one of them changes, go through :func:`parse_event` in event order. False when an
    event has a Kafka Connect schema (a schema change may end the batch) or a table is in two topics.

    Example:
        >>> b = BatchBuilder("kafka://x", {"t": ["id"]})
        >>> add_many(b, [b'{"op":"c","after":{"id":1},"source":{"table":"t","lsn":5}}'], [None], [7],
        ...          [[0]], lambda i: f"t[0]@{i}", "?")
        True
    """
    fast: dict[str, tuple[TableChanges, int]] = {}
    slow: list[int] = []
    for idx in topics:
        parsed = parse_many(
            [values[i] for i in idx],
            [keys[i] for i in idx],
            [ordinals[i] for i in idx],
            key_columns=builder.key_columns,
            tables=builder.tables,
            placeholder=placeholder,
        )
        if parsed is None:
            return False
        slow.extend(idx[j] for j in parsed.slow)
        for table, changes in parsed.tables.items():
            if table in fast:  # one table in two topics: its types are inferred over both
                return False
            fast[table] = (changes, parsed.counts[table])
    results = {i: parse_event(values[i], keys[i], placeholder=placeholder) for i in sorted(slow)}
    if any(isinstance(r, ParsedChange) and r.data_schema is not None for r in results.values()):
        return False
    changed = {r.table for r in results.values() if isinstance(r, ParsedChange)} & set(fast)
    if changed:  # a table goes one way only: all of its events one by one
        for idx in topics:
            for i in idx:
                if i not in results:
                    result = parse_event(values[i], keys[i], placeholder=placeholder)
                    if isinstance(result, ParsedChange) and result.table in changed:
                        results[i] = result
        fast = {t: v for t, v in fast.items() if t not in changed}
    for i in sorted(results):
        value = values[i]
        raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""
        builder.add(results[i], raw, where(i), ordinals[i])
    for changes, events in fast.values():
        builder.add_changes(changes, events)
    return True


# --- JSON -> Arrow -----------------------------------------------------------------------------------


def _read(lines: list[bytes] | bytes, count: int = 0, explicit: pa.Schema | None = None) -> pa.Table:
    """``lines`` (or ``count`` lines already joined) as a table; raises ArrowInvalid unless one row a line."""
    parse = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
    text = lines if isinstance(lines, bytes) else b"\n".join(lines)
    count = count if isinstance(lines, bytes) else len(lines)
    table = pj.read_json(  # blocks parsed on threads; types are unified over all blocks (tested)
        pa.BufferReader(text),
        read_options=pj.ReadOptions(use_threads=len(text) > _BLOCK_BYTES, block_size=_BLOCK_BYTES),
        parse_options=parse,
    )
    if table.num_rows != count:
        raise pa.ArrowInvalid("row count differs from line count")
    return table


def _segments(
    idx: list[int], values: Sequence[bytes | None], slow: set[int], joined: bytes | None = None
) -> list[tuple[list[int], pa.StructArray | None, pa.Table]]:
    """Parse the values at ``idx`` (``joined``: those lines already joined); lines pyarrow rejects go to
    ``slow``, the others are parsed together again (or, if they do not go together, in the parts that
    parsed)."""
    if not idx:
        return []
    try:
        table = _read([values[i] or b"" for i in idx] if joined is None else joined, len(idx))
        return [(idx, _envelope(table), table)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parts: list[tuple[list[int], pa.Table]] = []
    _split(idx, values, slow, parts, [_SPLIT_BUDGET * len(idx)])
    good = [i for part, _ in parts for i in part]
    if not good:
        return []
    try:
        table = _read([values[i] or b"" for i in good])
        return [(good, _envelope(table), table)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(parts) > _MAX_PARTS:
            slow.update(good)
            return []
        return [(part, _envelope(table), table) for part, table in parts]


def _split(
    idx: list[int],
    values: Sequence[bytes | None],
    slow: set[int],
    parts: list[tuple[list[int], pa.Table]],
    budget: list[int],
) -> None:
    """Find the lines pyarrow rejects: 16 parts a level, within a budget of lines parsed."""
    budget[0] -= len(idx)
    try:
        parts.append((idx, _read([values[i] or b"" for i in idx])))
        return
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if len(idx) == 1 or budget[0] <= 0:
        slow.update(idx)
        return
    step = -(-len(idx) // _SPLIT)
    for k in range(0, len(idx), step):
        _split(idx[k : k + step], values, slow, parts, budget)


def _envelope(table: pa.Table) -> pa.StructArray | None:
    """The envelope struct of each row (bare or under ``payload``); None when a schema is present."""
    names = table.column_names
    schema_col = table.column("schema") if "schema" in names else None
    if schema_col is not None and schema_col.null_count != len(schema_col):
        return None
    if "op" not in names and "payload" in names:
        payload = table.column("payload").combine_chunks()
        if not pa.types.is_struct(payload.type):
            return _empty_struct(len(table))
        return payload  # type: ignore[no-any-return]
    return (
        pa.StructArray.from_arrays([c.combine_chunks() for c in table.columns], names=names)
        if names
        else _empty_struct(len(table))
    )


def _empty_struct(n: int) -> pa.StructArray:
    return pa.array([None] * n, pa.struct([pa.field("_", pa.null())]))  # type: ignore[return-value]


def _child(struct: pa.Array | None, name: str) -> pa.Array | None:
    if struct is None or not pa.types.is_struct(struct.type) or struct.type.get_field_index(name) < 0:
        return None
    child = pc.struct_field(struct, name)
    if struct.null_count:
        child = pc.if_else(struct.is_valid(), child, pa.scalar(None, child.type))
    return child


def _nulls(n: int, type_: pa.DataType = pa.null()) -> pa.Array:
    return pa.nulls(n, type_)


def _typed(arr: pa.Array | None, types: tuple[pa.DataType, ...]) -> bool:
    return arr is None or arr.type in types


# --- envelope checks ---------------------------------------------------------------------------------


def _tables_and_validity(env: pa.StructArray | None) -> tuple[list[str | None], list[bool]]:
    """Per row: the table name and whether the row is one the columnar path parses exactly."""
    assert env is not None
    n = len(env)
    none: tuple[list[str | None], list[bool]] = ([None] * n, [False] * n)
    op = _child(env, "op")
    source = _child(env, "source")
    after, before = _child(env, "after"), _child(env, "before")
    if op is None or source is None or not pa.types.is_string(op.type) or not pa.types.is_struct(source.type):
        return none
    for image in (after, before):
        if image is not None and not pa.types.is_struct(image.type) and not pa.types.is_null(image.type):
            return none
    table = _table_names(source)
    if table is None:
        return none
    ok = pc.and_kleene(env.is_valid(), source.is_valid())
    ok = pc.and_kleene(ok, table.is_valid())
    is_delete = pc.equal(op, "d")
    has_after = after.is_valid() if after is not None and pa.types.is_struct(after.type) else _false(n)
    has_before = before.is_valid() if before is not None and pa.types.is_struct(before.type) else _false(n)
    # a delete's row is its before-image; an after-image on a delete would add its fields to the columns
    delete_ok = pc.and_(has_before, pc.invert(has_after))
    row_ok = pc.if_else(is_delete, delete_ok, pc.and_(pc.is_in(op, pa.array(["c", "u", "r"])), has_after))
    ok = pc.and_kleene(ok, pc.fill_null(row_ok, False))
    position = _position_ok(source, env)
    commit_ts = _commit_micros(source)
    if position is None or commit_ts is None or not _typed(_child(source, "txId"), _INT_TYPES):
        return none
    ok = pc.and_(pc.fill_null(ok, False), position)
    ok = pc.and_(ok, commit_ts[1])
    return table.to_pylist(), pc.fill_null(ok, False).to_pylist()


def _false(n: int) -> pa.Array:
    return pa.array([False] * n, pa.bool_())


def _nonempty(arr: pa.Array | None, n: int) -> pa.Array | None:
    """Valid where ``arr`` is a non-empty string; None when the field has another type."""
    if arr is None or pa.types.is_null(arr.type):
        return _nulls(n, pa.string())
    if not pa.types.is_string(arr.type):
        return None
    return pc.if_else(pc.greater(pc.utf8_length(arr), 0), arr, pa.scalar(None, pa.string()))


def _table_names(source: pa.StructArray) -> pa.Array | None:
    """``schema.table``, else ``db.table``, else ``table`` (:func:`envelope.table_name`)."""
    n = len(source)
    parts = [_nonempty(_child(source, f), n) for f in ("table", "collection", "schema", "db")]
    if any(p is None for p in parts):
        return None
    table, collection, schema, db = parts
    name = pc.coalesce(table, collection)
    prefix = pc.coalesce(schema, db)
    joined = pc.binary_join_element_wise(prefix, name, ".")
    return pc.if_else(prefix.is_valid(), joined, name)  # type: ignore[no-any-return]


def _position_ok(source: pa.StructArray, env: pa.StructArray) -> pa.Array | None:
    """Rows whose position :func:`envelope.event_position` reads without error (None: a field type the
    columnar path does not read)."""
    n = len(source)
    fields = {f: _child(source, f) for f in ("sequence", "lsn", "commit_lsn", "change_lsn", "file", "pos")}
    fields["row"] = _child(source, "row")
    for name in ("lsn", "pos", "row"):
        if not _typed(fields[name], _INT_TYPES):
            return None
    sequence = fields["sequence"]
    if sequence is not None and not _typed(sequence, (pa.string(), pa.null())):
        return None

    def valid(name: str) -> pa.Array:
        arr = fields[name]
        return arr.is_valid() if arr is not None else _false(n)

    lsn = valid("lsn")
    if sequence is not None and pa.types.is_string(sequence.type):
        seq_ok = pc.match_substring_regex(sequence, _PG_SEQUENCE)
        seq_event = pc.match_substring_regex(sequence, _PG_SEQUENCE_EVENT)
        postgres_ok = pc.fill_null(pc.and_(seq_ok, pc.or_(lsn, seq_event)), False)
        postgres = sequence.is_valid()
        postgres_ok = pc.if_else(postgres, postgres_ok, lsn)
        postgres = pc.or_(postgres, lsn)
    else:
        postgres, postgres_ok = lsn, lsn
    sqlserver = pc.or_(valid("commit_lsn"), valid("change_lsn"))
    mysql = pc.and_(valid("file"), valid("pos"))
    mysql_ok = _mysql_ok(fields, n)
    if mysql_ok is None:
        return None
    ts_source, ts_envelope = _child(source, "ts_ms"), _child(env, "ts_ms")
    if not _typed(ts_source, _INT_TYPES) or not _typed(ts_envelope, _INT_TYPES):
        return None
    has_ts = _false(n)
    for ts in (ts_source, ts_envelope):
        if ts is not None:
            has_ts = pc.or_(has_ts, ts.is_valid())
    ok = pc.if_else(
        postgres,
        postgres_ok,
        pc.if_else(sqlserver, _false(n), pc.if_else(mysql, mysql_ok, has_ts)),
    )
    return pc.fill_null(ok, False)  # type: ignore[no-any-return]


def _mysql_ok(fields: dict[str, pa.Array | None], n: int) -> pa.Array | None:
    file, pos = fields["file"], fields["pos"]
    if file is None or pos is None or pa.types.is_null(file.type) or pa.types.is_null(pos.type):
        return _false(n)
    if not pa.types.is_string(file.type):
        return None
    number = pc.extract_regex(file, r"(?P<n>\d{1,6})$")
    digits = pc.struct_field(number, "n")
    file_ok = pc.and_(number.is_valid(), pc.less(pc.cast(pc.fill_null(digits, "0"), pa.int64()), 1 << 22))
    file_ok = pc.and_(file_ok, pc.invert(pc.match_substring_regex(file, r"\d{7,}$")))
    pos_ok = pc.and_(pc.greater_equal(pos, 0), pc.less(pos, 1 << 40))
    return pc.fill_null(pc.and_(file_ok, pos_ok), False)  # type: ignore[no-any-return]


def _commit_micros(source: pa.StructArray) -> tuple[pa.Array, pa.Array] | None:
    """(source commit time in µs or null, rows whose time is in range) as :func:`envelope._commit_ts`."""
    n = len(source)
    us, ms, sec = (_child(source, f) for f in ("ts_us", "ts_ms", "ts_sec"))
    if not all(_typed(a, _INT_TYPES) for a in (us, ms, sec)):
        return None
    ok = pa.array([True] * n, pa.bool_())
    micros = _nulls(n, pa.int64())
    for arr, scale in ((sec, 1_000_000), (ms, 1000), (us, 1)):  # last assigned wins: ts_us, ts_ms, ts_sec
        if arr is None or pa.types.is_null(arr.type):
            continue
        in_range = pc.less(pc.abs(arr), _MAX_MICROS // scale + 1)
        scaled = pc.multiply(pc.if_else(in_range, arr, 0), scale)
        micros = pc.if_else(arr.is_valid(), scaled, micros)
        ok = pc.if_else(arr.is_valid(), in_range, ok)
    micros = pc.if_else(pc.greater(micros, 0), micros, pa.scalar(None, pa.int64()))
    ok = pc.and_(pc.fill_null(ok, False), pc.fill_null(pc.less(micros, _MAX_MICROS), True))
    return micros, ok


# --- one table -----------------------------------------------------------------------------------------


def _build_table(
    table: str,
    idx: list[int],
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    ordinals: Sequence[int],
    key_columns: list[str],
    placeholder: str,
    parsed: pa.Table | None = None,
    parsed_keys: pa.Table | None = None,
) -> TableChanges | None:
    """The table's changes, parsed again on their own unless ``parsed`` holds exactly them (the types of
    other rows must not leak in); ``parsed_keys``: the keys of exactly these events, every one present."""

    def lines() -> list[bytes]:
        return [values[i] or b"" for i in idx]

    try:
        again = parsed is None
        parsed = _read(lines()) if parsed is None else parsed
        fixed = _strings_for_timestamps(parsed, lines)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    env = _envelope(fixed)
    if env is None:
        return None
    if again or fixed is not parsed:
        names, valid = _tables_and_validity(env)
        if not all(valid) or any(name != table for name in names):
            return None
    key_rows = _key_rows([keys[i] for i in idx], parsed_keys)
    if key_rows is _BAD:
        return None

    def unchanged_of(j: int) -> tuple[str, ...]:  # the per-event parser's order of a row's unchanged columns
        result = parse_event(values[idx[j]], keys[idx[j]], placeholder=placeholder)
        return result.unchanged if isinstance(result, ParsedChange) else ()

    ordinals_of = [ordinals[i] for i in idx]
    return _table_changes(table, env, key_rows, ordinals_of, key_columns, placeholder, unchanged_of)


def _strings_for_timestamps(table: pa.Table, lines: Callable[[], list[bytes]]) -> pa.Table:
    """pyarrow reads ISO dates in strings as timestamps; the per-event parser keeps the text."""
    layout = table.schema
    payload = "payload" if "op" not in layout.names and "payload" in layout.names else None
    holder = layout.field(payload).type if payload else layout
    if payload and not pa.types.is_struct(holder):
        return table
    changed = False
    images = []
    for image in ("after", "before"):
        index = holder.get_field_index(image)
        if index < 0 or not pa.types.is_struct(holder.field(index).type):
            continue
        struct = holder.field(index).type
        fields = [
            pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type) else f
            for f in struct
        ]
        changed = changed or any(a.type != b.type for a, b in zip(fields, struct, strict=True))
        images.append(pa.field(image, pa.struct(fields)))
    if not changed:
        return table
    explicit = pa.schema([pa.field(payload, pa.struct(images))] if payload else images)
    return _read(lines(), explicit=explicit)


_BAD = pa.table({})


def _key_rows(raw: list[bytes | None], parsed: pa.Table | None) -> pa.StructArray | pa.Table | None:
    """The event keys as one struct array (null where a message has no key); ``_BAD`` when the columnar
    path cannot read them. ``parsed``: every key, already read."""
    present = (
        list(range(len(raw)))
        if parsed is not None
        else [i for i, k in enumerate(raw) if k and not k.isspace()]
    )
    if not present:
        return None
    try:
        table = parsed if parsed is not None else _read([raw[i] or b"" for i in present])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _BAD
    if "payload" in table.column_names or table.num_columns == 0:
        return _BAD
    struct = pa.StructArray.from_arrays([c.combine_chunks() for c in table.columns], names=table.column_names)
    if len(present) == len(raw):
        return struct
    positions = pa.array([None] * len(raw), pa.int64()).to_pylist()
    for n, i in enumerate(present):
        positions[i] = n
    return struct.take(pa.array(positions, pa.int64()))


def _table_changes(
    table: str,
    env: pa.StructArray,
    key_rows: pa.StructArray | pa.Table | None,
    ordinals: list[int],
    key_columns: list[str],
    placeholder: str,
    unchanged_of: Callable[[int], tuple[str, ...]],
) -> TableChanges | None:
    n = len(env)
    op = _child(env, "op")
    after, before = _child(env, "after"), _child(env, "before")
    assert op is not None
    is_delete = pc.equal(op, "d")
    deletes = pc.any(is_delete).as_py()
    upserts = not pc.all(is_delete).as_py()
    after_fields = list(after.type) if after is not None and pa.types.is_struct(after.type) else []
    before_fields = list(before.type) if before is not None and pa.types.is_struct(before.type) else []
    if deletes and upserts and [f.name for f in after_fields] != [f.name for f in before_fields]:
        return None
    columns = after_fields if upserts else before_fields
    if any(f.type not in _ROW_TYPES for f in [*after_fields, *before_fields]):
        return None
    placeholders = pa.array([placeholder, base64.b64encode(placeholder.encode()).decode()])
    data: list[pa.Array] = []
    data_fields: list[pa.Field] = []
    unchanged_masks: dict[str, pa.Array] = {}
    for f in columns:
        new = _child(after, f.name) if upserts else None
        old = _child(before, f.name) if deletes else None
        types = {a.type for a in (new, old) if a is not None} - {pa.null()}
        if len(types) > 1:
            return None
        if upserts and deletes and (new is None or pa.types.is_null(new.type)) and types:
            return None  # the before-image's type may come from updates, whose before is no row
        type_ = types.pop() if types else pa.string()
        new = pc.cast(new, type_) if new is not None else _nulls(n, type_)
        old = pc.cast(old, type_) if old is not None else _nulls(n, type_)
        if pa.types.is_floating(type_) and _beyond_int64(new, old):
            return None  # may have been an integer beyond int64: the per-event path types it as text
        column = pc.if_else(is_delete, old, new)
        if pa.types.is_string(type_):
            marked = pc.fill_null(pc.is_in(column, placeholders), False)
            if pc.any(marked).as_py():
                unchanged_masks[f.name] = pc.and_(marked, pc.invert(is_delete))
                column = pc.if_else(marked, pa.scalar(None, type_), column)
        data.append(column)
        data_fields.append(pa.field(f.name, type_))
    data_schema = pa.schema(data_fields)
    keys = key_columns or _first_key(key_rows)
    if (
        keys is None
        or any(k not in data_schema.names for k in keys)
        or any(k in unchanged_masks for k in keys)
    ):
        return None
    old_key = _old_key(op, after, before, keys, data_schema, placeholders)
    if old_key is _BAD:
        return None
    source = _child(env, "source")
    assert source is not None
    tx = _child(source, "txId")
    commit = _commit_micros(source)
    assert commit is not None
    schema = change_schema(data_schema, keys)
    system = [
        op,
        pa.array(ordinals, pa.int64()),
        pa.array([0] * n, pa.int64()),
        pc.cast(tx, pa.int64()) if tx is not None else _nulls(n, pa.int64()),
        pc.cast(commit[0], pa.timestamp("us", tz="UTC")),
        old_key if old_key is not None else _nulls(n, schema.field(OLD_KEY_COL).type),
        _unchanged(unchanged_masks, n, unchanged_of),
    ]
    names = [OP_COL, COMMIT_POS_COL, EVENT_POS_COL, TX_ID_COL, COMMIT_TS_COL, OLD_KEY_COL, UNCHANGED_COL]
    assert names == schema.names[: len(names)]
    rows = pa.Table.from_arrays([*system, *data], schema=schema)
    return TableChanges(table, list(keys), data_schema, rows)


def _beyond_int64(*arrays: pa.Array) -> bool:
    return any(
        pc.fill_null(pc.any(pc.greater_equal(pc.abs(a), _INT64_LIMIT)), False).as_py()
        or pc.fill_null(pc.any(pc.invert(pc.is_finite(a))), False).as_py()
        for a in arrays
    )


def _first_key(key_rows: pa.StructArray | pa.Table | None) -> list[str] | None:
    """The field names of the first event key (every key must have every field set)."""
    if key_rows is None:
        return []
    assert isinstance(key_rows, pa.StructArray)
    present = key_rows.filter(key_rows.is_valid())
    if not len(present):
        return []
    if any(present.field(i).null_count for i in range(present.type.num_fields)):
        return None
    return [f.name for f in present.type]


def _old_key(
    op: pa.Array,
    after: pa.Array | None,
    before: pa.Array | None,
    keys: list[str],
    data_schema: pa.Schema,
    placeholders: pa.Array,
) -> pa.Array | pa.Table | None:
    """``ParsedChange.old_key``: the before-image key of updates that changed their key."""
    if not keys or before is None or after is None or not pa.types.is_struct(before.type):
        return None
    updates = pc.and_(pc.equal(op, "u"), before.is_valid())
    if not pc.any(updates).as_py():
        return None
    old, new = [], []
    for k in keys:
        b, a = _child(before, k), _child(after, k)
        if b is None or a is None:
            return _BAD  # a key column missing from an image: the per-event path decides
        if b.type != a.type and not pa.types.is_null(b.type):
            return _BAD
        b = pc.cast(b, data_schema.field(k).type)
        a = pc.cast(a, data_schema.field(k).type)
        # absent and null cannot be told apart here, nor can placeholders: the per-event path decides
        if pc.any(pc.and_(updates, pc.or_(b.is_null(), a.is_null()))).as_py():
            return _BAD
        if pa.types.is_string(b.type) and pc.any(pc.fill_null(pc.is_in(b, placeholders), False)).as_py():
            return _BAD
        old.append(b)
        new.append(a)
    changed = pa.array([False] * len(op), pa.bool_())
    for b, a in zip(old, new, strict=True):
        changed = pc.or_(changed, pc.fill_null(pc.not_equal(b, a), False))
    changed = pc.and_(changed, updates)
    struct = pa.StructArray.from_arrays(old, fields=[data_schema.field(k) for k in keys])
    return pc.if_else(changed, struct, pa.scalar(None, struct.type))  # type: ignore[no-any-return]


def _unchanged(
    masks: dict[str, pa.Array], n: int, unchanged_of: Callable[[int], tuple[str, ...]]
) -> pa.Array:
    """Per row, the columns that held the placeholder, in the row's own key order (one column: known; more:
    asked of the per-event parser, since the JSON key order of a row is not in the parsed table)."""
    if not masks:
        return _nulls(n, pa.list_(pa.string()))
    flags = {name: mask.to_pylist() for name, mask in masks.items()}
    lists: list[list[str] | None] = []
    for i in range(n):
        names = [name for name, f in flags.items() if f[i]]
        lists.append(list(unchanged_of(i)) if len(names) > 1 else names or None)
    return pa.array(lists, pa.list_(pa.string()))
