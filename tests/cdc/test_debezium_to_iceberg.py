"""Debezium change events through the pipeline into Iceberg: ordering, replay, dead letters."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrid_dagster.cdc.pipeline import CdcPipeline, DeadLetterStop, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.dead_letters import DeadLetterTable
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.debezium.files import DebeziumFileChangeSource
from tests.cdc.cdc_harness import plane_at
from tests.conftest import SHARED_DIR

SAMPLES = SHARED_DIR / "debezium-samples"
SNIPPETS = sorted(SAMPLES.glob("*.snippet.txt"))


def event(op: str, after: dict[str, Any] | None, commit: int, lsn: int, *, before: dict | None = None) -> str:
    source = {
        "schema": "public",
        "table": "wards",
        "lsn": lsn,
        "sequence": json.dumps([str(commit), str(lsn)]),
    }
    return json.dumps({"op": op, "before": before, "after": after, "source": {**source, "txId": commit}})


# Two interleaved transactions: tx A (commit 300) and tx B (commit 200) have events whose LSNs interleave.
# Ordered by commit then event, B's changes come first, so A's values win where both touch a row.
STREAM = [
    event("c", {"id": 1, "name": "icu", "beds": 10}, 100, 90),
    event("c", {"id": 2, "name": "er", "beds": 20}, 100, 95),
    event("u", {"id": 1, "name": "icu", "beds": 12}, 300, 150),  # tx A, first event
    event("u", {"id": 1, "name": "icu", "beds": 99}, 200, 160),  # tx B, later LSN but earlier commit
    event("c", {"id": 3, "name": "neo", "beds": 5}, 300, 170),
    event("u", {"id": 4, "name": "onc", "beds": 8}, 300, 180, before={"id": 2, "name": "er", "beds": 20}),
    event("d", None, 400, 390, before={"id": 3, "name": "neo", "beds": 5}),
    json.dumps({"schema": None, "payload": None}),  # old-style tombstone after the delete
]
EXPECTED = {1: {"id": 1, "name": "icu", "beds": 12}, 4: {"id": 4, "name": "onc", "beds": 8}}


def flat(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").splitlines())


def make_pipeline(
    inbox: Path, warehouse: Path, policy: str = "continue"
) -> tuple[CdcPipeline, IcebergApplier]:
    catalog = plane_at(warehouse).load_catalog()
    source = DebeziumFileChangeSource(inbox, tables=[SourceTable("public.wards", ("id",))])
    applier = IcebergApplier(catalog, source_id=source.source_id)
    pipeline = CdcPipeline(
        source,
        applier,
        [TableMapping("public.wards", "ops.wards", ("id",))],
        dead_letters=DeadLetterTable(catalog, "ops._dead_letters"),
        dead_letter_policy=policy,  # type: ignore[arg-type]
        batch_events=3,
    )
    return pipeline, applier


def table_rows(applier: IcebergApplier) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in applier.catalog.load_table("ops.wards").scan().to_arrow().to_pylist()}


def test_stream_with_interleaved_transactions_and_malformed_samples(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = STREAM[:4] + [flat(p) for p in SNIPPETS] + STREAM[4:]
    (inbox / "001.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pipeline, applier = make_pipeline(inbox, tmp_path / "w")

    report = pipeline.run()
    assert table_rows(applier) == EXPECTED
    assert report.dead_letters == len(SNIPPETS)
    letters = applier.catalog.load_table("ops._dead_letters").scan().to_arrow().to_pylist()
    assert sorted(d["raw"] for d in letters) == sorted(flat(p) for p in SNIPPETS)
    assert all(d["reason"] and d["position"].startswith("001.jsonl:") for d in letters)

    # A replay from the start (offsets lost) changes nothing: every change is at or below the watermark.
    snapshot = applier.catalog.load_table("ops.wards").current_snapshot()
    for offset in inbox.glob(".hybrid-cdc-offset*"):
        offset.unlink()
    replay, _ = make_pipeline(inbox, tmp_path / "w")
    assert replay.run().events_applied == 0
    assert table_rows(applier) == EXPECTED
    after = applier.catalog.load_table("ops.wards").current_snapshot()
    assert snapshot is not None and after is not None and after.snapshot_id == snapshot.snapshot_id


def test_stop_policy_keeps_the_dead_letters_and_leaves_the_table_alone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "001.jsonl").write_text("\n".join([STREAM[0], flat(SNIPPETS[0]), STREAM[1]]) + "\n")
    pipeline, applier = make_pipeline(inbox, tmp_path / "w", policy="stop")
    with pytest.raises(DeadLetterStop, match=r"001\.jsonl:2"):
        pipeline.run()
    assert not applier.catalog.table_exists("ops.wards")
    assert applier.catalog.load_table("ops._dead_letters").scan().to_arrow().num_rows == 1


junk = st.one_of(
    st.text(max_size=80).map(lambda s: s.replace("\n", " ")),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1").replace("\n", " ")),
    st.dictionaries(
        st.sampled_from(["op", "after", "before", "source", "payload"]), st.none() | st.integers()
    ).map(json.dumps),
    st.sampled_from([flat(p) for p in SNIPPETS]),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(junk, min_size=1, max_size=6), where=st.integers(0, len(STREAM)))
def test_malformed_events_never_crash_the_run_or_touch_the_table(
    tmp_path: Path, garbage: list[str], where: int
) -> None:
    case = tmp_path / f"case-{abs(hash((tuple(garbage), where)))}"
    inbox = case / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "001.jsonl").write_text("\n".join(STREAM[:where] + garbage + STREAM[where:]) + "\n")
    pipeline, applier = make_pipeline(inbox, case / "w")
    pipeline.run()
    assert table_rows(applier) == EXPECTED
    shutil.rmtree(case)
