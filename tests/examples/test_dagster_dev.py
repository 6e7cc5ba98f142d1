"""The example loads in `dagster dev`: the webserver serves its assets with the residency tags, and the
plane and jurisdiction as kinds, which the lineage graph draws on every node (Dagster 1.13 draws an
asset node's ``kinds`` in its footer; tags show only on the asset page)."""

from pathlib import Path

from tests.dagster_dev import running_dagster_dev

QUERY = "{ assetNodes { assetKey { path } kinds tags { key value } } }"
JURISDICTION = {"eu-onprem": "EU", "eu-cloud": "EU", "us-onprem": "US", "us-cloud": "US"}


def test_dagster_dev_serves_the_example_with_residency_tags(tmp_path: Path) -> None:
    with running_dagster_dev(tmp_path) as ui:
        nodes = ui.graphql(QUERY)["data"]["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert len(by_key) == 8
    patients = by_key["clinical/patients"]
    tags = {t["key"]: t["value"] for t in patients["tags"]}
    assert tags["hybrid/plane"] == "eu-onprem" and tags["hybrid/classification"] == "restricted"
    assert {"postgres", "iceberg"} <= set(patients["kinds"])
    # every node of the lineage graph shows where its asset lives: its plane and that plane's jurisdiction
    for key, node in by_key.items():
        plane = {t["key"]: t["value"] for t in node["tags"]}["hybrid/plane"]
        assert {plane, JURISDICTION[plane]} <= set(node["kinds"]), key
