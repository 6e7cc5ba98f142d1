"""Decoder for PostgreSQL's ``pgoutput`` logical replication protocol (version 1), vectorized.

Input is what ``pg_logical_slot_peek_binary_changes`` returns: one message per row with its LSN. Message
formats follow the PostgreSQL manual, "Logical Replication Message Formats": Begin ``B``, Commit ``C``,
Origin ``O``, Relation ``R``, Type ``Y``, Insert ``I``, Update ``U``, Delete ``D``, Truncate ``T`` and
Message ``M``; TupleData columns are ``n`` null, ``u`` unchanged TOAST, ``t`` text, ``b`` binary.

All messages are joined into one byte buffer and the tuples of a relation are walked column by column
with numpy over every row at once, so the Python work is per column and per Relation message, not per
value. (``pypgoutput`` on PyPI was considered: unmaintained since 2022 and per-message Python objects.)

Bounds rules (a decoder never reads outside the message it decodes):

* Every tuple walk is limited to its own message: a length that is negative, or that runs past the
  message's end, marks the message bad, and a bad row's position stops advancing, so no read index can
  leave ``[message start, message end]``. A change message must end exactly where its last tuple ends.
* A Delete has no new tuple and an Insert no old one: only the tuples a message type has are walked.
* A message that cannot be decoded stops the read with :class:`~hybrid_dagster.errors.DecoderError` naming
  its LSN and message type (``on_malformed="stop"``, the default), or becomes a dead letter
  (``on_malformed="dead_letter"``). Either way the same LSN is never retried in a loop: the error stops
  the run, and a dead letter lets the slot advance past the message.

Binary values (kind ``b``, the ``binary 'true'`` option; decoded by :mod:`.binary`, which states their
rules):

* Within one relation version a column's values are all text or all binary: a message with a text value
  in a column that has binary values is malformed. A ``b`` value of a type outside
  :data:`~.binary.BINARY_TYPES` is malformed (text mode never asks for binary values).
* A value whose length is not its type's size (an ``int8`` that is not 8 bytes, ...), a bad jsonb
  version byte or invalid UTF-8 marks its message malformed, like a bad length: nothing is read outside
  ``[value start, value start + length]``.
* A decoder made with ``binary=True`` checks every relation version of a captured table that has changes
  *before* decoding its values: a column type outside ``BINARY_TYPES`` (e.g. ``ADD COLUMN ... numeric``
  while streaming) raises :class:`~hybrid_dagster.errors.BinaryFormatUnsupported`, whatever
  ``on_malformed`` says, and the source reads again from the acknowledged position in text mode.
* The old key of an update is compared with the new one byte for byte (text or binary alike), so a key
  counts as changed exactly when its text would differ (``-0`` vs ``0`` included).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from hybrid_dagster.cdc.changes import DeadLetter
from hybrid_dagster.cdc.sources.postgres.binary import (
    BINARY_TYPES,
    binary_columns_supported,
    decode_binary,
    text_values,
)
from hybrid_dagster.cdc.sources.postgres.types import (
    PG_EPOCH_US,
    WINDOW,
    PgColumn,
    TextSegment,
    strings_from_slices,
    values_at,
)
from hybrid_dagster.errors import BinaryFormatUnsupported, DecoderError

MSG_BEGIN, MSG_COMMIT, MSG_ORIGIN, MSG_RELATION, MSG_TYPE = b"BCORY"
MSG_INSERT, MSG_UPDATE, MSG_DELETE, MSG_TRUNCATE, MSG_MESSAGE = b"IUDTM"
TUPLE_NEW, TUPLE_KEY, TUPLE_OLD = b"NKO"
KIND_NULL, KIND_UNCHANGED, KIND_TEXT, KIND_BINARY = b"nutb"
_CHANGE_TYPES = np.array([MSG_INSERT, MSG_UPDATE, MSG_DELETE], dtype=np.uint8)
_OP_OF = {MSG_INSERT: ord("c"), MSG_UPDATE: ord("u"), MSG_DELETE: ord("d")}
_BEGIN_SIZE, _COMMIT_SIZE = 21, 26
OnMalformed = Literal["stop", "dead_letter"]


@dataclass(frozen=True)
class Relation:
    """A Relation message: the table a relation OID stands for and its columns at that point."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: list[PgColumn]
    key_flags: list[bool]


