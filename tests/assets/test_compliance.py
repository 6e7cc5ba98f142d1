"""The compliance report over a real Definitions object and a real audit log."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hybrid_dagster.assets.audit_checkpoint import audit_checkpoint_asset
from hybrid_dagster.assets.compliance import compliance_report_asset
from hybrid_dagster.assets.evidence_pack import build_evidence_pack, render_markdown
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.audit.transfers import Transfer, TransferLedger
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.audit import AuditLogResource
from tests.planes import make_plane


def clinical_defs(tmp_path: Path, url: str) -> dg.Definitions:
    @dg.asset(**pinned("eu-onprem", "confidential", metadata={"hybrid/purpose": "Treatment of patients"}))
    def patients() -> None: ...

    @dg.asset(
        deps=[patients],
        owners=["team:analytics"],
        **pinned(
            "us-cloud",
            "confidential",
            metadata={"hybrid/purpose": "Ward capacity planning"},
            declassified="aggregates per ward, k >= 10",
        ),
    )
    def ward_stats() -> None: ...

    @dg.asset(deps=[patients], **pinned("eu-onprem", "restricted"))
    def readmission_features() -> None: ...

    route = TransferRoute(
        source="EU",
        target="US",
        legal_basis="GDPR Art. 46(2)(c) SCCs",
        classifications=["confidential"],
        egress_usd_per_gb=0.09,
    )
    defs: dg.Definitions

    report, intact = compliance_report_asset(lambda: defs, plane="eu-onprem")
    defs = dg.Definitions(
        assets=[
            patients,
            ward_stats,
            readmission_features,
            report,
            audit_checkpoint_asset(plane="eu-onprem"),
        ],
        asset_checks=[intact],
        resources={
            "eu_onprem": make_plane(tmp_path / "eu", "eu-onprem", "EU"),
            "us_cloud": make_plane(tmp_path / "us", "us-cloud", "US", location="cloud"),
            "residency_policy": ResidencyPolicy(routes=[route]),
            "audit_log": AuditLogResource(url=url),
        },
    )
    return defs


def transfer(classification: str = "confidential") -> Transfer:
    return Transfer(
        source_plane="eu-onprem",
        source_jurisdiction="EU",
        target_plane="us-cloud",
        target_jurisdiction="US",
        classification=classification,
        legal_basis="GDPR Art. 46(2)(c) SCCs",
        source_table="clinic.stats",
        target_table="analytics.ward_stats",
        rows=1200,
        bytes=96_000,
        source_sha256="a" * 64,
        target_sha256="b" * 64,
        egress_usd_per_gb=0.09,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


def test_pack_maps_the_graph_and_the_log_to_controls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog(url)
    TransferLedger(log).record(transfer(), actor="plane:us-cloud", run_id="r1")
    log.append("secret.read", actor="plane:eu-onprem", plane="eu-onprem", details={"path": "kv/clinic/db"})
    pack = build_evidence_pack(clinical_defs(tmp_path, url), log, generated_at="2026-01-01T00:00:00+00:00")

    processing = {p["asset"]: p for p in pack["records_of_processing"]}
    assert set(processing) == {"patients", "ward_stats", "readmission_features"}  # not the evidence assets
    assert pack["residency"] == {"ok": True, "violations": []}
    assert processing["ward_stats"] == {
        "asset": "ward_stats",
        "plane": "us-cloud",
        "jurisdiction": "US",
        "classification": "confidential",
        "purpose": "Ward capacity planning",
        "inputs": ["patients"],
        "owners": ["team:analytics"],
        "description": None,
    }
    assert processing["readmission_features"]["purpose"] is None
    controls = {c["id"]: c for c in pack["controls"]}
    assert controls["GDPR Art. 30"]["status"] == "partial"
    assert any("readmission_features" in g for g in controls["GDPR Art. 30"]["gaps"])
    assert controls["GDPR Art. 44-49"]["status"] == "covered"
    assert pack["transfers"]["by_route"]["EU->US"]["transfers"] == 1
    assert pack["transfers"]["records"][0]["legal_basis"] == "GDPR Art. 46(2)(c) SCCs"
    assert controls["SOC 2 A1"]["status"] == controls["DORA Art. 11-12"]["status"] == "not covered"
    assert "SOC 2 A1: Availability: recovery tested - no evidence" in pack["not_covered"]
    assert controls["HIPAA 164.312(b)"]["status"] == "covered"
    assert pack["audit"]["records_by_kind"] == {"secret.read": 1, "transfer": 1}
    markdown = render_markdown(pack)
    assert markdown.startswith("# Compliance evidence pack")
    assert (
        "| ward_stats | us-cloud | US | confidential | Ward capacity planning | patients | team:analytics |"
        in markdown
    )
    assert "**Not covered**: no DR drill results" in markdown
    assert "## What this pack does not cover" in markdown
    json.dumps(pack)  # plain JSON


def test_drills_and_unlawful_transfers_change_the_statuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog(url)
    TransferLedger(log).record(transfer("restricted"), actor="plane:us-cloud")
    log.append(
        "dr.drill",
        actor="schedule:dr",
        plane="eu-onprem",
        details={"passed": True, "rto_s": 41.0, "rpo_s": 3.0, "rto_objective_s": 300.0},
    )
    pack = build_evidence_pack(clinical_defs(tmp_path, url), log)
    controls = {c["id"]: c for c in pack["controls"]}
    assert controls["SOC 2 A1"]["status"] == "covered"
    assert controls["DORA Art. 11-12"]["status"] == "partial"
    assert controls["GDPR Art. 44-49"]["status"] == "partial"
    assert pack["transfers"]["without_declared_route"][0]["classification"] == "restricted"
    assert "| 2 |" in render_markdown(pack)  # the drill record's row


def test_report_asset_shows_markdown_and_flags_a_broken_chain(tmp_path: Path, home: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog(url)
    TransferLedger(log).record(transfer(), actor="plane:us-cloud")
    defs = clinical_defs(tmp_path, url)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("audit_checkpoint")]
        ).success
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("compliance_report")])
        assert result.success
        [materialization] = [m for m in result.asset_materializations_for_node("compliance_report")]
        metadata = materialization.metadata
        assert metadata["hybrid/report"].value.startswith("# Compliance evidence pack")  # type: ignore[union-attr]
        assert metadata["hybrid/audit_ok"].value is True
        pack = json.loads(Path(metadata["hybrid/evidence_json"].value).read_text())  # type: ignore[arg-type]
        assert pack["audit"]["checkpoint"]["count"] == pack["audit"]["count"] == 1
        [check] = result.get_asset_check_evaluations()
        assert check.passed

        with log.engine.begin() as conn:
            conn.execute(sa.text("UPDATE hybrid_audit_records SET details = '{}' WHERE seq = 1"))
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("compliance_report")], raise_on_error=False
        )
        [materialization] = list(result.asset_materializations_for_node("compliance_report"))
        assert "**BROKEN at record 1**" in materialization.metadata["hybrid/report"].value  # type: ignore[operator]
        [check] = result.get_asset_check_evaluations()
        assert not check.passed and check.description == (
            "audit broken at record 1: hash does not match the record's content"
        )
