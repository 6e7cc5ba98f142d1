"""`make demo` end to end: the printed table, `summary.json` against the Dagster instance, and no asset
left "Unsynced" afterwards (staleness as the webserver computes it, over GraphQL).

Then each capability's demo step (documents, evidence, GPU, lineage, secrets, DR) on the same run: its
section of ``summary.json`` and what it left under the demo home. The demo runs once
(``tests/examples/conftest.py``); its tests stay in this one file, so ``make test``'s workers
(``--dist loadfile``) run them all in one process.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from examples.clinical_ai.demo_documents import encounters_of, eu_plane
from examples.clinical_ai.documents import encounter_context
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.dr import replicate_plane, secondary_plane
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import DrSecondaryConfig
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane
from tests.dagster_dev import running_dagster_dev
from tests.examples.conftest import DEMO_DB_PASSWORD, Demo
from tests.sensors.ol_schema import validate_event

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


# --- the documents step of `make demo`
def test_demo_documents_summary_and_retrieval_finds_encounter_context(demo: Demo) -> None:
    summary = demo.summary
    section = summary["documents"]
    assert set(section) == {"files", "chunks", "dead_letters", "linked_fraction"}
    assert section["files"] == 40 + 30 + 12 + 2  # letters, transcripts, logs, two bad files
    assert section["dead_letters"] == 2
    assert section["chunks"] > section["files"]
    assert 0.8 <= section["linked_fraction"] < 1.0  # a quarter of the logs name no encounter

    plane = eu_plane(demo.home)
    first = encounters_of(plane)[0]
    context = encounter_context(plane, first.encounter_id)
    assert context and all(c["link_key"] == str(first.encounter_id) for c in context)
    assert any(c["source_uri"].endswith("discharge-letter.pdf") for c in context)
    assert [c["chunk_index"] for c in context if c["source_uri"] == context[0]["source_uri"]] == sorted(
        c["chunk_index"] for c in context if c["source_uri"] == context[0]["source_uri"]
    )


# --- the evidence step of `make demo`
def test_demo_evidence_records_transfers_verifies_the_chain_and_writes_the_pack(demo: Demo) -> None:
    summary = demo.summary
    audit = summary["audit"]
    assert audit["url"] == f"sqlite:///{demo.home.resolve() / 'dagster' / 'hybrid_audit.db'}"
    assert audit["verified"] is True and audit["records"] >= 3
    assert audit["checkpoint_count"] == audit["records"]
    route = summary["transfers"]["by_route"]["EU->US"]
    assert route["transfers"] >= 1 and route["legal_bases"] == [
        "GDPR Art. 46(2)(c) standard contractual clauses"
    ]
    assert route["cost_usd"] > 0
    assert all(summary["evidence_checks"].values()), summary["evidence_checks"]
    assert summary["compliance_report"]["controls"]["GDPR Art. 44-49"] == "covered"
    markdown = Path(summary["compliance_report"]["markdown"]).read_text()
    assert "| EU->US | GDPR Art. 46(2)(c) standard contractual clauses | confidential |" in markdown
    with AuditLog(audit["url"]) as log:
        transfers = list(log.records(kind="transfer"))
    assert transfers and all(len(t.details["source_sha256"]) == 64 for t in transfers)
    benchmark = [t for t in transfers if t.details["target_table"] == "analytics.group_ward_benchmark"]
    assert benchmark and benchmark[0].details["source_table"] == "analytics.ward_occupancy"


# --- the gpu step of `make demo`
def test_demo_gpu_trains_both_models_and_tears_down_only_the_idle_instance(demo: Demo) -> None:
    summary = {key: demo.summary[key] for key in ("training", "teardown")}

    eu = summary["training"]["models/eu_readmission_risk"]
    us = summary["training"]["models/us_high_cost_claims"]
    assert (eu["pool"], eu["jurisdiction"]) == ("eu-onprem-a100", "EU")
    assert (us["pool"], us["jurisdiction"]) == ("us-onprem-l40s", "US")
    assert eu["metrics"]["roc_auc"] > 0.55
    assert {"roc_auc", "accuracy"} <= set(us["metrics"])

    teardown = summary["teardown"]
    assert len(teardown["terminated"]) == 1 and teardown["terminated"][0].startswith("i-")
    kept = {k["name"]: k["why"] for k in teardown["kept"]}
    assert set(kept) == {"gpu-busy", "gpu-protected", "gpu-a", "gpu-unreadable"}
    assert all(k["id"].startswith("i-") for k in teardown["kept"])
    assert (
        abs(teardown["cost_saved_usd"] - 350.0) < 0.5
    )  # 4 GPUs x $1.25/h for the 70 h left of a 72 h lifetime
    # the models stayed in their jurisdictions' warehouses
    planes = demo.home / "planes"
    assert (planes / "eu-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").is_dir()
    assert not (planes / "us-onprem" / "warehouse" / "models" / "models__eu_readmission_risk").exists()


# --- the lineage step of `make demo`
def test_demo_lineage_writes_valid_physically_named_events(demo: Demo) -> None:
    home = demo.home
    section = demo.summary["lineage"]
    path = Path(section["path"])
    assert path == home.resolve() / "lineage.jsonl" and path.is_file()
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert section["events"] == len(events) > 30
    for event in events:
        validate_event(event)

    outputs = {
        link["name"]: output
        for event in events
        for output in event["outputs"]
        for link in output["facets"]["symlinks"]["identifiers"]
        if link["type"] == "DAGSTER_ASSET"
    }
    patients = outputs["clinical/patients"]
    assert patients["namespace"] == "file"
    assert patients["name"].startswith(str(home.resolve() / "planes" / "eu-onprem" / "warehouse"))
    residency = patients["facets"]["hybridDagster_residency"]
    assert (residency["plane"], residency["jurisdiction"], residency["classification"]) == (
        "eu-onprem",
        "EU",
        "restricted",
    )
    # The cross-border benchmark (US cloud) shows its EU input: the transfer is visible in lineage.
    benchmark_runs = [
        e
        for e in events
        if any(o["name"] == outputs["analytics/group_ward_benchmark"]["name"] for o in e["outputs"])
    ]
    inputs = {i["name"] for e in benchmark_runs for i in e["inputs"]}
    assert any("/planes/eu-" in name for name in inputs) and any("/planes/us-" in name for name in inputs)


# --- the secrets step of `make demo`
def test_demo_secrets_resolves_inside_the_planes_and_leaks_nothing(demo: Demo) -> None:
    summary = demo.summary["secrets"]
    assert summary["backends"] == ["vault", "aws"]
    # audited reads: the CDC password (vault, the CDC step fails without it), the partner token (aws)
    assert summary["reads_audited"] >= 2
    assert DEMO_DB_PASSWORD not in demo.stdout + demo.stderr
    assert (demo.home / "dagster" / "hybrid_audit.db").is_file()  # the default audit log under DAGSTER_HOME
    assert (demo.home / "lineage.jsonl").stat().st_size > 0
    secret = DEMO_DB_PASSWORD.encode()
    leaked = [p for p in demo.home.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []


# --- the dr step of `make demo`
def test_dr_replicates_every_eu_table_and_its_drill_meets_the_objectives(demo: Demo, tmp_path: Path) -> None:
    """The DR hook's section (``examples/clinical_ai/demo_dr.py``: EU on-prem to S3 on moto), and every
    table of the example's EU plane served row for row by a secondary alone, the primary's folder gone."""
    [dr] = demo.summary["dr"]
    assert dr["plane"] == "eu-onprem" and dr["secondary"] == "eu-dr-s3"
    assert isinstance(dr["tables_replicated"], int) and dr["tables_replicated"] >= 3
    assert isinstance(dr["rto_s"], float) and 0 < dr["rto_s"] < 900
    assert dr["rpo_s"] == 0.0 and dr["rpo_changes"] == 0 and dr["objectives_met"] is True

    warehouse = demo.home / "planes" / "eu-onprem" / "warehouse"
    eu = DataPlane(
        name="eu-onprem",
        jurisdiction="EU",
        region="fra-dc2",
        location="on_prem",
        warehouse=f"file://{warehouse}",
        dr_secondary=DrSecondaryConfig(jurisdiction="EU", warehouse=f"file://{tmp_path / 'eu-dr'}"),
    )
    secondary = secondary_plane(eu)
    result = replicate_plane(eu, secondary, ResidencyPolicy())
    tables = [t.identifier for t in result.tables]
    assert {"clinical.patients", "clinical.encounters", "clinical.lab_results"} <= set(tables)
    primary = eu.load_catalog()
    want = {t: primary.load_table(t).scan().to_arrow() for t in tables}
    aside = warehouse.with_name("warehouse-lost")
    warehouse.rename(aside)
    try:
        copy = storage.open_catalog(secondary.spec())
        for table in tables:
            got = copy.load_table(table).scan().to_arrow()
            assert got.num_rows == want[table].num_rows, table
            assert sorted(got.to_pylist(), key=repr) == sorted(want[table].to_pylist(), key=repr), table
    finally:
        aside.rename(warehouse)
    shutil.rmtree(tmp_path / "eu-dr", ignore_errors=True)