@dataclass
class DecodedStream:
    """Decoded changes of one peek: segments per captured table in stream order, and dead letters."""

    segments: dict[str, list[TextSegment]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    last_end_lsn: int | None = None
    """End LSN of the last complete transaction (what the slot may be advanced to)."""
    transactions: int = 0
    ambiguous_nulls: dict[str, int] = field(default_factory=dict)
    """``table.column`` -> float/numeric nulls that may stand for NaN/Infinity (wal2json < 2.4 only)."""

    def add(self, table: str, segment: TextSegment) -> None:
        if len(segment):
            self.segments.setdefault(table, []).append(segment)


def _be(buf: np.ndarray, pos: np.ndarray, dtype: str) -> np.ndarray:
    """Big-endian integers of ``dtype`` ('>u4', '>i8', ...) at byte offsets ``pos`` (clipped in bounds)."""
    return values_at(buf, pos, dtype).astype(np.int64)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(0, pos)
    if end < 0:
        raise ValueError(f"unterminated string at byte {pos}")
    return data[pos:end].decode(), end + 1


def _int(data: bytes, pos: int, size: int, *, signed: bool = False) -> int:
    """The big-endian integer at ``data[pos : pos + size]``; raises ValueError past the end."""
    if pos + size > len(data):
        raise ValueError(f"message ends at byte {len(data)}, inside a {size}-byte integer at byte {pos}")
    return int.from_bytes(data[pos : pos + size], "big", signed=signed)


def parse_relation(data: bytes) -> Relation:
    """Parse a Relation (``R``) message; raises ValueError when it is truncated or overlong."""
    oid = _int(data, 1, 4)
    namespace, pos = _cstring(data, 5)
    name, pos = _cstring(data, pos)
    replica_identity = chr(_int(data, pos, 1))
    ncols = _int(data, pos + 1, 2)
    pos += 3
    columns, key_flags = [], []
    for _ in range(ncols):
        flags = _int(data, pos, 1)
        col_name, pos = _cstring(data, pos + 1)
        type_oid = _int(data, pos, 4)
        typmod = _int(data, pos + 4, 4, signed=True)
        pos += 8
        columns.append(PgColumn(col_name, type_oid, typmod))
        key_flags.append(bool(flags & 1))
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last column")
    return Relation(oid, namespace or "pg_catalog", name, replica_identity, columns, key_flags)


@dataclass
class _Tuples:
    """Column-wise view of TupleData for a set of messages."""

    kinds: list[np.ndarray]
    starts: list[np.ndarray]
    lengths: list[np.ndarray]
    end: np.ndarray
    bad: np.ndarray


def _walk(buf: np.ndarray, pos: np.ndarray, limit: np.ndarray, ncols: int, active: np.ndarray) -> _Tuples:
    """Walk the TupleData at ``pos`` of the ``active`` rows, never past ``limit`` (the message end).

    A row turns bad at the first field that does not fit; from then on its position stays put and its
    fields read as null with length 0, so every start and end stays inside ``[pos, limit]``. Inactive
    rows are not walked (they end at ``pos``, not bad).
    """
    walked = _walk_well_formed(buf, pos, limit, ncols, active)
    return walked if walked is not None else _walk_guarded(buf, pos, limit, ncols, active)


def _walk_well_formed(
    buf: np.ndarray, pos: np.ndarray, limit: np.ndarray, ncols: int, active: np.ndarray
) -> _Tuples | None:
    """:func:`_walk` for the usual case that every active row is well formed, or None if one is not.

    Walks without per-field checks (reads are clipped to the buffer), then checks every row at once:
    the column count, every kind, no negative length, and the last field ending within the message.
    Lengths never negative make positions only grow, so a row whose last field ends within ``limit``
    had every field within it: the result is then exactly :func:`_walk_guarded`'s.
    """
    rows = np.flatnonzero(active)
    if len(rows) == 0:
        none = np.zeros(len(pos), np.int64)
        return _Tuples(
            [np.full(len(pos), KIND_NULL, np.uint8)] * ncols, [pos] * ncols, [none] * ncols, pos, none > 0
        )
    top = len(buf) - 1
    start, end = pos[rows], limit[rows]
    ok = (start + 2 <= end) & (_be(buf, start, ">u2") == ncols)
    p = start + 2
    kinds, starts, lengths = [], [], []
    for _ in range(ncols):
        kind = buf[np.clip(p, 0, top)]
        has_data = (kind == KIND_TEXT) | (kind == KIND_BINARY)
        ok &= has_data | (kind == KIND_NULL) | (kind == KIND_UNCHANGED)
        length = np.where(has_data, _be(buf, p + 1, ">i4"), 0)
        ok &= length >= 0
        kinds.append(kind)
        starts.append(np.where(has_data, p + 5, start))
        lengths.append(length)
        p = p + 1 + np.where(has_data, 4 + length, 0)
    if not (ok & (p <= end)).all():
        return None
    if len(rows) == len(pos):
        return _Tuples(kinds, starts, lengths, p, np.zeros(len(pos), bool))

    def spread(values: np.ndarray, fill: np.ndarray | int) -> np.ndarray:
        out = np.broadcast_to(np.asarray(fill, values.dtype), pos.shape).copy()
        out[rows] = values
        return out

    return _Tuples(
        [spread(k, KIND_NULL) for k in kinds],
        [spread(v, pos) for v in starts],
        [spread(n, 0) for n in lengths],
        spread(p, pos),
        np.zeros(len(pos), bool),
    )


def _walk_guarded(
    buf: np.ndarray, pos: np.ndarray, limit: np.ndarray, ncols: int, active: np.ndarray
) -> _Tuples:
    """:func:`_walk` with every field checked before it is read (any input)."""
    top = len(buf) - 1
    bad = active & ((pos + 2 > limit) | (_be(buf, pos, ">u2") != ncols))
    stopped = bad | ~active
    p = np.where(stopped, pos, pos + 2)
    kinds, starts, lengths = [], [], []
    for _ in range(ncols):
        bad |= ~stopped & (p + 1 > limit)
        stopped |= bad
        kind = np.where(stopped, KIND_NULL, buf[np.clip(p, 0, top)]).astype(np.uint8)
        bad |= ~stopped & ~np.isin(kind, (KIND_NULL, KIND_UNCHANGED, KIND_TEXT, KIND_BINARY))
        has_data = ~stopped & ((kind == KIND_TEXT) | (kind == KIND_BINARY))
        bad |= has_data & (p + 5 > limit)
        stopped |= bad
        has_data &= ~stopped
        length = np.where(has_data, _be(buf, p + 1, ">i4"), 0)
        bad |= has_data & ((length < 0) | (length > limit - (p + 5)))
        stopped |= bad
        has_data &= ~stopped
        length = np.where(has_data, length, 0)
        kinds.append(np.where(stopped, KIND_NULL, kind).astype(np.uint8))
        starts.append(np.where(has_data, p + 5, pos))
        lengths.append(length)
        p = np.where(stopped, p, p + 1 + np.where(has_data, 4 + length, 0))
    return _Tuples(kinds, starts, lengths, p, bad)


@dataclass
class _Frame:
    """One peek's messages in one buffer, with each message's transaction (Begin) fields."""

    joined: bytes
    buf: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    ends: np.ndarray
    lsn: np.ndarray
    mtype: np.ndarray
    is_begin: np.ndarray
    tx_of: np.ndarray
    final_lsn: np.ndarray
    commit_ts: np.ndarray
    xid: np.ndarray
    event: np.ndarray

    @classmethod
    def of(
        cls, joined: bytes, starts: np.ndarray, sizes: np.ndarray, lsns: Sequence[int] | np.ndarray
    ) -> _Frame:
        starts = np.asarray(starts, dtype=np.int64)
        sizes = np.asarray(sizes, dtype=np.int64)
        lsn = np.asarray(lsns, dtype=np.int64)
        buf = np.frombuffer(joined, dtype=np.uint8)
        mtype = np.where(sizes > 0, buf[np.minimum(starts, max(len(buf) - 1, 0))], 0).astype(np.uint8)
        is_begin = (mtype == MSG_BEGIN) & (sizes == _BEGIN_SIZE)
        tx_of = np.maximum.accumulate(np.where(is_begin, np.arange(len(starts)), -1))
        begin_pos = starts[np.maximum(tx_of, 0)]
        return cls(
            joined=joined,
            buf=buf,
            starts=starts,
            sizes=sizes,
            ends=starts + sizes,
            lsn=lsn,
            mtype=mtype,
            is_begin=is_begin,
            tx_of=tx_of,
            final_lsn=_be(buf, begin_pos + 1, ">u8"),
            commit_ts=_be(buf, begin_pos + 9, ">i8") + PG_EPOCH_US,
            xid=_be(buf, begin_pos + 17, ">u4"),
            event=lsn.copy(),
        )

    def message(self, i: int) -> bytes:
        return self.joined[self.starts[i] : self.ends[i]]


class PgOutputDecoder:
    """Decode pgoutput messages into :class:`TextSegment` per captured table.

    ``tables`` maps ``(schema, table)`` to the captured table's name; ``key_columns`` gives each captured
    table's primary key. Changes of other relations are skipped. ``binary`` says the stream was asked for
    binary values (``binary 'true'``): a captured relation with a column type that has no binary decoder
    then raises :class:`~hybrid_dagster.errors.BinaryFormatUnsupported`.

    Example:
        >>> decoder = PgOutputDecoder("postgres://h:5432/db#slot", {("public", "t"): "t"}, {"t": ["id"]})
        >>> decoder.decode([], []).transactions
        0
    """

    def __init__(
        self,
        source: str,
        tables: dict[tuple[str, str], str],
        key_columns: dict[str, list[str]],
        *,
        on_malformed: OnMalformed = "stop",
        binary: bool = False,
    ) -> None:
        if on_malformed not in ("stop", "dead_letter"):
            raise ValueError(f"on_malformed must be 'stop' or 'dead_letter', not {on_malformed!r}")
        self.source = source
        self.tables = tables
        self.key_columns = key_columns
        self.on_malformed = on_malformed
        self.binary = binary

    def decode(
        self, lsns: Sequence[int] | np.ndarray, payloads: Sequence[bytes | memoryview]
    ) -> DecodedStream:
        """Decode one peek's rows (``lsn``, ``data``); a peek always holds whole transactions."""
        sizes = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        starts = np.cumsum(sizes) - sizes
        return self.decode_buffer(b"".join([*payloads, bytes(WINDOW)]), starts, sizes, lsns)

    def decode_buffer(
        self, joined: bytes, starts: np.ndarray, sizes: np.ndarray, lsns: Sequence[int] | np.ndarray
    ) -> DecodedStream:
        """Decode messages lying at ``joined[starts[i] : starts[i] + sizes[i]]``.

        ``joined`` must end with :data:`~hybrid_dagster.cdc.sources.postgres.types.WINDOW` zero bytes (see
        :func:`read_copy_binary`, which returns it so).
        """
        out = DecodedStream()
        if len(starts) == 0:
            return out
        frame = _Frame.of(joined, starts, sizes, lsns)
        out.transactions = int(frame.is_begin.sum())
        is_change = np.isin(frame.mtype, _CHANGE_TYPES) & (frame.sizes >= 6) & (frame.tx_of >= 0)
        frame.event = self._event_positions(frame.lsn, frame.tx_of, is_change | (frame.mtype == MSG_TRUNCATE))
        handled = is_change | frame.is_begin | np.isin(frame.mtype, (MSG_ORIGIN, MSG_TYPE, MSG_MESSAGE))
        relations = self._control_messages(frame, out, np.nonzero(~handled)[0])
        self._change_messages(frame, out, relations, np.nonzero(is_change)[0])
        for segments in out.segments.values():
            segments.sort(key=lambda s: (int(s.commit_pos[0]), int(s.event_pos[0])))
        return out

    def _dead(self, frame: _Frame, out: DecodedStream, i: int, reason: str, table: str | None = None) -> None:
        """Message ``i`` does not decode: raise :class:`DecoderError`, or add a dead letter."""
        if self.on_malformed == "stop":
            where = f", table {table}" if table else ""
            raise DecoderError(
                f"{self.source}: pgoutput message {_type_name(int(frame.mtype[i]))} at LSN "
                f"{_lsn(int(frame.lsn[i]))} ({int(frame.sizes[i])} bytes{where}) cannot be decoded: "
                f"{reason}. "
                "The slot was not advanced. Report it with the LSN; to move such messages to the "
                "dead-letter table and continue, set on_malformed='dead_letter' on the source."
            )
        raw = frame.message(i).hex()
        out.dead_letters.append(DeadLetter(self.source, raw, reason, table, str(int(frame.lsn[i]))))

    def _control_messages(
        self, frame: _Frame, out: DecodedStream, indexes: np.ndarray
    ) -> dict[int, list[tuple[int, Relation]]]:
        """Relation, Commit and Truncate messages (and anything unknown); returns the Relation versions."""
        relations: dict[int, list[tuple[int, Relation]]] = {}
        for i in (int(k) for k in indexes):
            data = frame.message(i)
            kind = frame.mtype[i]
            try:
                if kind == MSG_RELATION:
                    relations.setdefault(_int(data, 1, 4), []).append((i, parse_relation(data)))
                elif kind == MSG_COMMIT and len(data) == _COMMIT_SIZE:
                    out.last_end_lsn = int.from_bytes(data[10:18], "big")
                elif kind in (MSG_BEGIN, MSG_COMMIT):
                    expected = _BEGIN_SIZE if kind == MSG_BEGIN else _COMMIT_SIZE
                    self._dead(frame, out, i, f"{len(data)} bytes, not {expected}")
                elif kind == MSG_TRUNCATE and frame.tx_of[i] >= 0:
                    self._truncate(out, data, relations, i, frame)
                elif kind in _CHANGE_TYPES:
                    self._dead(frame, out, i, "change message outside a transaction or too short")
                else:
                    self._dead(frame, out, i, f"unknown or malformed pgoutput message type {chr(kind)!r}")
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                self._dead(frame, out, i, f"malformed pgoutput message {chr(kind)!r}: {err}")
        return relations

    def _change_messages(
        self,
        frame: _Frame,
        out: DecodedStream,
        relations: dict[int, list[tuple[int, Relation]]],
        change_idx: np.ndarray,
    ) -> None:
        """Insert/Update/Delete messages, decoded per relation version, vectorized."""
        relids = _be(frame.buf, frame.starts[change_idx] + 1, ">u4")
        for relid in np.unique(relids):
            idx = change_idx[relids == relid]
            versions = relations.get(int(relid))
            if not versions:
                for i in idx:
                    self._dead(
                        frame, out, int(i), f"change of relation {relid} without a preceding Relation message"
                    )
                continue
            version_of = np.searchsorted(np.array([v[0] for v in versions]), idx) - 1
            for i in idx[version_of < 0]:
                self._dead(frame, out, int(i), f"change of relation {relid} before its Relation message")
            for v in np.unique(version_of[version_of >= 0]):
                rel = versions[int(v)][1]
                table = self.tables.get((rel.namespace, rel.name))
                if table is None:
                    continue
                if self.binary and not binary_columns_supported(rel.columns):
                    unsupported = [
                        f"{c.name} (type OID {c.type_oid})"
                        for c in rel.columns
                        if c.type_oid not in BINARY_TYPES
                    ]
                    raise BinaryFormatUnsupported(
                        f"{self.source}: table {table} now has column(s) {', '.join(unsupported)} whose "
                        "binary values cannot be decoded (relation message at LSN "
                        f"{_lsn(int(frame.lsn[versions[int(v)][0]]))}). Read this stream in text mode "
                        "(the source does so by itself)."
                    )
                self._relation_changes(frame, out, idx[version_of == v], rel, table)

    def _relation_changes(
        self, frame: _Frame, out: DecodedStream, group: np.ndarray, rel: Relation, table: str
    ) -> None:
        missing = [k for k in self.key_columns.get(table, []) if k not in {c.name for c in rel.columns}]
        if missing:
            for i in group:
                self._dead(
                    frame, out, int(i), f"key column(s) {missing} are not in the relation's columns", table
                )
            return
        segment, bad = self._decode_group(frame.buf, frame.starts[group], frame.ends[group], rel, table)
        for i in group[bad]:
            self._dead(frame, out, int(i), "malformed tuple data", table)
        g = group[~bad]
        segment.commit_pos = frame.final_lsn[g]
        segment.event_pos = frame.event[g]
        segment.tx_id = frame.xid[g]
        segment.commit_ts_us = frame.commit_ts[g]
        out.add(table, segment)

    @staticmethod
    def _event_positions(lsn: np.ndarray, tx_of: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The change LSN, bumped where changes of one transaction share an LSN (multi-insert records)."""
        event = lsn.copy()
        idx = np.nonzero(mask)[0]
        if len(idx) < 2:
            return event
        same_tx = tx_of[idx[1:]] == tx_of[idx[:-1]]
        if not (same_tx & (lsn[idx[1:]] <= lsn[idx[:-1]])).any():
            return event
        prev_tx, prev = -1, -1
        for i in idx:
            value = int(lsn[i])
            if tx_of[i] == prev_tx and value <= prev:
                value = prev + 1
            event[i] = value
            prev_tx, prev = int(tx_of[i]), value
        return event

    def _truncate(
        self,
        out: DecodedStream,
        data: bytes,
        relations: dict[int, list[tuple[int, Relation]]],
        i: int,
        frame: _Frame,
    ) -> None:
        final_lsn, event, xid, commit_ts = frame.final_lsn, frame.event, frame.xid, frame.commit_ts
        nrels = _int(data, 1, 4)
        if len(data) != 6 + 4 * nrels:
            raise ValueError(f"{len(data)} bytes for {nrels} relations (expected {6 + 4 * nrels})")
        for k in range(nrels):
            relid = _int(data, 6 + 4 * k, 4)
            known = [rel for pos, rel in relations.get(relid, []) if pos < i]
            if not known:
                raise ValueError(f"truncate of relation {relid} without a preceding Relation message")
            rel = known[-1]
            table = self.tables.get((rel.namespace, rel.name))
            if table is not None:
                one = np.array([i])
                out.add(
                    table,
                    TextSegment(
                        rel.columns,
                        np.array([ord("t")], np.uint8),
                        final_lsn[one],
                        event[one],
                        xid[one],
                        commit_ts[one],
                        {},
                    ),
                )

    def _decode_group(
        self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rel: Relation, table: str
    ) -> tuple[TextSegment, np.ndarray]:
        """Decode the I/U/D messages of one relation version; returns the segment and a bad-row mask."""
        ncols = len(rel.columns)
        mtype = buf[starts]
        is_insert, is_update, is_delete = mtype == MSG_INSERT, mtype == MSG_UPDATE, mtype == MSG_DELETE
        marker = buf[np.minimum(starts + 5, len(buf) - 1)]
        has_old = (is_update | is_delete) & ((marker == TUPLE_KEY) | (marker == TUPLE_OLD))
        bad = (is_delete & ~has_old) | ((is_insert | (is_update & ~has_old)) & (marker != TUPLE_NEW))

        old = _walk(buf, starts + 6, ends, ncols, has_old & ~bad)
        bad |= old.bad
        new_marker_at = np.where(has_old, old.end, starts + 5)
        has_new = (is_insert | is_update) & ~bad
        bad |= has_new & (
            (new_marker_at >= ends) | (buf[np.clip(new_marker_at, 0, len(buf) - 1)] != TUPLE_NEW)
        )
        has_new &= ~bad
        new = _walk(buf, new_marker_at + 1, ends, ncols, has_new)
        bad |= new.bad
        # A change message ends exactly where its last tuple ends: trailing bytes mean a misread.
        bad |= np.where(is_delete, old.end, new.end) != ends

        values: dict[str, pa.Array] = {}
        unchanged: dict[str, np.ndarray] = {}
        invalid: dict[str, dict[int, str]] = {}
        for j, column in enumerate(rel.columns):
            kind = np.where(is_delete, old.kinds[j], new.kinds[j])
            start = np.where(is_delete, old.starts[j], new.starts[j])
            length = np.where(is_delete, old.lengths[j], new.lengths[j])
            values[column.name], column_bad, column_invalid = _column_values(
                buf, kind, start, length, ~bad, column
            )
            bad |= column_bad
            if column_invalid:
                invalid[column.name] = column_invalid
            unchanged_j = (kind == KIND_UNCHANGED) & ~bad
            if unchanged_j.any():
                unchanged[column.name] = unchanged_j

        keys = self.key_columns.get(table) or [
            c.name for c, f in zip(rel.columns, rel.key_flags, strict=True) if f
        ]
        position = {c.name: j for j, c in enumerate(rel.columns)}
        old_key: dict[str, pa.Array] = {}
        old_key_invalid: dict[str, dict[int, str]] = {}
        old_key_mask = np.zeros(len(starts), dtype=bool)
        old_update = has_old & is_update
        if old_update.any():
            import pyarrow.compute as pc

            for key in keys:
                j = position[key]
                kind = np.where(old_update, old.kinds[j], KIND_NULL)
                old_key[key], key_bad, key_invalid = _column_values(
                    buf, kind, old.starts[j], old.lengths[j], ~bad, rel.columns[j]
                )
                bad |= key_bad
                old_key_invalid[key] = key_invalid
                valid = old_update & np.isin(kind, (KIND_TEXT, KIND_BINARY)) & ~bad
                new_valid = valid & np.isin(new.kinds[j], (KIND_TEXT, KIND_BINARY))
                before = strings_from_slices(buf, old.starts[j], old.lengths[j], valid, binary=True)
                after = strings_from_slices(buf, new.starts[j], new.lengths[j], new_valid, binary=True)
                differs = pc.fill_null(pc.not_equal(before, after), True).to_numpy(zero_copy_only=False)
                old_key_mask |= valid & differs

        ops = np.where(is_insert, ord("c"), np.where(is_update, ord("u"), ord("d"))).astype(np.uint8)
        keep = ~bad
        mask_arr = pa.array(keep)
        kept_at = np.cumsum(keep) - 1
        segment = TextSegment(
            columns=rel.columns,
            ops=ops[keep],
            commit_pos=np.zeros(0, np.int64),
            event_pos=np.zeros(0, np.int64),
            tx_id=np.zeros(0, np.int64),
            commit_ts_us=np.zeros(0, np.int64),
            values={k: v.filter(mask_arr) for k, v in values.items()},
            unchanged={k: v[keep] for k, v in unchanged.items()} or None,
            old_key={k: v.filter(mask_arr) for k, v in old_key.items()} if old_key else None,
            old_key_mask=old_key_mask[keep] if old_key else None,
            invalid=_kept(invalid, keep, kept_at) or None,
            old_key_invalid={
                k: _mask(rows, int(keep.sum())) for k, rows in _kept(old_key_invalid, keep, kept_at).items()
            }
            if old_key
            else None,
        )
        return segment, bad


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _type_name(code: int) -> str:
    names = {
        MSG_BEGIN: "Begin",
        MSG_COMMIT: "Commit",
        MSG_ORIGIN: "Origin",
        MSG_RELATION: "Relation",
        MSG_TYPE: "Type",
        MSG_INSERT: "Insert",
        MSG_UPDATE: "Update",
        MSG_DELETE: "Delete",
        MSG_TRUNCATE: "Truncate",
        MSG_MESSAGE: "Message",
    }
    return f"{names.get(code, 'unknown')} ({code:#04x})"


def _column_values(
    buf: np.ndarray,
    kind: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    live: np.ndarray,
    column: PgColumn,
) -> tuple[pa.Array, np.ndarray, dict[int, str]]:
    """One column's values of the ``live`` rows: text (kind ``t``) as strings, binary (``b``) typed.

    Returns the array, the rows that are malformed (see the module's binary rules) and the text of
    invalid binary values by row.
    """
    is_text = (kind == KIND_TEXT) & live
    is_binary = (kind == KIND_BINARY) & live
    if not is_binary.any():
        values, not_utf8 = text_values(buf, start, length, is_text)
        return values, not_utf8, {}
    if column.type_oid not in BINARY_TYPES:
        return pa.nulls(len(kind), pa.string()), is_binary | is_text, {}
    decoded = decode_binary(buf, start, length, is_binary, column.type_oid)
    return decoded.values, decoded.malformed | is_text, decoded.invalid


def _kept(
    by_row: dict[str, dict[int, str]], keep: np.ndarray, kept_at: np.ndarray
) -> dict[str, dict[int, str]]:
    """Row-keyed entries renumbered to the kept rows (dropped rows' entries left out)."""
    out = {}
    for name, rows in by_row.items():
        kept = {int(kept_at[i]): text for i, text in rows.items() if keep[i]}
        if kept:
            out[name] = kept
    return out


def _mask(rows: dict[int, str], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[list(rows)] = True
    return mask


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_ROW = struct.Struct(">hiqi")


def read_copy_binary(data: bytes) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``COPY (SELECT lsn::int8, data::bytea ...) TO STDOUT (FORMAT binary)`` output.

    Returns the buffer (padded with zero bytes for the decoder) and the messages' starts, sizes and LSNs,
    without copying any message.

    Example:
        >>> buf, starts, sizes, lsns = read_copy_binary(copy_output)  # doctest: +SKIP
        >>> PgOutputDecoder(source, tables, keys).decode_buffer(buf, starts, sizes, lsns)  # doctest: +SKIP
    """
    if not data.startswith(_COPY_SIGNATURE):
        raise ValueError("not PostgreSQL binary COPY output")
    pos = 15 + 4 + int.from_bytes(data[15:19], "big")
    starts: list[int] = []
    sizes: list[int] = []
    lsns: list[int] = []
    unpack = _ROW.unpack_from
    end = len(data) - 2
    while pos < end:
        nfields, lsn_len, lsn, size = unpack(data, pos)
        if nfields != 2 or lsn_len != 8 or size < 0:
            raise ValueError(f"unexpected binary COPY row at byte {pos}")
        starts.append(pos + 18)
        sizes.append(size)
        lsns.append(lsn)
        pos += 18 + size
    return (
        data + bytes(WINDOW),
        np.array(starts, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
        np.array(lsns, dtype=np.int64),
    )
