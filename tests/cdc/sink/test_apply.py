"""IcebergApplier against a real SqlCatalog on SQLite: semantics, idempotence, pruning, retries."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException

from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.sink.apply import ApplyResult, IcebergApplier, SchemaEvolutionError
from hybrid_dagster.cdc.sink.changelog import ChangelogWriter
from hybrid_dagster.cdc.sink.watermark import POSITION_PROPERTY, SOURCE_PROPERTY
from hybrid_dagster.errors import CarryForwardError

SCHEMA = pa.schema(
    [pa.field("id", pa.int64()), pa.field("name", pa.string()), pa.field("score", pa.float64())]
)
COMPOSITE = pa.schema(
    [pa.field("region", pa.string()), pa.field("n", pa.int32()), pa.field("note", pa.string())]
)


def make_catalog(path: Path) -> SqlCatalog:
    path.mkdir(parents=True, exist_ok=True)
    return SqlCatalog("test", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return make_catalog(tmp_path)


def change(op: str, commit: int, event: int = 0, **data: Any) -> dict[str, Any]:
    """One change row; ``old_key``/``unchanged`` map to the system columns."""
    row = {"__op": op, "__commit_pos": commit, "__event_pos": event}
    if "old_key" in data:
        row["__old_key"] = data.pop("old_key")
    if "unchanged" in data:
        row["__unchanged"] = data.pop("unchanged")
    return {**row, **data}


def batch(
    rows: list[dict[str, Any]], schema: pa.Schema = SCHEMA, keys: tuple[str, ...] = ("id",)
) -> TableChanges:
    return TableChanges.from_rows("t", list(keys), schema, rows)


def content(catalog: Catalog, identifier: str, keys: tuple[str, ...] = ("id",)) -> list[dict[str, Any]]:
    rows = catalog.load_table(identifier).scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


# -- reference model -----------------------------------------------------------------------------------


def reference_apply(
    state: dict[tuple[Any, ...], dict[str, Any]],
    watermark: tuple[int, int] | None,
    rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    columns: list[str],
) -> tuple[int, int] | None:
    """The obvious per-row semantics: ordered, after the watermark, last change wins, TOAST carried."""
    ordered = sorted(rows, key=lambda r: (r["__commit_pos"], r["__event_pos"]))
    for row in ordered:
        position = (row["__commit_pos"], row["__event_pos"])
        if watermark is not None and position <= watermark:
            continue
        op = row["__op"]
        if op == "t":
            state.clear()
            continue
        key = tuple(row[k] for k in keys)
        if op == "d":
            state.pop(key, None)
            continue
        old = row.get("__old_key")
        old_key = tuple(old[k] for k in keys) if old is not None else key
        previous = state.pop(old_key, None) if op == "u" and old_key != key else state.get(key)
        new = {c: row.get(c) for c in columns}
        for column in row.get("__unchanged") or ():
            # the row's own earlier value; without one it cannot be known (the apply must stop)
            new[column] = previous.get(column) if previous else UNKNOWN
        state[key] = new
    if ordered:
        last = max((r["__commit_pos"], r["__event_pos"]) for r in ordered)
        watermark = last if watermark is None else max(watermark, last)
    return watermark


UNKNOWN = object()
"""A carried value the history does not hold: the apply raises CarryForwardError instead of guessing."""


def unknowable(state: dict[tuple[Any, ...], dict[str, Any]]) -> bool:
    return any(value is UNKNOWN for row in state.values() for value in row.values())


names = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["Zoë", "東京", "a\u0301", "🙂"]))


@st.composite
def workloads(draw: st.DrawFn, composite: bool) -> list[list[dict[str, Any]]]:
    """Two or three batches of random changes over a small key space (so keys collide)."""
    if composite:
        key_values = st.tuples(st.sampled_from(["eu", "us", "ü"]), st.integers(0, 3))
    else:
        key_values = st.tuples(st.integers(0, 12))
    batches: list[list[dict[str, Any]]] = []
    commit = 0
    for _ in range(draw(st.integers(1, 3))):
        rows: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(0, 14))):
            commit += draw(st.integers(0, 2))
            op = draw(
                st.sampled_from(["c", "u", "u", "d", "r", "t"] if draw(st.booleans()) else ["c", "u", "d"])
            )
            key = draw(key_values)
            position = (commit, draw(st.integers(0, 3)))
            rows.append(_random_row(draw, op, key, position, key_values, composite))
        if draw(st.booleans()) and batches:
            rows.extend(draw(st.sampled_from(batches)))  # at-least-once: an old batch delivered again
        batches.append(rows)
    return batches


def _random_row(
    draw: st.DrawFn,
    op: str,
    key: tuple[Any, ...],
    position: tuple[int, int],
    key_values: st.SearchStrategy[tuple[Any, ...]],
    composite: bool,
) -> dict[str, Any]:
    key_names = ("region", "n") if composite else ("id",)
    row: dict[str, Any] = change(op, *position, **dict(zip(key_names, key, strict=True)))
    if op == "t":
        return {"__op": "t", "__commit_pos": position[0], "__event_pos": position[1]}
    if op == "d":
        return row
    if composite:
        row["note"] = draw(names)
    else:
        row["name"] = draw(names)
        row["score"] = draw(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)))
    if op == "u" and draw(st.integers(0, 3)) == 0:
        old = draw(key_values)
        row["__old_key"] = dict(zip(key_names, old, strict=True))
    if op in ("u", "c") and draw(st.integers(0, 3)) == 0:
        row["__unchanged"] = ["note"] if composite else [draw(st.sampled_from(["name", "score"]))]
    return row


@pytest.mark.parametrize("composite", [False, True], ids=["int-key", "composite-key"])
@pytest.mark.parametrize("file_size", [64 * 1024 * 1024, 256], ids=["one-file", "tiny-files"])
def test_matches_reference_model(tmp_path: Path, composite: bool, file_size: int) -> None:
    catalog = make_catalog(tmp_path)
    schema, keys = (COMPOSITE, ("region", "n")) if composite else (SCHEMA, ("id",))
    columns = schema.names
    applier = IcebergApplier(catalog, source_id="model", target_file_size_bytes=file_size)

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(workloads(composite))
    def check(batches: list[list[dict[str, Any]]]) -> None:
        identifier = f"model.t_{uuid.uuid4().hex[:12]}"
        applier.ensure_table(identifier, schema, list(keys))
        state: dict[tuple[Any, ...], dict[str, Any]] = {}
        watermark: tuple[int, int] | None = None
        for rows in batches:
            watermark = reference_apply(state, watermark, rows, keys, columns)
            if unknowable(state):
                before = catalog.load_table(identifier).current_snapshot()
                with pytest.raises(CarryForwardError):
                    applier.apply(identifier, batch(rows, schema, keys))
                assert catalog.load_table(identifier).current_snapshot() == before  # nothing written
                return
            result = applier.apply(identifier, batch(rows, schema, keys))
            expected = sorted(state.values(), key=lambda r: tuple(r[k] for k in keys))
            assert content(catalog, identifier, keys) == expected
            assert result.row_count == len(expected)
            if watermark is not None:
                assert result.watermark == Position(*watermark)

    check()


def test_replay_is_a_noop(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    changes = batch([change("c", 10, 1, id=1, name="a"), change("c", 10, 2, id=2, name="b")])
    first = applier.apply("db.t", changes)
    snapshot = catalog.load_table("db.t").current_snapshot()
    again = applier.apply("db.t", changes)

    assert (first.inserted, first.events_skipped) == (2, 0)
    assert again.snapshot_id is None
    assert (again.events_received, again.events_skipped, again.inserted) == (2, 2, 0)
    assert again.watermark == Position(10, 2)
    assert catalog.load_table("db.t").current_snapshot() == snapshot


def test_partial_replay_applies_only_the_new_tail(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 10, 1, id=1, name="a")]))
    result = applier.apply(
        "db.t", batch([change("c", 10, 1, id=1, name="stale"), change("u", 11, 1, id=1, name="new")])
    )
    assert (result.events_skipped, result.updated) == (1, 1)
    assert content(catalog, "db.t") == [{"id": 1, "name": "new", "score": None}]


def test_watermark_read_back_from_a_fresh_catalog(tmp_path: Path) -> None:
    IcebergApplier(make_catalog(tmp_path), source_id="pg").apply(
        "db.t", batch([change("c", 7, 3, id=1), change("d", 9, 1, id=1)])
    )
    fresh = IcebergApplier(make_catalog(tmp_path), source_id="pg")
    assert fresh.watermark("db.t") == Position(9, 1)
    assert IcebergApplier(make_catalog(tmp_path), source_id="other").watermark("db.t") is None
    assert fresh.watermark("db.missing") is None


def test_watermark_is_not_hidden_by_other_writers(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 5, 0, id=1, name="a")]))
    table = catalog.load_table("db.t")
    table.append(
        pa.Table.from_pylist([{"id": 99, "name": "x", "score": None}], schema=table.schema().as_arrow())
    )
    IcebergApplier(catalog, source_id="other").apply("db.t", batch([change("c", 1, 0, id=50)]))

    assert applier.watermark("db.t") == Position(5, 0)
    assert applier.apply("db.t", batch([change("c", 5, 0, id=1, name="a")])).events_skipped == 1


def test_snapshot_summary_and_single_snapshot_per_apply(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=i, name=str(i)) for i in range(5)]))
    before = len(catalog.load_table("db.t").metadata.snapshots)
    result = applier.apply("db.t", batch([change("u", 2, 0, id=1, name="x"), change("d", 2, 1, id=2)]))

    table = catalog.load_table("db.t")
    assert len(table.metadata.snapshots) == before + 1
    summary = table.current_snapshot().summary
    assert summary[SOURCE_PROPERTY] == "pg"
    assert summary[POSITION_PROPERTY] == "2:1"
    assert summary["hybrid.cdc.updated"] == "1" and summary["hybrid.cdc.deleted"] == "1"
    assert summary["deleted-data-files"] == "1" and summary["added-data-files"] == "1"
    assert (result.files_rewritten, result.files_added, result.row_count) == (1, 1, 4)


def test_key_change_is_delete_then_upsert(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="a", score=1.5)]))
    result = applier.apply("db.t", batch([change("u", 2, 0, id=7, name="a", score=2.5, old_key={"id": 1})]))
    assert content(catalog, "db.t") == [{"id": 7, "name": "a", "score": 2.5}]
    assert (result.inserted, result.deleted) == (1, 1)


def test_truncate_clears_and_later_changes_apply(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, i, id=i, name="old") for i in range(4)]))
    result = applier.apply(
        "db.t",
        batch(
            [
                change("u", 2, 0, id=0, name="gone"),
                {"__op": "t", "__commit_pos": 3, "__event_pos": 0},
                change("c", 4, 0, id=3, name="new", score=1.0),
                change("u", 4, 1, id=3, name="upd", unchanged=["score"]),
            ]
        ),
    )
    assert result.truncated and result.files_rewritten == 1
    assert content(catalog, "db.t") == [{"id": 3, "name": "upd", "score": 1.0}]


def test_unchanged_value_after_a_truncate_without_insert_stops(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=9, name="old", score=5.0)]))
    changes = [
        {"__op": "t", "__commit_pos": 3, "__event_pos": 0},
        change("u", 4, 1, id=9, name="upd", unchanged=["score"]),
    ]
    with pytest.raises(CarryForwardError, match=r"db\.t"):
        applier.apply("db.t", batch(changes))
    assert applier.watermark("db.t") == Position(1, 0)


def test_toast_carried_forward_within_the_batch(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply(
        "db.t",
        batch(
            [
                change("c", 1, 0, id=1, name="long text", score=1.0),
                change("u", 1, 1, id=1, name=None, score=2.0, unchanged=["name"]),
                change("u", 1, 2, id=1, name=None, score=3.0, unchanged=["name"]),
            ]
        ),
    )
    assert content(catalog, "db.t") == [{"id": 1, "name": "long text", "score": 3.0}]


def test_toast_carried_forward_from_the_table(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, i, id=i, name=f"doc {i}", score=float(i)) for i in range(3)]))
    applier.apply(
        "db.t",
        batch(
            [
                change("u", 2, 0, id=1, name=None, score=10.0, unchanged=["name"]),
                change("u", 2, 1, id=5, name=None, score=50.0, old_key={"id": 2}, unchanged=["name"]),
            ]
        ),
    )
    assert content(catalog, "db.t") == [
        {"id": 0, "name": "doc 0", "score": 0.0},
        {"id": 1, "name": "doc 1", "score": 10.0},
        {"id": 5, "name": "doc 2", "score": 50.0},
    ]


def test_swapped_keys_keep_their_own_unchanged_values(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="A"), change("c", 1, 1, id=2, name="B")]))
    applier.apply(  # one transaction: 1 -> -1, 2 -> 1, -1 -> 2, names not sent
        "db.t",
        batch(
            [
                change("u", 2, 0, id=-1, score=1.0, old_key={"id": 1}, unchanged=["name"]),
                change("u", 2, 1, id=1, score=2.0, old_key={"id": 2}, unchanged=["name"]),
                change("u", 2, 2, id=2, score=3.0, old_key={"id": -1}, unchanged=["name"]),
            ]
        ),
    )
    assert content(catalog, "db.t") == [
        {"id": 1, "name": "B", "score": 2.0},
        {"id": 2, "name": "A", "score": 3.0},
    ]


def test_unchanged_value_of_a_row_the_table_lacks_stops_the_batch(catalog: SqlCatalog) -> None:
    """Never NULL, never another row's value: the batch stops, naming table, column, position."""
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="secret dossier", score=1.0)]))
    changes = batch(
        [
            change("u", 2, 0, id=3, score=2.0, unchanged=["name"]),  # no row 3 anywhere
            change("u", 2, 1, id=4, score=3.0, old_key={"id": 5}, unchanged=["name"]),  # nor 5
        ]
    )
    with pytest.raises(CarryForwardError) as raised:
        applier.apply("db.t", changes)
    message = str(raised.value)
    assert "db.t" in message and "'name'" in message and "2:0" in message and "secret" not in message
    assert content(catalog, "db.t") == [{"id": 1, "name": "secret dossier", "score": 1.0}]
    assert applier.watermark("db.t") == Position(1, 0)


