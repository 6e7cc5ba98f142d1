"""Ordering, watermark filtering and collapsing of change batches (pure pyarrow, no catalog)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.sink import collapse as collapse_module
from hybrid_dagster.cdc.sink.collapse import (
    after_position,
    apply_carried_values,
    carry_forward_in_batch,
    collapse,
    first_position,
    last_position,
    needs_carry_forward,
    order_changes,
)
from hybrid_dagster.errors import CarryForwardError

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])
PAIR = pa.schema([pa.field("a", pa.string()), pa.field("b", pa.int64()), pa.field("v", pa.string())])


def rows(
    items: list[dict[str, Any]], schema: pa.Schema = SCHEMA, keys: tuple[str, ...] = ("id",)
) -> pa.Table:
    return TableChanges.from_rows("t", list(keys), schema, items).rows


def c(op: str, commit: int, event: int, **data: Any) -> dict[str, Any]:
    extra = {f"__{k}": data.pop(k) for k in ("old_key", "unchanged") if k in data}
    return {"__op": op, "__commit_pos": commit, "__event_pos": event, **extra, **data}


def test_order_is_by_commit_then_event_and_stable() -> None:
    table = rows([c("c", 2, 1, id=1), c("c", 1, 5, id=2), c("u", 2, 1, id=3), c("d", 1, 0, id=4)])
    assert order_changes(table)["id"].to_pylist() == [4, 2, 1, 3]
    ordered = order_changes(table)
    assert (first_position(ordered), last_position(ordered)) == (Position(1, 0), Position(2, 1))


def test_after_position_is_strict() -> None:
    table = rows([c("c", 1, 0, id=1), c("c", 1, 1, id=2), c("c", 2, 0, id=3)])
    assert after_position(table, Position(1, 0))["id"].to_pylist() == [2, 3]
    assert after_position(table, Position(2, 0)).num_rows == 0
    assert after_position(table, None).num_rows == 3


def test_last_change_per_key_wins() -> None:
    net = collapse(
        rows(
            [
                c("c", 1, 0, id=1, name="a"),
                c("u", 1, 1, id=1, name="b"),
                c("c", 1, 2, id=2),
                c("d", 1, 3, id=2),
            ]
        ),
        ["id"],
    )
    assert net.upserts.select(["id", "name"]).to_pylist() == [{"id": 1, "name": "b"}]
    assert net.deletes.to_pylist() == [{"id": 2}]
    assert not net.truncated


def test_composite_keys_collapse_per_pair() -> None:
    net = collapse(
        rows(
            [
                c("c", 1, 0, a="x", b=1, v="1"),
                c("c", 1, 1, a="x", b=2, v="2"),
                c("u", 1, 2, a="x", b=1, v="3"),
            ],
            PAIR,
            ("a", "b"),
        ),
        ["a", "b"],
    )
    assert sorted(net.upserts["v"].to_pylist()) == ["2", "3"]


def test_key_change_deletes_the_old_key() -> None:
    net = collapse(
        rows([c("c", 1, 0, id=1, name="a"), c("u", 1, 1, id=5, name="a", old_key={"id": 1})]), ["id"]
    )
    assert net.upserts["id"].to_pylist() == [5]
    assert net.deletes.to_pylist() == [{"id": 1}]
    assert net.history["__op"].to_pylist() == ["c", "d", "u"]


def test_an_update_with_the_same_old_key_is_a_plain_update() -> None:
    net = collapse(rows([c("u", 1, 0, id=1, name="a", old_key={"id": 1})]), ["id"])
    assert net.deletes.num_rows == 0 and net.upserts.num_rows == 1


def test_truncate_drops_everything_before_it() -> None:
    net = collapse(
        rows([c("c", 1, 0, id=1), {"__op": "t", "__commit_pos": 2, "__event_pos": 0}, c("c", 3, 0, id=2)]),
        ["id"],
    )
    assert net.truncated
    assert net.upserts["id"].to_pylist() == [2]
    assert net.touched_keys.to_pylist() == [{"id": 2}]


def test_unchanged_values_come_from_earlier_changes_or_are_pending() -> None:
    net = collapse(
        rows(
            [
                c("c", 1, 0, id=1, name="first"),
                c("u", 1, 1, id=1, unchanged=["name"]),
                c("u", 1, 2, id=2, unchanged=["name"]),
            ]
        ),
        ["id"],
    )
    assert needs_carry_forward(net.upserts)
    found, pending = carry_forward_in_batch(net, ["id"])
    assert list(found.values()) == ["first"]
    assert [(p.column, p.key) for p in pending] == [("name", (2,))]
    filled = apply_carried_values(
        net.upserts, found, pending, lambda keys: {(2,): {"id": 2, "name": "stored"}}
    )
    assert filled.select(["id", "name"]).to_pylist() == [
        {"id": 1, "name": "first"},
        {"id": 2, "name": "stored"},
    ]


def test_unchanged_after_a_delete_cannot_be_known() -> None:
    net = collapse(rows([c("d", 1, 0, id=1), c("u", 1, 1, id=1, unchanged=["name"])]), ["id"])
    with pytest.raises(CarryForwardError, match=r"'name'.*1:1"):
        carry_forward_in_batch(net, ["id"])


def test_a_row_missing_from_the_table_is_never_filled() -> None:
    net = collapse(rows([c("u", 1, 1, id=2, old_key={"id": 1}, unchanged=["name"])]), ["id"])
    found, pending = carry_forward_in_batch(net, ["id"])
    assert found == {} and [(p.key, p.position) for p in pending] == [((1,), Position(1, 1))]
    with pytest.raises(CarryForwardError, match="'name'"):
        apply_carried_values(net.upserts, found, pending, lambda keys: {})
    other_row = {(2,): {"id": 2, "name": "someone else"}}  # a row at the new key is not the moved row
    with pytest.raises(CarryForwardError):
        apply_carried_values(net.upserts, found, pending, lambda keys: other_row)


def test_many_unchanged_values_carry_forward_per_key() -> None:
    # 1k keys, each inserted and then updated 19 times without its TOAST column (20k changes); every
    # 5th key sends a new value half-way. Per-upsert work must not scan the whole history.
    keys, updates = 1000, 19
    items = [c("c", 1, k, id=k, name=f"v{k}") for k in range(keys)]
    for step in range(1, updates + 1):
        for k in range(keys):
            if step == 10 and k % 5 == 0:
                items.append(c("u", 1 + step, k, id=k, name=f"w{k}"))
            else:
                items.append(c("u", 1 + step, k, id=k, unchanged=["name"]))
    net = collapse(order_changes(rows(items)), ["id"])
    found, pending = carry_forward_in_batch(net, ["id"])
    assert pending == [] and len(found) == keys
    filled = apply_carried_values(net.upserts, found, pending, lambda wanted: {})
    assert dict(zip(filled["id"].to_pylist(), filled["name"].to_pylist(), strict=True)) == {
        k: f"w{k}" if k % 5 == 0 else f"v{k}" for k in range(keys)
    }


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("cud"), st.integers(-3, 40)), max_size=40), st.booleans())
def test_a_batch_without_repeated_keys_collapses_as_the_grouping_does(
    changes: list[tuple[str, int]], wide: bool
) -> None:
    """The shortcut for batches whose keys all differ gives what grouping by key gives (and batches with
    a repeated key, or keys too far apart to count, still group)."""
    scale = 10**12 if wide else 1
    items = [c(op, n, 0, id=key * scale, name=f"{op}{n}") for n, (op, key) in enumerate(changes)]
    ordered = order_changes(rows(items))
    net = collapse(ordered, ["id"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collapse_module, "_keys_unique", lambda rows, keys: False)
        grouped = collapse(ordered, ["id"])
    assert net.upserts.equals(grouped.upserts) and net.deletes.equals(grouped.deletes)
    assert net.history.equals(grouped.history)
