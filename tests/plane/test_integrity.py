"""Transfer integrity inside a plane: staged rows are hashed before commit; cross-plane reads are recorded."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid_dagster.audit import AuditLog, TransferIntegrityError
from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.plane.integrity import PlaneTransfers
from hybrid_dagster.plane.tables import replace_table
from hybrid_dagster.residency import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.residency.labels import label_for_write
from tests.plane.test_work import copy_asset, plane, seed_eu_table


def test_a_staged_file_that_differs_from_the_rows_handed_over_abandons_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", audit_url)
    eu = plane(tmp_path, "eu-onprem", "EU")
    catalog = eu.load_catalog()
    old = pa.table({"id": [1, 2], "ward": ["A", "B"]})
    label = label_for_write("clinic/wards", Classification.INTERNAL, frozenset({"EU"}), eu)
    replace_table(catalog, "clinic.wards", old, label)
    transfers = PlaneTransfers(plane_name="eu-onprem", jurisdiction="EU", run_id="r1", warn=print)
    new = pa.table({"id": [1, 2, 3], "ward": ["A", "B", "C"]})
    check = transfers.before_commit("clinic.wards", content_sha256(new))

    def corrupt_then_check(staged: pa.Table) -> None:
        # Storage changed a data file between the write and the commit: rewrite the staged file.
        table = catalog.load_table("clinic.wards")
        committed = {task.file.file_path for task in table.scan().plan_files()}
        staged_files = [
            p for p in (tmp_path / "eu-onprem").rglob("*.parquet") if f"file://{p}" not in committed
        ]
        assert len(staged_files) == 1
        pq.write_table(pa.table({"id": [1, 2, 3], "ward": ["A", "B", "X"]}), staged_files[0])
        check(pq.read_table(staged_files[0]))  # what the commit would now publish

    with pytest.raises(TransferIntegrityError, match=r"eu-onprem\.clinic\.wards: the rows staged"):
        replace_table(catalog, "clinic.wards", new, label, before_commit=corrupt_then_check)
    assert content_sha256(catalog.load_table("clinic.wards").scan().to_arrow()) == content_sha256(old)
    with AuditLog(audit_url) as log:
        assert [r.kind for r in log.records()] == ["transfer.mismatch"]


def test_staged_rows_that_match_are_committed(tmp_path: Path) -> None:
    eu = plane(tmp_path, "eu-onprem", "EU")
    seen: list[str] = []
    data = pa.table({"id": [1, 2], "ward": ["A", "B"]})
    label = label_for_write("clinic/wards", Classification.INTERNAL, frozenset({"EU"}), eu)
    replace_table(
        eu.load_catalog(), "clinic.wards", data, label, before_commit=lambda t: seen.append(content_sha256(t))
    )
    assert seen == [content_sha256(data)]
    assert content_sha256(eu.load_catalog().load_table("clinic.wards").scan().to_arrow()) == seen[0]


def test_a_cross_jurisdiction_read_is_recorded_with_both_hashes_and_its_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", audit_url)  # inherited by the plane's subprocess
    eu, us = plane(tmp_path, "eu-onprem", "EU"), plane(tmp_path, "us-cloud", "US")
    seed_eu_table(eu)
    route = TransferRoute(
        source="EU",
        target="US",
        legal_basis="GDPR Art. 46 SCCs",
        classifications=["confidential"],
        egress_usd_per_gb=0.09,
    )
    resources = {"eu_onprem": eu, "us_cloud": us, "residency_policy": ResidencyPolicy(routes=[route])}
    blocked = dg.materialize(
        [copy_asset("restricted", with_policy=True)], resources=resources, raise_on_error=False
    )
    assert not blocked.success
    result = dg.materialize([copy_asset("confidential", with_policy=True)], resources=resources)
    assert result.success

    source_hash = content_sha256(eu.load_catalog().load_table("clinic.patients").scan().to_arrow())
    target_hash = content_sha256(us.load_catalog().load_table("copies.patients").scan().to_arrow())
    with AuditLog(audit_url) as log:
        # The refused run's read did cross (into the US plane's process): it is recorded, with no target.
        unwritten, record = list(log.records(kind="transfer"))
        assert log.verify().ok
        decisions = [(r.kind, r.run_id, r.details["action"]) for r in log.records() if r.kind != "transfer"]
        refused = next(log.records(kind="residency.refused"))
    assert unwritten.run_id == blocked.run_id and unwritten.details["rows"] == 2
    assert decisions == [
        ("residency.allowed", blocked.run_id, "read"),
        ("residency.refused", blocked.run_id, "write"),
        ("residency.allowed", result.run_id, "read"),
        ("residency.allowed", result.run_id, "write"),
    ]
    assert "restricted data may not move from EU to US" in refused.details["reason"]
    d = record.details
    assert (record.plane, record.actor, record.run_id) == ("us-cloud", "plane:us-cloud", result.run_id)
    assert (d["route"], d["legal_basis"], d["classification"]) == (
        "EU->US",
        "GDPR Art. 46 SCCs",
        "confidential",
    )
    assert (d["source_table"], d["target_table"], d["rows"]) == ("clinic.patients", "copies.patients", 2)
    assert d["source_sha256"] == source_hash and d["target_sha256"] == target_hash == source_hash
    assert d["copied_verbatim"] is True and d["bytes"] > 0
    assert d["cost_usd"] == pytest.approx(d["bytes"] / 1e9 * 0.09)
    assert "Ingrid" not in str(record.to_json())