def test_rewrites_only_files_that_can_hold_touched_keys(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    position = itertools.count(1)
    for start in range(0, 500, 100):  # five batches of new keys: five files with disjoint key ranges
        result = applier.apply(
            "db.t", batch([change("c", next(position), 0, id=i) for i in range(start, start + 100)])
        )
        assert (result.files_rewritten, result.files_added) == (0, 1)

    touch_two = applier.apply(
        "db.t",
        batch([change("u", next(position), 0, id=150, name="x"), change("d", next(position), 0, id=420)]),
    )
    assert (touch_two.files_rewritten, touch_two.files_added) == (2, 2)
    assert (touch_two.updated, touch_two.deleted) == (1, 1)

    new_keys_only = applier.apply("db.t", batch([change("c", next(position), 0, id=10_000)]))
    assert (new_keys_only.files_rewritten, new_keys_only.files_added) == (0, 1)

    again = applier.apply("db.t", batch([change("u", next(position), 0, id=160, name="y")]))
    assert again.files_rewritten == 1
    assert content(catalog, "db.t")[150] == {"id": 150, "name": "x", "score": None}
    assert catalog.load_table("db.t").scan().count() == 500


class _ConcurrentWriter(ChangelogWriter):
    """A changelog whose first write lets another writer commit first (between planning and commit)."""

    def __init__(self, root: Path, interfere: Any) -> None:
        super().__init__(str(root))
        self.interfere = interfere
        self.writes = 0

    def write(self, identifier: str, changes: TableChanges) -> list[str]:
        self.writes += 1
        if self.writes == 1:
            self.interfere()
        return super().write(identifier, changes)


def other_writer_appends(catalog_dir: Path) -> None:
    """Another writer commits to db.t between our planning and our commit."""
    table = make_catalog(catalog_dir).load_table("db.t")
    table.append(pa.Table.from_pylist([{"id": 2, "name": "other"}], schema=table.schema().as_arrow()))


def test_concurrent_append_is_retried(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    IcebergApplier(catalog, source_id="pg").apply("db.t", batch([change("c", 1, 0, id=1, name="a")]))

    log = _ConcurrentWriter(tmp_path / "log", partial(other_writer_appends, tmp_path / "catalog"))
    result = IcebergApplier(catalog, source_id="pg", changelog=log).apply(
        "db.t", batch([change("u", 2, 0, id=1, name="b"), change("c", 2, 1, id=3, name="c")])
    )
    assert log.writes == 2
    assert result.watermark == Position(2, 1)
    assert [r["name"] for r in content(catalog, "db.t")] == ["b", "other", "c"]


def test_same_batch_from_two_appliers_lands_once(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    changes = batch([change("c", 3, 0, id=1, name="a"), change("c", 3, 1, id=2, name="b")])
    IcebergApplier(catalog, source_id="pg").ensure_table("db.t", SCHEMA, ["id"])
    twin = IcebergApplier(make_catalog(tmp_path / "catalog"), source_id="pg")
    log = _ConcurrentWriter(tmp_path / "log", lambda: twin.apply("db.t", changes))

    result = IcebergApplier(catalog, source_id="pg", changelog=log).apply("db.t", changes)
    assert result.snapshot_id is None and result.events_skipped == 2
    assert len(content(catalog, "db.t")) == 2


def test_before_write_hook_guards_every_write(catalog: SqlCatalog) -> None:
    calls: list[str] = []

    def refuse(identifier: str) -> None:
        calls.append(identifier)
        raise PermissionError(f"{identifier} may not be written in this plane")

    with pytest.raises(PermissionError):
        IcebergApplier(catalog, source_id="pg", before_write=refuse).apply(
            "db.t", batch([change("c", 1, 0, id=1)])
        )
    assert calls == ["db.t"]
    assert not catalog.table_exists("db.t")

    allowed: list[str] = []
    applier = IcebergApplier(catalog, source_id="pg", before_write=allowed.append)
    applier.apply("db.t", batch([change("c", 1, 0, id=1)]))
    applier.apply("db.t", batch([change("c", 2, 0, id=2)]))
    applier.apply("db.t", batch([change("c", 2, 0, id=2)]))  # nothing new: nothing written, no call
    assert allowed == ["db.t", "db.t"]


def test_empty_batch_keeps_the_watermark(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 4, 0, id=1)]))
    result = applier.apply("db.t", batch([]))
    assert result == ApplyResult(
        identifier="db.t",
        snapshot_id=None,
        events_received=0,
        events_skipped=0,
        watermark=Position(4, 0),
        schema_id=result.schema_id,
        row_count=1,
        duration_s=result.duration_s,
    )


