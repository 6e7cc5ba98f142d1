"""RPO arithmetic by source position, the drill checks, the report chart, and secret references checked
for presence in the secondary's backend (the value is never part of the result)."""

from pathlib import Path

import pytest

from hybrid_dagster.assets.dr import drill_checks, report_chart
from hybrid_dagster.dr import secondary_plane
from hybrid_dagster.dr.drill import DrillResult
from hybrid_dagster.dr.lag import AncestryEntry, table_lag
from hybrid_dagster.dr.plane import check_secret_refs, parse_secret_ref
from hybrid_dagster.plane.config import DrSecondaryConfig
from tests.dr.planes import eu_plane

HISTORY = [  # newest first: (snapshot, commit ms, changes, position)
    AncestryEntry(4, 40_000, 4, "40:0"),
    AncestryEntry(3, 31_000, 3, "36:0"),
    AncestryEntry(2, 20_500, 2, "33:0"),
    AncestryEntry(1, 10_000, 5, "31:0"),
]


def test_rpo_counts_changes_the_secondary_lacks() -> None:
    lag = table_lag("clinical.patients", HISTORY, 2)
    assert (lag.rpo_changes, lag.snapshots_behind, lag.rpo_s) == (7, 2, 19.5)
    assert (lag.primary_position, lag.secondary_position) == ("40:0", "33:0")
    current = table_lag("clinical.patients", HISTORY, 4)
    assert (current.rpo_changes, current.rpo_s) == (0, 0.0)
    nothing = table_lag("clinical.patients", HISTORY, None)
    assert nothing.rpo_changes == 14 and nothing.secondary_position is None


def _result(rto_s: float, rpo_changes: int) -> DrillResult:
    return DrillResult(
        plane="eu-onprem",
        secondary="eu-dr",
        drill_id="d1",
        t0=0.0,
        rto_s=rto_s,
        rpo_s=0.0,
        rpo_changes=rpo_changes,
        tables=3,
        rows_read=10,
        isolation="mount-namespace",
        primary_intact=True,
        leftovers=0,
        rto_objective_s=60.0,
        rpo_objective_s=30.0,
        rpo_objective_changes=0,
    )


def test_checks_fail_exactly_when_an_objective_is_missed() -> None:
    assert [c.passed for c in drill_checks(_result(12.0, 0))] == [True, True, True]
    assert [c.passed for c in drill_checks(_result(61.0, 1))] == [False, False, True]
    chart = report_chart(
        [
            {
                "plane": "eu",
                "at": "now",
                "rto_s": 61.0,
                "rto_objective_s": 60.0,
                "rpo_s": 0.0,
                "rpo_objective_s": 30.0,
                "rpo_changes": 1,
                "met": False,
            }
        ]
    )
    assert "| eu | now |" in chart and "61.0s / 60s" in chart and "| NO |" in chart


def test_secret_references_are_checked_for_presence_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EU_DR_DB_PASSWORD", "value-never-reported")
    plane = eu_plane(tmp_path, DrSecondaryConfig(jurisdiction="EU", warehouse=f"file://{tmp_path / 'dr'}"))
    refs = [parse_secret_ref("env:EU_DR_DB_PASSWORD"), parse_secret_ref("env:EU_DR_MISSING")]
    present, missing = check_secret_refs(secondary_plane(plane), refs)
    assert (present, missing) == (1, ["env:EU_DR_MISSING"])
    assert parse_secret_ref("vault:eu/db#password@3").model_dump() == {
        "backend": "vault",
        "path": "eu/db",
        "key": "password",
        "version": "3",
    }
