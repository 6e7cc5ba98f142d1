"""The example project: it validates clean, loads in Dagster's own validator, and runs end to end."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from hybrid_dagster.residency import Classification
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import effective_classifications, validate_definitions

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_example_validates_clean() -> None:
    from examples.clinical_ai.definitions import defs

    report = validate_definitions(defs)
    assert report.ok, report.lines()
    assert "4 planes in 2 jurisdictions" in report.summary()
    classes = effective_classifications(defs)
    assert classes[dg.AssetKey(["clinical", "patients"])] == Classification.RESTRICTED
    # the declassified EU aggregate is what crosses to the US, on the declared route
    assert classes[dg.AssetKey(["analytics", "group_ward_benchmark"])] == Classification.CONFIDENTIAL


def test_example_assets_carry_residency_tags_and_kinds() -> None:
    from examples.clinical_ai.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["clinical", "patients"]))
    assert node.tags["hybrid/plane"] == "eu-onprem"
    assert node.tags["hybrid/classification"] == "restricted"
    assert {"postgres", "iceberg"} <= set(node.kinds)
    assert node.owners == ["team:clinical-data"]


def test_example_loads_in_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_DAGSTER_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "examples.clinical_ai.definitions",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_yaml_twin_declares_the_same_planes_and_cdc_tables() -> None:
    from examples.clinical_ai.definitions import defs as python_defs
    from examples.clinical_ai.yaml_definitions import defs as load_yaml_defs

    yaml_defs = load_yaml_defs()
    assert validate_definitions(yaml_defs).ok
    python_graph, yaml_graph = python_defs.resolve_asset_graph(), yaml_defs.resolve_asset_graph()
    cdc_keys = {k for k in python_graph.get_all_asset_keys() if k.path[0] == "clinical"}
    assert set(yaml_graph.get_all_asset_keys()) == cdc_keys
    for key in cdc_keys:
        assert yaml_graph.get(key).tags == python_graph.get(key).tags
        assert yaml_graph.get(key).kinds == python_graph.get(key).kinds
    planes = {k: v for k, v in (yaml_defs.resources or {}).items() if isinstance(v, DataPlane)}
    assert {k: v.jurisdiction for k, v in planes.items()} == {
        k: v.jurisdiction for k, v in (python_defs.resources or {}).items() if isinstance(v, DataPlane)
    }
