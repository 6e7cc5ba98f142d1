"""Parser for wal2json ``format-version 2`` output (one JSON object per change).

Peek with :data:`WAL2JSON_OPTIONS`. Each row is an object with ``action`` (``B`` begin, ``C`` commit,
``I``/``U``/``D`` changes, ``T`` truncate, ``M`` message), ``xid``, ``lsn``, ``timestamp`` and, for
changes, ``schema``, ``table``, ``columns`` ``[{name, type, typeoid, value}]``, ``identity`` (the old key)
and ``pk``. wal2json omits unchanged TOAST columns from an update: they are reported in ``__unchanged``.

Values are read back to PostgreSQL text form (numbers keep their exact digits via ``parse_float=str``)
so :mod:`hybrid_dagster.cdc.sources.postgres.types` converts them exactly like pgoutput's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.cdc.changes import DeadLetter
from hybrid_dagster.cdc.sources.postgres.pgoutput import DecodedStream, OnMalformed
from hybrid_dagster.cdc.sources.postgres.types import BYTEA, PgColumn, TextSegment, typmod_from_type_name
from hybrid_dagster.errors import DecoderError

WAL2JSON_OPTIONS = (
    ("format-version", "2"),
    ("include-lsn", "1"),
    ("include-xids", "1"),
    ("include-timestamp", "1"),
    ("include-pk", "1"),
    ("include-type-oids", "1"),
    ("include-typmod", "1"),
)
NUMERIC_AS_STRING = ("numeric-data-types-as-string", "1")
"""Added when the server's wal2json has it (>= 2.4). Without it wal2json writes float/numeric NaN and
+-Infinity as JSON null, the same as SQL NULL; as strings they arrive in PostgreSQL's text form and convert
exactly like pgoutput's."""
_FLOAT_OIDS = frozenset({700, 701, 1700})
_OPS = {"I": ord("c"), "U": ord("u"), "D": ord("d")}


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> integer LSN.

    Example:
        >>> parse_lsn("0/16B3748")
        23803720
    """
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value is True:
        return "t"
    if value is False:
        return "f"
    return json.dumps(value)


def _value(column: dict[str, Any]) -> str | None:
    text = _text(column["value"])
    if text is not None and int(column["typeoid"]) == BYTEA:
        return "\\x" + text  # wal2json writes bytea's hex output without its leading \x
    return text


@dataclass
class _Accumulator:
    """Rows of one table under one layout, column-wise, as Python lists of text."""

    columns: list[PgColumn]
    ops: list[int] = field(default_factory=list)
    commit_pos: list[int] = field(default_factory=list)
    event_pos: list[int] = field(default_factory=list)
    tx_id: list[int] = field(default_factory=list)
    commit_ts: list[str | None] = field(default_factory=list)
    values: dict[str, list[str | None]] = field(default_factory=dict)
    unchanged: dict[str, list[int]] = field(default_factory=dict)
    old_key: dict[int, dict[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = {c.name: [] for c in self.columns}

    def segment(self) -> TextSegment:
        n = len(self.ops)
        unchanged = {}
        for name, rows in self.unchanged.items():
            mask = np.zeros(n, dtype=bool)
            mask[rows] = True
            unchanged[name] = mask
        old_key: dict[str, pa.Array] | None = None
        old_key_mask: np.ndarray | None = None
        if self.old_key:
            old_key_mask = np.zeros(n, dtype=bool)
            old_key_mask[list(self.old_key)] = True
            names = {k for row in self.old_key.values() for k in row}
            old_key = {
                k: pa.array([self.old_key.get(i, {}).get(k) for i in range(n)], pa.string()) for k in names
            }
        ts = pc.cast(pa.array(self.commit_ts, pa.string()), pa.timestamp("us", tz="UTC")).cast(pa.int64())
        return TextSegment(
            columns=self.columns,
            ops=np.array(self.ops, dtype=np.uint8),
            commit_pos=np.array(self.commit_pos, dtype=np.int64),
            event_pos=np.array(self.event_pos, dtype=np.int64),
            tx_id=np.array(self.tx_id, dtype=np.int64),
            commit_ts_us=ts.to_numpy(zero_copy_only=False).astype(np.int64),
            values={k: pa.array(v, pa.string()) for k, v in self.values.items()},
            unchanged=unchanged or None,
            old_key=old_key,
            old_key_mask=old_key_mask,
        )


class Wal2JsonDecoder:
    """Decode wal2json format-version 2 rows into :class:`TextSegment` per captured table.

    ``catalog`` gives each captured table's current columns; it seeds the layout so that a TOAST column an
    update omits is known to exist (and reported as unchanged).

    Example:
        >>> decoder = Wal2JsonDecoder("postgres://h:5432/db#slot", {("public", "t"): "t"}, {"t": ["id"]}, {})
        >>> begin = '{"action":"B","xid":7,"lsn":"0/1","timestamp":"2024-01-01 00:00:00+00"}'
        >>> out = decoder.decode([1], [begin])
        >>> out.transactions
        1
    """

    def __init__(
        self,
        source: str,
        tables: dict[tuple[str, str], str],
        key_columns: dict[str, list[str]],
        catalog: dict[str, list[PgColumn]],
        *,
        on_malformed: OnMalformed = "stop",
        numbers_as_strings: bool = True,
        ambiguous_nulls: Literal["count", "dead_letter"] = "count",
    ) -> None:
        if on_malformed not in ("stop", "dead_letter"):
            raise ValueError(f"on_malformed must be 'stop' or 'dead_letter', not {on_malformed!r}")
        self.on_malformed = on_malformed
        self.numbers_as_strings = numbers_as_strings
        self.ambiguous_nulls = ambiguous_nulls
        self.source = source
        self.tables = tables
        self.key_columns = key_columns
        self.catalog = catalog

    def decode(self, lsns: Sequence[int], payloads: Sequence[str]) -> DecodedStream:
        """Decode one peek's rows (``lsn``, ``data``)."""
        out = DecodedStream()
        acc: dict[str, _Accumulator] = {}
        layout_cache: dict[tuple[str, tuple[tuple[str, int, str], ...]], list[PgColumn]] = {}
        xid, commit_lsn, ts = 0, 0, None
        prev_event = -1
        loads = json.JSONDecoder(parse_float=str, parse_int=str).decode

        def flush(table: str) -> None:
            if table in acc and acc[table].ops:
                out.add(table, acc[table].segment())
            acc.pop(table, None)

        for lsn, payload in zip(lsns, payloads, strict=True):
            try:
                change = loads(payload)
                action = change["action"]
                if action == "B":
                    xid, commit_lsn, ts = (
                        int(change["xid"]),
                        parse_lsn(change["lsn"]),
                        change.get("timestamp"),
                    )
                    prev_event = -1
                    out.transactions += 1
                    continue
                if action == "C":
                    out.last_end_lsn = parse_lsn(change["nextlsn"]) if "nextlsn" in change else int(lsn)
                    continue
                if action == "M":
                    continue
                if action not in ("I", "U", "D", "T"):
                    raise ValueError(f"unknown wal2json action {action!r}")
                table = self.tables.get((change["schema"], change["table"]))
                if table is None:
                    continue
                ambiguous = self._ambiguous_nulls(action, change)
                for name in ambiguous:
                    key = f"{table}.{name}"
                    out.ambiguous_nulls[key] = out.ambiguous_nulls.get(key, 0) + 1
                if ambiguous and self.ambiguous_nulls == "dead_letter":
                    out.dead_letters.append(
                        DeadLetter(
                            self.source,
                            str(payload),
                            f"column(s) {ambiguous}: this wal2json writes NaN, Infinity and NULL alike as "
                            "null, so the value is unknown and the change is not applied; upgrade wal2json "
                            "to 2.4 or later (numeric-data-types-as-string) or use pgoutput",
                            table,
                            str(lsn),
                        )
                    )
                    continue
                event = max(int(lsn), prev_event + 1)
                prev_event = event
                self._change(acc, layout_cache, flush, table, action, change)
                a = acc[table]
                a.commit_pos.append(commit_lsn)
                a.event_pos.append(event)
                a.tx_id.append(xid)
                a.commit_ts.append(ts)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
                if self.on_malformed == "stop":
                    raise DecoderError(
                        f"{self.source}: wal2json change at LSN {lsn} cannot be decoded "
                        f"({type(err).__name__}). "
                        "The slot was not advanced. To move such changes to the dead-letter table and "
                        "continue, set on_malformed='dead_letter' on the source."
                    ) from None
                out.dead_letters.append(
                    DeadLetter(
                        self.source, str(payload), f"undecodable wal2json change: {err!r}", None, str(lsn)
                    )
                )
        for table in list(acc):
            flush(table)
        return out

    def _ambiguous_nulls(self, action: str, change: dict[str, Any]) -> list[str]:
        """Float/numeric columns holding null where null may stand for NaN or +-Infinity."""
        if self.numbers_as_strings or action not in ("I", "U"):
            return []
        return [
            c["name"]
            for c in change.get("columns") or []
            if c.get("value") is None and int(c["typeoid"]) in _FLOAT_OIDS
        ]

    def _change(
        self,
        acc: dict[str, _Accumulator],
        layout_cache: dict[tuple[str, tuple[tuple[str, int, str], ...]], list[PgColumn]],
        flush: Any,
        table: str,
        action: str,
        change: dict[str, Any],
    ) -> None:
        a = acc.get(table)
        if a is None:
            a = acc[table] = _Accumulator(list(self.catalog.get(table, [])))
        if action == "T":
            a.ops.append(ord("t"))
            for column_values in a.values.values():
                column_values.append(None)
            return
        cols = change.get("columns") or [] if action != "D" else change.get("identity") or []
        signature = tuple((c["name"], int(c["typeoid"]), c["type"]) for c in cols)
        layout = layout_cache.get((table, signature))
        if layout is None or layout is not a.columns:
            layout = self._layout(a.columns, signature)
            if layout is not a.columns:
                flush(table)
                a = acc[table] = _Accumulator(layout)
            layout_cache[(table, signature)] = layout
        # Everything is read before anything is appended: a change that fails half-way must not leave the
        # accumulator's columns of unequal length (later rows would land in the wrong row).
        present = {c["name"]: _value(c) for c in cols}
        old_key: dict[str, str | None] | None = None
        if action == "U" and change.get("identity"):
            old = {c["name"]: _value(c) for c in change["identity"]}
            keys = self.key_columns.get(table) or list(old)
            if any(old.get(k) != present.get(k) for k in keys):
                old_key = {k: old.get(k) for k in keys}
        row = len(a.ops)
        a.ops.append(_OPS[action])
        for name, column_values in a.values.items():
            if name in present:
                column_values.append(present[name])
            else:
                column_values.append(None)
                if action == "U":
                    a.unchanged.setdefault(name, []).append(row)
        if old_key is not None:
            a.old_key[row] = old_key

    @staticmethod
    def _layout(current: list[PgColumn], signature: tuple[tuple[str, int, str], ...]) -> list[PgColumn]:
        """``current`` if the change fits it, else a new layout with added/retyped columns."""
        by_name = {c.name: c for c in current}
        layout = list(current)
        changed = False
        for name, type_oid, type_name in signature:
            column = PgColumn(name, type_oid, typmod_from_type_name(type_name))
            known = by_name.get(name)
            if known is None:
                layout.append(column)
                changed = True
            elif (known.type_oid, known.typmod) != (column.type_oid, column.typmod):
                layout[layout.index(known)] = column
                changed = True
        return layout if changed else current
