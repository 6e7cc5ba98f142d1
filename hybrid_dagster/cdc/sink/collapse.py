"""Turn an ordered stream of changes into the net effect per primary key.

The steps, each vectorized with pyarrow/numpy:

1. :func:`order_changes` - stable sort by ``(__commit_pos, __event_pos)``;
2. :func:`after_position` - drop what the table already holds (at or below its watermark);
3. :func:`collapse` - cut at the last truncate, split key-changing updates into delete(old key) +
   upsert(new key), and keep the last change per key.

Carrying unchanged (TOAST) values forward is the one per-row step, done only for the rows that need
it (:func:`carry_forward_in_batch`, :func:`apply_carried_values`). Rule: a value is carried only from the
same row's own history - an earlier change of its key in the batch, following key changes back to the key
the row had before, and last the table's row at that key as of the watermark (the source's state there).
When that history ends in a delete or in no row at all, the value cannot be known exactly:
:class:`~hybrid_dagster.errors.CarryForwardError`, never NULL and never another row's value.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_DELETE,
    OP_INSERT,
    OP_READ,
    OP_TRUNCATE,
    OP_UPDATE,
    SYSTEM_COLUMNS,
    UNCHANGED_COL,
    Position,
)
from hybrid_dagster.errors import CarryForwardError

ROW_COL = "__row"
"""Index of a change in the ordered, expanded history of the batch."""

UPSERT_OPS = (OP_INSERT, OP_UPDATE, OP_READ)

Key = tuple[Any, ...]


@dataclass
class CollapsedChanges:
    """The net effect of a batch of changes.

    ``upserts`` holds the last after-image per key (data columns, ``__unchanged`` and ``__row``),
    ``deletes`` the key columns of keys whose last change is a delete, and ``history`` the ordered
    changes after the last truncate (key changes expanded, with ``__row``), used to carry unchanged
    values forward.
    """

    truncated: bool
    upserts: pa.Table
    deletes: pa.Table
    history: pa.Table

    @property
    def touched_keys(self) -> pa.Table:
        """Key columns of every key the batch upserts or deletes."""
        keys = list(self.deletes.column_names)
        return pa.concat_tables([self.upserts.select(keys), self.deletes])


def order_changes(rows: pa.Table) -> pa.Table:
    """Sort changes by ``(__commit_pos, __event_pos)``, keeping the input order of ties.

    Example:
        >>> ordered = order_changes(changes.rows)  # doctest: +SKIP
    """
    if rows.num_rows < 2:
        return rows
    commit = rows[COMMIT_POS_COL].to_numpy()
    event = rows[EVENT_POS_COL].to_numpy()
    steps = (commit[1:] > commit[:-1]) | ((commit[1:] == commit[:-1]) & (event[1:] >= event[:-1]))
    if steps.all():
        return rows
    indices = pc.sort_indices(rows, sort_keys=[(COMMIT_POS_COL, "ascending"), (EVENT_POS_COL, "ascending")])
    return rows.take(indices)


def after_position(rows: pa.Table, position: Position | None) -> pa.Table:
    """The changes strictly after ``position`` (all of them when it is None)."""
    if position is None or rows.num_rows == 0:
        return rows
    commit, event = rows[COMMIT_POS_COL], rows[EVENT_POS_COL]
    later = pc.or_(
        pc.greater(commit, position.commit),
        pc.and_(pc.equal(commit, position.commit), pc.greater(event, position.event)),
    )
    return rows.filter(later)


def last_position(rows: pa.Table) -> Position:
    """Position of the last change of ordered, non-empty ``rows``."""
    last = rows.num_rows - 1
    return Position(rows[COMMIT_POS_COL][last].as_py(), rows[EVENT_POS_COL][last].as_py())


def first_position(rows: pa.Table) -> Position:
    """Position of the first change of ordered, non-empty ``rows``."""
    return Position(rows[COMMIT_POS_COL][0].as_py(), rows[EVENT_POS_COL][0].as_py())


def collapse(rows: pa.Table, key_columns: Sequence[str]) -> CollapsedChanges:
    """Reduce ordered changes to the last change per key.

    Example:
        >>> net = collapse(order_changes(changes.rows), ["id"])  # doctest: +SKIP
        >>> net.upserts.num_rows, net.deletes.num_rows, net.truncated  # doctest: +SKIP
        (90000, 10000, False)
    """
    keys = list(key_columns)
    ops = rows[OP_COL]
    truncates = np.flatnonzero(pc.equal(ops, OP_TRUNCATE).to_numpy(zero_copy_only=False))
    truncated = truncates.size > 0
    if truncated:
        rows = rows.slice(int(truncates[-1]) + 1)
    history = _expand_key_changes(rows, keys)
    history = history.append_column(ROW_COL, pa.array(np.arange(history.num_rows, dtype=np.int64)))

    if _keys_unique(history, keys):
        latest = history  # every key's last change is its only one
    else:
        last = (
            history.select([*keys, ROW_COL]).group_by(keys, use_threads=False).aggregate([(ROW_COL, "max")])
        )
        indices = np.sort(last[f"{ROW_COL}_max"].to_numpy())
        latest = history.take(pa.array(indices))
    latest_ops = latest[OP_COL]
    data_columns = [name for name in rows.column_names if name not in SYSTEM_COLUMNS]
    upserts = latest.filter(pc.is_in(latest_ops, value_set=pa.array(UPSERT_OPS))).select(
        [*data_columns, UNCHANGED_COL, ROW_COL]
    )
    deletes = latest.filter(pc.equal(latest_ops, OP_DELETE)).select(keys)
    return CollapsedChanges(truncated=truncated, upserts=upserts, deletes=deletes, history=history)


def _keys_unique(rows: pa.Table, keys: list[str]) -> bool:
    """Whether no key occurs twice, answered cheaply for one integer key column of a narrow range (a
    count per value); False whenever that does not apply (the caller then groups)."""
    if len(keys) != 1 or rows.num_rows == 0:
        return False
    column = rows[keys[0]]
    if not pa.types.is_integer(column.type) or column.null_count:
        return False
    values = column.to_numpy()
    low, high = int(values.min()), int(values.max())
    if high - low > 4 * len(values) + 1024:
        return False
    return int(np.bincount(values - low).max()) <= 1


def _expand_key_changes(rows: pa.Table, keys: list[str]) -> pa.Table:
    """Put a delete of the old key right before every update that changed the primary key."""
    if rows.num_rows == 0:
        return rows
    old_key = rows[OLD_KEY_COL]
    moved = pc.and_(pc.equal(rows[OP_COL], OP_UPDATE), pc.is_valid(old_key))
    differs: pa.ChunkedArray | None = None
    for key in keys:
        old = pc.struct_field(old_key, key).cast(rows.schema.field(key).type)
        change = pc.fill_null(pc.not_equal(old, rows[key]), True)
        differs = change if differs is None else pc.or_(differs, change)
    assert differs is not None
    mask = pc.fill_null(pc.and_(moved, differs), False).to_numpy(zero_copy_only=False)
    if not mask.any():
        return rows

    moved_rows = rows.filter(pa.array(mask))
    count = moved_rows.num_rows
    columns: list[pa.ChunkedArray | pa.Array] = []
    for field in rows.schema:
        if field.name in keys:
            columns.append(pc.struct_field(moved_rows[OLD_KEY_COL], field.name).cast(field.type))
        elif field.name == OP_COL:
            columns.append(pa.array([OP_DELETE] * count, field.type))
        elif field.name in (COMMIT_POS_COL, EVENT_POS_COL, "__tx_id", "__commit_ts"):
            columns.append(moved_rows[field.name])
        else:
            columns.append(pa.nulls(count, field.type))
    deletes = pa.Table.from_arrays(columns, schema=rows.schema)

    positions = np.arange(rows.num_rows, dtype=np.int64)
    order = np.argsort(np.concatenate([2 * positions[mask], 2 * positions + 1]), kind="stable")
    return pa.concat_tables([deletes, rows]).take(pa.array(order))


def needs_carry_forward(upserts: pa.Table) -> bool:
    """Whether any upsert lacks values the source did not send (unchanged TOAST columns)."""
    if upserts.num_rows == 0:
        return False
    lengths = pc.fill_null(pc.list_value_length(upserts[UNCHANGED_COL]), 0)
    return bool(pc.max(lengths).as_py() or 0)


@dataclass(frozen=True)
class PendingValue:
    """An unchanged value the batch cannot supply: it comes from the row ``key`` holds in the table."""

    upsert_index: int
    column: str
    key: Key
    position: Position | None = None
    """Position of the change that left the value unchanged (for error messages)."""


def carry_forward_in_batch(
    changes: CollapsedChanges, key_columns: Sequence[str]
) -> tuple[dict[tuple[int, str], Any], list[PendingValue]]:
    """Find values of unchanged columns in earlier changes of the same key within the batch.

    Returns the values found, by (upsert row index, column), and what must come from the table.
    """
    keys = list(key_columns)
    upserts = changes.upserts
    lengths = pc.fill_null(pc.list_value_length(upserts[UNCHANGED_COL]), 0).to_numpy()
    needing = np.flatnonzero(lengths > 0)
    found: dict[tuple[int, str], Any] = {}
    pending: list[PendingValue] = []
    if needing.size == 0:
        return found, pending

    rows = upserts.take(pa.array(needing)).to_pylist()
    history = _history_of(changes.history, keys, rows)
    by_row = {entry[ROW_COL]: entry for entries in history.values() for entry in entries}
    row_numbers = {key: [e[ROW_COL] for e in entries] for key, entries in history.items()}
    known = set(upserts.column_names) - {UNCHANGED_COL, ROW_COL}
    for index, row in zip(needing.tolist(), rows, strict=True):
        entry = by_row[row[ROW_COL]]
        for column in row[UNCHANGED_COL] or ():
            if column not in known:
                continue
            done, value, key = _walk_back(history, row_numbers, entry, column, keys)
            if done:
                found[(index, column)] = value
            else:
                where = Position(entry[COMMIT_POS_COL], entry[EVENT_POS_COL])
                pending.append(PendingValue(index, column, key, where))
    return found, pending


def history_row(history: dict[Key, list[dict[str, Any]]], upsert: dict[str, Any]) -> dict[str, Any]:
    """The history entry an upsert row came from (a linear scan; index by ``__row`` for many lookups)."""
    for entries in history.values():
        for entry in entries:
            if entry[ROW_COL] == upsert[ROW_COL]:
                return entry
    raise KeyError(upsert[ROW_COL])


def _history_of(
    history: pa.Table, keys: list[str], rows: list[dict[str, Any]]
) -> dict[Key, list[dict[str, Any]]]:
    """Ordered changes per key, for the keys of ``rows`` and every old key they moved from."""
    wanted = {tuple(row[k] for k in keys) for row in rows}
    by_key: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    added: set[int] = set()
    frontier = wanted
    seen: set[Key] = set()
    while frontier:
        seen |= frontier
        mask = _keys_mask(history, keys, frontier)
        subset = history.filter(mask).to_pylist()
        next_keys: set[Key] = set()
        for entry in subset:
            if entry[ROW_COL] in added:
                continue
            added.add(entry[ROW_COL])
            key = tuple(entry[k] for k in keys)
            by_key[key].append(entry)
            old = entry[OLD_KEY_COL]
            if old is not None:
                old_key = tuple(old[k] for k in keys)
                if old_key not in seen:
                    next_keys.add(old_key)
        frontier = next_keys
    for entries in by_key.values():
        entries.sort(key=lambda e: e[ROW_COL])
    return by_key


def _keys_mask(table: pa.Table, keys: list[str], wanted: set[Key]) -> pa.Array:
    mask: pa.ChunkedArray | pa.Array | None = None
    for i, key in enumerate(keys):
        values = pa.array([k[i] for k in wanted], table.schema.field(key).type)
        part = pc.is_in(table[key], value_set=values)
        mask = part if mask is None else pc.and_(mask, part)
    assert mask is not None
    return mask


def _walk_back(
    history: dict[Key, list[dict[str, Any]]],
    row_numbers: dict[Key, list[int]],
    entry: dict[str, Any],
    column: str,
    keys: list[str],
) -> tuple[bool, Any, Key]:
    """Walk back from ``entry`` to the newest earlier change that sent ``column``.

    Returns (found in the batch, value, key whose table row holds the value otherwise). A row that
    moved to a new key continues on its old key, skipping the delete placed right before it.
    ``row_numbers`` holds the ``__row`` of each key's entries (ascending), for bisection.
    """
    key = tuple(entry[k] for k in keys)
    current = entry
    while True:
        limit = current[ROW_COL]
        old = current[OLD_KEY_COL]
        if old is not None and tuple(old[k] for k in keys) != key:
            key = tuple(old[k] for k in keys)
            limit -= 1
        earlier = bisect_left(row_numbers.get(key, []), limit)
        if earlier == 0:
            return False, None, key
        current = history[key][earlier - 1]
        if current[OP_COL] == OP_DELETE:
            raise CarryForwardError(
                f"column {column!r} of the change at {Position(entry[COMMIT_POS_COL], entry[EVENT_POS_COL])} "
                "was not sent (an unchanged value), but the row it updates was deleted earlier in the batch "
                "and not inserted again: the changes are not a consistent history of the table"
            )
        if column not in (current[UNCHANGED_COL] or ()):
            return True, current[column], key


def apply_carried_values(
    upserts: pa.Table,
    found: dict[tuple[int, str], Any],
    pending: list[PendingValue],
    lookup: Callable[[list[Key]], dict[Key, dict[str, Any]]],
) -> pa.Table:
    """Write carried-forward values into ``upserts``; ``lookup`` gives existing table rows by key."""
    values = dict(found)
    if pending:
        existing = lookup(sorted({p.key for p in pending}, key=repr))
        unknown = [p for p in pending if p.key not in existing]
        if unknown:
            columns = sorted({p.column for p in unknown})
            first = min((p.position for p in unknown if p.position is not None), default=None)
            raise CarryForwardError(
                f"{len(unknown)} values of column(s) {columns} were not sent (unchanged values), first in "
                f"the change at {first or '?'}, and the table does not hold the rows those changes update, "
                "so they cannot be known exactly"
            )
        for item in pending:
            values[(item.upsert_index, item.column)] = existing[item.key].get(item.column)
    if not values:
        return upserts
    by_column: dict[str, dict[int, Any]] = defaultdict(dict)
    for (index, column), value in values.items():
        by_column[column][index] = value
    for column, patches in by_column.items():
        position = upserts.schema.get_field_index(column)
        field = upserts.schema.field(position)
        data = upserts[column].to_pylist()
        for index, value in patches.items():
            data[index] = value
        upserts = upserts.set_column(position, field, pa.array(data, field.type))
    return upserts
