"""`pinned()`: the residency tags, and the plane and jurisdiction as kinds for the lineage graph."""

from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.pinning import pinned
from tests.planes import make_plane


def test_a_plane_object_brings_its_name_and_jurisdiction_as_kinds(tmp_path: Path) -> None:
    eu = make_plane(tmp_path, "eu-onprem", "EU")

    @dg.asset(**pinned(eu, "Restricted", kinds={"iceberg"}))
    def patients() -> None: ...

    spec = patients.specs_by_key[dg.AssetKey("patients")]
    assert spec.tags["hybrid/plane"] == "eu-onprem" and spec.tags["hybrid/classification"] == "restricted"
    assert spec.kinds == {"iceberg", "eu-onprem", "EU"}
    # the graph Dagster builds (and serves to the UI's lineage view) carries them as kinds
    node = dg.Definitions(assets=[patients]).resolve_asset_graph().get(dg.AssetKey("patients"))
    assert node.kinds == {"iceberg", "eu-onprem", "EU"}


def test_a_plane_name_shows_the_jurisdiction_given_or_none() -> None:
    assert pinned("us-cloud", "internal", jurisdiction="us")["kinds"] == {"us-cloud", "US"}
    assert pinned("us-cloud", "internal")["kinds"] == {"us-cloud"}


def test_a_jurisdiction_that_contradicts_the_plane_is_refused(tmp_path: Path) -> None:
    eu = make_plane(tmp_path, "eu-onprem", "EU")
    with pytest.raises(ValueError, match="the plane is in EU"):
        pinned(eu, "restricted", jurisdiction="US")
    with pytest.raises(ValueError, match="unknown jurisdiction"):
        pinned("eu-onprem", "restricted", jurisdiction="Atlantis")
