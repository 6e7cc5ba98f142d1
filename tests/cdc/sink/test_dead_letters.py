"""The dead letter table: created on first write, append-only, raw payload kept as a string."""

from __future__ import annotations

from pathlib import Path

from hybrid_dagster.cdc.changes import DeadLetter
from hybrid_dagster.cdc.sink.dead_letters import DeadLetterTable
from tests.cdc.sink.test_apply import make_catalog


def test_created_on_first_write_and_appended(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path)
    letters = DeadLetterTable(catalog, "cdc.dead_letters")
    assert letters.write([]) == 0
    assert not catalog.table_exists("cdc.dead_letters")

    raw = '{"payload": {"op": "u", "after": {"id": 1, "name": "Zoë"}'  # truncated JSON
    assert (
        letters.write(
            [DeadLetter(source="pg", raw=raw, reason="invalid JSON", table="public.t", position="5:1")]
        )
        == 1
    )
    assert (
        DeadLetterTable(catalog, "cdc.dead_letters").write(
            [DeadLetter(source="kafka", raw="\x00?", reason="x")]
        )
        == 1
    )

    rows = sorted(
        catalog.load_table("cdc.dead_letters").scan().to_arrow().to_pylist(), key=lambda r: r["source"]
    )
    assert [(r["source"], r["table"], r["position"], r["raw"], r["reason"]) for r in rows] == [
        ("kafka", None, None, "\x00?", "x"),
        ("pg", "public.t", "5:1", raw, "invalid JSON"),
    ]
    assert all(r["received_at"].tzinfo is not None for r in rows)
    assert len(catalog.load_table("cdc.dead_letters").metadata.snapshots) == 2


def test_writing_the_same_letters_again_keeps_one_copy(tmp_path: Path) -> None:
    # A batch read again after a crash brings its dead letters again: they must not pile up.
    catalog = make_catalog(tmp_path)
    letters = DeadLetterTable(catalog, "cdc.dead_letters")
    batch = [
        DeadLetter(source="pg", raw="{bad", reason="invalid JSON", table="public.t", position="5:1"),
        DeadLetter(source="pg", raw="{worse", reason="invalid JSON", table="public.t", position="5:2"),
        DeadLetter(source="kafka", raw="\x00?", reason="x"),
    ]
    assert letters.write(batch) == 3
    assert letters.write(batch) == 0
    assert letters.write([*batch, batch[0]]) == 0
    # Same position, another payload or source: a different letter.
    other = [
        DeadLetter(source="pg", raw="{other", reason="invalid JSON", table="public.t", position="5:1"),
        DeadLetter(source="pg2", raw="{bad", reason="invalid JSON", table="public.t", position="5:1"),
    ]
    assert letters.write([batch[1], *other]) == 2
    rows = catalog.load_table("cdc.dead_letters").scan().to_arrow().to_pylist()
    assert sorted((r["source"], r["position"] or "", r["raw"]) for r in rows) == [
        ("kafka", "", "\x00?"),
        ("pg", "5:1", "{bad"),
        ("pg", "5:1", "{other"),
        ("pg", "5:2", "{worse"),
        ("pg2", "5:1", "{bad"),
    ]
    assert len(catalog.load_table("cdc.dead_letters").metadata.snapshots) == 2
