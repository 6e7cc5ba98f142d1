"""The Dagster DR drill job: a drill with the
replica behind by a known number of source changes reports exactly that RPO and fails its check, while
RTO is measured from the injected outage to the first passing canary; results reach the audit log and
the ``dr_drill_report`` history."""

import os
from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.assets.dr import dr_definitions
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.dr import replicate_plane, secondary_plane
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.validation import validate_definitions
from tests.dr.planes import ClinicalPlane, eu_plane


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [m for m in result.asset_materializations_for_node(key.to_python_identifier())]
    return {k: v.value for k, v in event.metadata.items()}


def test_drill_behind_by_known_changes_reports_exact_rpo_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", audit_url)
    plane = eu_plane(tmp_path)
    clinical = ClinicalPlane(plane)
    clinical.fill(2)
    defs = dr_definitions([plane], ResidencyPolicy(strict=True))
    assert validate_definitions(defs).ok, validate_definitions(defs).lines()
    instance = dg.DagsterInstance.ephemeral()

    # the replication job itself runs in the demo test; here the same function, in-process, to save a run
    replicated = replicate_plane(plane, secondary_plane(plane), ResidencyPolicy())
    assert replicated.metadata()["dr/tables_replicated"] == 3 and replicated.metadata()["dr/lag_changes"] == 0

    # the primary moves on by 2 + 3 + 4 = 9 source changes that are not replicated
    for table, changes in (("clinical.patients", 2), ("clinical.encounters", 3), ("clinical.patients", 4)):
        clinical.commit(table, changes)
    job = defs.resolve_job_def("dr_drill_eu_onprem")
    drilled = job.execute_in_process(instance=instance, raise_on_error=False)
    drill = _metadata(drilled, dg.AssetKey(["dr", "eu_onprem", "drill"]))
    assert drill["dr/rpo_changes"] == 9
    assert drill["dr/rpo_s"] > 0
    assert 0 < drill["dr/rto_s"] < 900
    assert drill["dr/tables"] == 3 and drill["dr/leftovers"] == 0 and drill["dr/primary_intact"] is True
    assert _checks(drilled) == {"rto_objective": True, "rpo_objective": False, "drill_clean": True}
    failover = _metadata(drilled, dg.AssetKey(["dr", "eu_onprem", "drill_failover"]))
    assert failover["dr/primary_readable"] is False
    assert failover["dr/lag_changes/clinical.patients"] == 6
    # by source position: patients' last change replicated was at 5, the primary's is at 5 + 2 + 3 + 4
    assert failover["dr/secondary_position/clinical.patients"] == "5:0"
    assert failover["dr/primary_position/clinical.patients"] == f"{clinical.position}:0" == "18:0"

    report = _metadata(drilled, dg.AssetKey("dr_drill_report"))
    assert report["drills"] == 1 and "| eu_onprem |" in str(report["chart"])
    [record] = list(AuditLog(audit_url).records("dr.drill"))
    assert record.plane == "eu-onprem" and record.details["rpo_changes"] == 9
    drills = tmp_path / "eu-onprem-dr" / "_dr" / "drills"
    assert not drills.exists() or not os.listdir(drills)  # no drill journal left behind
