"""`make demo` end to end: the printed table, `summary.json` against the Dagster instance, and no asset
left "Unsynced" afterwards (staleness as the webserver computes it, over GraphQL).

The demo runs once per session (``tests/examples/conftest.py``); every test reads what it left behind.
"""

from collections.abc import Iterator

import dagster as dg
import pytest

from tests.dagster_dev import running_dagster_dev
from tests.examples.conftest import Demo

ASSETS = {
    "clinical/patients",
    "clinical/encounters",
    "clinical/lab_results",
    "analytics/eu_ward_occupancy",
    "features/eu_lab_features",
    "us/claims",
    "us/claims_by_ward",
    "analytics/group_ward_benchmark",
}


@pytest.fixture(scope="module")
def instance(demo: Demo) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(demo.home / "dagster")) as instance:
        yield instance


def test_demo_prints_its_table_and_keeps_rows_in_their_planes(demo: Demo) -> None:
    out = demo.stdout
    assert "residency ok: 8 assets on 4 planes in 2 jurisdictions" in out
    assert "clinical/patients" in out and "analytics/group_ward_benchmark" in out
    assert "asset checks: 12/12 passed" in out  # 2 checks x 3 CDC tables x 2 runs
    assert "make ui" in out and "http://127.0.0.1:3000" in out
    assert str(demo.home / "summary.json") in out
    # rows stayed in their planes: the US warehouses hold no clinical tables
    assert not (demo.home / "planes" / "us-cloud" / "warehouse" / "clinical").exists()


def test_summary_has_the_documented_keys_and_types(demo: Demo) -> None:
    s = demo.summary
    assert s["version"] == 1 and isinstance(s["version"], int)
    assert isinstance(s["created_at"], str) and isinstance(s["elapsed_s"], float) and s["elapsed_s"] > 0
    assert set(s["assets"]) == ASSETS
    for key, asset in s["assets"].items():
        assert set(asset) == {
            "plane",
            "jurisdiction",
            "classification",
            "rows",
            "materializations",
            "what_happened",
            "cdc",
            "checks",
        }, key
        assert all(isinstance(asset[k], str) for k in ("plane", "jurisdiction", "classification"))
        assert isinstance(asset["rows"], int) and isinstance(asset["materializations"], int)
        assert isinstance(asset["what_happened"], str) and asset["what_happened"]
        assert set(asset["checks"]) == {"passed", "failed"}
        if key.startswith("clinical/"):
            assert set(asset["cdc"]) == {"snapshot_rows", "inserted", "updated", "deleted", "watermark"}
            assert all(isinstance(asset["cdc"][k], int) for k in ("snapshot_rows", "inserted", "updated"))
        else:
            assert asset["cdc"] is None
    assert s["checks"] == {"passed": 12, "failed": 0}
    assert all(set(run) == {"run_id", "job", "status", "elapsed_s"} for run in s["runs"])
    assert s["residency"]["ok"] is True
    assert set(s["workload"]) == {"transactions", "inserts", "updates", "deletes", "key_changes"}
    assert s["workload"]["transactions"] == 60
    # the table printed is the summary rendered
    line = next(line for line in demo.stdout.splitlines() if line.startswith("clinical/patients "))
    patients = s["assets"]["clinical/patients"]
    assert line.split()[1:5] == ["eu-onprem", "EU", "restricted", str(patients["rows"])]


def test_summary_agrees_with_the_dagster_instance(demo: Demo, instance: dg.DagsterInstance) -> None:
    from examples.clinical_ai.definitions import defs

    s = demo.summary
    example_runs = {r["run_id"] for r in s["runs"]}  # the capabilities' runs report in their own sections
    records = [r for r in instance.get_run_records(ascending=True) if r.dagster_run.run_id in example_runs]
    assert [r["run_id"] for r in s["runs"]] == [r.dagster_run.run_id for r in records]
    assert [r["status"] for r in s["runs"]] == ["SUCCESS", "SUCCESS"]
    for run, record in zip(s["runs"], records, strict=True):
        assert record.start_time is not None and record.end_time is not None
        assert run["elapsed_s"] == pytest.approx(record.end_time - record.start_time, abs=0.01)

    graph = defs.resolve_asset_graph()
    jurisdiction_of = {r.name: r.jurisdiction for r in (defs.resources or {}).values() if hasattr(r, "name")}
    for key, asset in s["assets"].items():
        asset_key = dg.AssetKey.from_user_string(key)
        tags = graph.get(asset_key).tags
        assert (asset["plane"], asset["classification"]) == (
            tags["hybrid/plane"],
            tags["hybrid/classification"],
        )
        assert asset["jurisdiction"] == jurisdiction_of[asset["plane"]]
        materializations = [
            m
            for m in instance.fetch_materializations(asset_key, limit=100).records
            if m.run_id in example_runs
        ]
        assert asset["materializations"] == len(materializations)
        latest = materializations[0].asset_materialization
        assert latest is not None
        assert asset["rows"] == latest.metadata["dagster/row_count"].value
    checks = [
        record.asset_check_evaluation
        for run in records
        for record in instance.all_logs(
            run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    assert s["checks"]["passed"] == sum(1 for c in checks if c is not None and c.passed)
    assert s["checks"]["failed"] == sum(1 for c in checks if c is not None and not c.passed)


def test_every_asset_is_up_to_date_after_the_demo(demo: Demo) -> None:
    """The stream run refreshes what is downstream of the streamed tables: nothing shows "Unsynced"."""
    query = "{ assetNodes { assetKey { path } staleStatus staleCauses { reason } } }"
    with running_dagster_dev(demo.home / "dagster", hybrid_home=demo.home) as ui:
        nodes = ui.graphql(query)["data"]["assetNodes"]
    status = {"/".join(n["assetKey"]["path"]): (n["staleStatus"], n["staleCauses"]) for n in nodes}
    assert set(status) == ASSETS
    assert {key: s for key, (s, _) in status.items() if s != "FRESH"} == {}, status