def test_deletes_of_missing_keys_still_advance_the_watermark(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1)]))
    result = applier.apply("db.t", batch([change("d", 2, 0, id=42)]))
    assert (result.deleted, result.files_rewritten, result.files_added) == (0, 0, 0)
    assert applier.watermark("db.t") == Position(2, 0)


def test_ensure_table_sets_identifier_fields(catalog: SqlCatalog) -> None:
    table = IcebergApplier(catalog, source_id="pg").ensure_table("a.b.t", COMPOSITE, ["region", "n"])
    assert sorted(table.schema().identifier_field_names()) == ["n", "region"]
    assert table.schema().find_field("region").required
    assert not table.schema().find_field("note").required


@pytest.mark.parametrize(
    ("key_type", "make_key"),
    [
        (pa.int32(), lambda i: i),
        (pa.string(), lambda i: f"customer-with-a-long-key-{i:04d}"),
        (pa.date32(), lambda i: date(2024, 1, 1) + timedelta(days=i)),
        (pa.timestamp("us", tz="UTC"), lambda i: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i)),
    ],
    ids=["int32", "string", "date", "timestamp"],
)
def test_pruning_works_for_key_types(catalog: SqlCatalog, key_type: pa.DataType, make_key: Any) -> None:
    schema = pa.schema([pa.field("k", key_type), pa.field("v", pa.string())])
    applier = IcebergApplier(catalog, source_id="pg")
    for part in range(3):
        rows = [change("c", part, i, k=make_key(part * 10 + i), v="a") for i in range(10)]
        applier.apply("db.t", batch(rows, schema, ("k",)))
    result = applier.apply("db.t", batch([change("u", 5, 0, k=make_key(15), v="b")], schema, ("k",)))
    assert (result.files_rewritten, result.updated) == (1, 1)
    values = {r["k"]: r["v"] for r in catalog.load_table("db.t").scan().to_arrow().to_pylist()}
    assert len(values) == 30 and values[make_key(15)] == "b"


