"""DataPlanesComponent: planes and the residency policy from YAML, checked like the Python example."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.components import DataPlanesComponent
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import Classification, ResidencyPolicy
from hybrid_dagster.residency.graph import ViolationKind
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import validate_definitions
from tests.components import defs_tree, error_chain, example_tree

PLANES_YAML = """
type: hybrid_dagster.components.DataPlanesComponent
attributes:
  planes:
    - name: eu-onprem
      jurisdiction: {jurisdiction}
      region: fra-dc2
      location: on_prem
      warehouse: "file://{{{{ env.PLANES_TEST_HOME }}}}/eu-onprem"
      catalog: {{kind: sql, properties: {{s3.region: eu-central-1}}}}
      executor: {{kind: kubernetes, kube_context: eu-onprem, namespace: clinical}}
      secrets: {{backend: vault, address: "https://vault.eu.example.org", path_prefix: clinical/}}
      env: {{TZ: Europe/Berlin}}
      owners: ["team:platform"]
  routes:
    - source: EU
      target: us
      legal_basis: GDPR Art. 46(2)(c) standard contractual clauses
      classifications: [{route_classification}]
"""


def load_planes(
    tmp_path: Path, jurisdiction: str = "eu", route_classification: str = "Confidential"
) -> DataPlanesComponent:
    text = PLANES_YAML.format(jurisdiction=jurisdiction, route_classification=route_classification)
    return defs_tree(tmp_path, {"planes": text}).load_component("planes", DataPlanesComponent)


def test_example_yaml_gives_the_planes_and_policy_of_the_python_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from examples.clinical_ai import planes as python_example

    monkeypatch.setenv("HYBRID_DAGSTER_HOME", str(python_example.HOME))
    resources = example_tree().build_defs_at_path("planes").resources or {}

    assert set(resources) == {"eu_onprem", "eu_cloud", "us_onprem", "us_cloud", "residency_policy"}
    jurisdictions = {key: r.jurisdiction for key, r in resources.items() if isinstance(r, DataPlane)}
    assert jurisdictions == {"eu_onprem": "EU", "eu_cloud": "EU", "us_onprem": "US", "us_cloud": "US"}
    for plane in python_example.PLANES:
        assert resources[python_example.resource_key(plane)].to_config() == plane.to_config()

    policy = resources["residency_policy"]
    assert isinstance(policy, ResidencyPolicy)
    assert policy.model_dump() == python_example.POLICY.model_dump()
    route = policy.route_for("EU", "US", Classification.CONFIDENTIAL)
    assert route is not None and route.legal_basis == "GDPR Art. 46(2)(c) standard contractual clauses"
    assert policy.route_for("EU", "US", Classification.RESTRICTED) is None
    assert policy.strict


def test_every_plane_field_is_read_and_templates_are_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANES_TEST_HOME", str(tmp_path / "home"))
    component = load_planes(tmp_path)
    resources = dg.build_defs_for_component(component).resources or {}

    eu = resources["eu_onprem"]
    assert isinstance(eu, DataPlane)
    assert eu is component.plane("eu-onprem")
    assert eu.jurisdiction == "EU"  # normalized by DataPlane's own validator
    assert eu.warehouse == f"file://{tmp_path / 'home' / 'eu-onprem'}"
    assert eu.catalog.properties == {"s3.region": "eu-central-1"}
    assert (eu.executor.kind, eu.executor.kube_context, eu.executor.namespace) == (
        "kubernetes",
        "eu-onprem",
        "clinical",
    )
    assert (eu.secrets.backend, eu.secrets.path_prefix) == ("vault", "clinical/")
    assert eu.env == {"TZ": "Europe/Berlin"} and eu.owners == ["team:platform"]
    policy = resources["residency_policy"]
    assert isinstance(policy, ResidencyPolicy) and not policy.strict
    assert [(r.source, r.target, r.classifications) for r in policy.routes] == [
        ("EU", "US", ["confidential"])
    ]


def test_unknown_jurisdiction_fails_naming_the_value(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:
        load_planes(tmp_path, jurisdiction="Atlantis")
    message = error_chain(raised.value)
    assert "unknown jurisdiction 'Atlantis'; expected one of EU" in message
    assert "jurisdiction: Atlantis" in message  # the YAML around the error is shown


def test_unknown_route_classification_fails_naming_the_value(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:
        load_planes(tmp_path, route_classification="top-secret")
    assert "unknown classification 'top-secret'" in error_chain(raised.value)


def test_planes_sharing_a_resource_key_are_refused() -> None:
    plane = {"jurisdiction": "EU", "region": "fra", "location": "on_prem", "warehouse": "file:///srv/eu"}
    with pytest.raises(Exception, match=r"share the resource key 'eu_onprem'"):
        DataPlanesComponent.from_attributes_dict(
            attributes={"planes": [{"name": "eu-onprem", **plane}, {"name": "eu_onprem", **plane}]}
        )


def test_unknown_plane_name_lists_the_declared_ones() -> None:
    component = DataPlanesComponent(
        planes=[
            DataPlane(
                name="eu-onprem", jurisdiction="EU", region="fra", location="on_prem", warehouse="file:///srv"
            )
        ]
    )
    with pytest.raises(KeyError, match=r"no data plane named 'us-cloud'; declared: eu-onprem"):
        component.plane("us-cloud")


DR_YAML = """
type: hybrid_dagster.components.DataPlanesComponent
attributes:
  planes:
    - name: eu-onprem
      jurisdiction: EU
      region: fra-dc2
      location: on_prem
      warehouse: "file://{{{{ env.PLANES_TEST_HOME }}}}/eu-onprem"
      dr_secondary:
        name: eu-dr
        jurisdiction: {dr_jurisdiction}
        warehouse: "s3://meridian-eu-dr/warehouse"
        catalog: {{kind: sql, uri: "sqlite:///{{{{ env.PLANES_TEST_HOME }}}}/eu-dr.db"}}
        secret_refs: ["vault:clinical/cdc#password"]
        rto_objective_s: 600
"""


@pytest.mark.parametrize("dr_jurisdiction", ["EU", "US"])
def test_a_dr_secondary_declared_in_yaml_is_read_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dr_jurisdiction: str
) -> None:
    monkeypatch.setenv("PLANES_TEST_HOME", str(tmp_path / "home"))
    text = DR_YAML.format(dr_jurisdiction=dr_jurisdiction)
    component = defs_tree(tmp_path, {"planes": text}).load_component("planes", DataPlanesComponent)
    secondary = component.plane("eu-onprem").dr_secondary
    assert secondary is not None
    assert (secondary.name, secondary.jurisdiction, secondary.warehouse) == (
        "eu-dr",
        dr_jurisdiction,
        "s3://meridian-eu-dr/warehouse",
    )
    assert secondary.catalog.uri == f"sqlite:///{tmp_path / 'home'}/eu-dr.db"
    assert (secondary.secret_refs, secondary.rto_objective_s) == (["vault:clinical/cdc#password"], 600)

    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patients() -> None: ...

    planes = dg.build_defs_for_component(component)
    report = validate_definitions(dg.Definitions.merge(planes, dg.Definitions(assets=[patients])))
    refused = [v for v in report.violations if v.kind == ViolationKind.DR_TARGET]
    assert len(refused) == (1 if dr_jurisdiction == "US" else 0)
