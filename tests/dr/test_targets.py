"""A DR target in another jurisdiction for restricted data is refused - by the static check and by the
replication itself, before anything is copied; a declared route covering the data allows it."""

from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.dr import DrTargetRefused, replicate_plane, secondary_plane
from hybrid_dagster.pinning import pinned
from hybrid_dagster.plane.config import DrSecondaryConfig
from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.residency.graph import ViolationKind
from hybrid_dagster.validation import validate_definitions
from tests.dr.planes import ClinicalPlane, eu_plane

US_TARGET = "us-dr"


def _us_secondary(root: Path) -> DrSecondaryConfig:
    return DrSecondaryConfig(name=US_TARGET, jurisdiction="US", warehouse=f"file://{root / US_TARGET}")


@dg.asset(**pinned("eu-onprem", "restricted"))
def patients() -> None: ...


def test_static_check_refuses_a_cross_jurisdiction_dr_target(tmp_path: Path) -> None:
    plane = eu_plane(tmp_path, _us_secondary(tmp_path))
    report = validate_definitions(dg.Definitions(assets=[patients], resources={"eu_onprem": plane}))
    refused = [v for v in report.violations if v.kind == ViolationKind.DR_TARGET]
    assert len(refused) == 1
    assert "eu-onprem" in refused[0].message and US_TARGET in refused[0].message
    assert "restricted data may not move from EU to US" in refused[0].message

    lawful = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="basis", classifications=["restricted"])]
    )
    allowed = validate_definitions(
        dg.Definitions(assets=[patients], resources={"eu_onprem": plane, "residency_policy": lawful})
    )
    assert [v for v in allowed.violations if v.kind == ViolationKind.DR_TARGET] == []
    # a plane with nothing pinned to it counts as restricted (fail closed)
    empty = validate_definitions(dg.Definitions(resources={"eu_onprem": plane}))
    assert [v.kind for v in empty.violations] == [ViolationKind.DR_TARGET]


def test_replication_refuses_before_anything_is_copied(tmp_path: Path) -> None:
    plane = eu_plane(tmp_path, _us_secondary(tmp_path))
    ClinicalPlane(plane).fill(1)
    with pytest.raises(DrTargetRefused, match="nothing was copied"):
        replicate_plane(plane, secondary_plane(plane), ResidencyPolicy())
    assert not (tmp_path / US_TARGET).exists()  # not even the secondary's catalog was opened