def test_a_key_iceberg_cannot_identify_by_is_refused(catalog: SqlCatalog) -> None:
    schema = pa.schema([pa.field("k", pa.float64()), pa.field("v", pa.string())])
    with pytest.raises(SchemaEvolutionError, match="float or double"):
        IcebergApplier(catalog, source_id="pg").ensure_table("db.t", schema, ["k"])


def changelog_rows(root: Path) -> list[tuple[int, int]]:
    import pyarrow.parquet as pq

    return sorted(
        (r["__commit_pos"], r["__event_pos"])
        for path in root.rglob("*.parquet")
        for r in pq.read_table(path).to_pylist()
    )


def test_concurrent_retry_logs_each_change_once(tmp_path: Path) -> None:
    # Another writer of the same source commits the first change while this attempt is in flight: the
    # retry starts after the moved watermark (a file under another name); the rejected attempt's file
    # must not keep the changes the retry logs again.
    catalog = make_catalog(tmp_path / "catalog")
    IcebergApplier(catalog, source_id="pg").apply("db.t", batch([change("c", 1, 0, id=1, name="a")]))
    first = change("u", 2, 0, id=1, name="b")
    twin = IcebergApplier(make_catalog(tmp_path / "catalog"), source_id="pg")
    log = _ConcurrentWriter(tmp_path / "log", lambda: twin.apply("db.t", batch([first])))

    result = IcebergApplier(catalog, source_id="pg", changelog=log).apply(
        "db.t", batch([first, change("c", 2, 1, id=3, name="c")])
    )
    assert log.writes >= 2 and result.watermark == Position(2, 1) and result.events_skipped == 1
    assert changelog_rows(tmp_path / "log") == [(2, 0), (2, 1)]
    assert [r["name"] for r in content(catalog, "db.t")] == ["b", "c"]


def test_rejected_commit_without_a_moved_watermark_leaves_one_log_file(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    IcebergApplier(catalog, source_id="pg").apply("db.t", batch([change("c", 1, 0, id=1, name="a")]))

    log = _ConcurrentWriter(tmp_path / "log", partial(other_writer_appends, tmp_path / "catalog"))
    IcebergApplier(catalog, source_id="pg", changelog=log).apply(
        "db.t", batch([change("u", 2, 0, id=1, name="b"), change("c", 2, 1, id=3, name="c")])
    )
    assert changelog_rows(tmp_path / "log") == [(2, 0), (2, 1)]


def test_commit_with_unknown_outcome_keeps_the_written_files(tmp_path: Path) -> None:
    # The catalog call fails in a way that does not say whether the commit happened (here: its database
    # is locked by another process when the pointer is swapped). The snapshot may point at the new
    # files, so they must stay; only a rejected commit may delete them.
    import sqlite3

    root = tmp_path / "catalog"
    root.mkdir()
    catalog = SqlCatalog(
        "test", uri=f"sqlite:///{root}/catalog.db?timeout=0.2", warehouse=f"file://{root}/warehouse"
    )
    IcebergApplier(catalog, source_id="pg").apply("db.t", batch([change("c", 1, 0, id=1, name="a")]))
    data_dir = root / "warehouse"
    before = set(data_dir.rglob("*.parquet"))
    blocker = sqlite3.connect(root / "catalog.db", isolation_level=None)
    log = _ConcurrentWriter(tmp_path / "log", lambda: blocker.execute("BEGIN IMMEDIATE"))
    try:
        with pytest.raises(Exception, match="locked") as raised:
            IcebergApplier(catalog, source_id="pg", changelog=log).apply(
                "db.t", batch([change("u", 2, 0, id=1, name="b")])
            )
        assert not isinstance(raised.value, CommitFailedException)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    written = set(data_dir.rglob("*.parquet")) - before
    assert written, "the files of a commit with unknown outcome were deleted"
    assert changelog_rows(tmp_path / "log") == [(2, 0)]
    # Here the commit did not happen: applying again converges.
    result = IcebergApplier(catalog, source_id="pg").apply("db.t", batch([change("u", 2, 0, id=1, name="b")]))
    assert result.watermark == Position(2, 0) and [r["name"] for r in content(catalog, "db.t")] == ["b"]
