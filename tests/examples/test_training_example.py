"""The example's GPU module wires into the example's code location and validates clean."""

import dagster as dg

from examples.clinical_ai.training import EU_MODEL_KEY, US_MODEL_KEY, gpu_assets, gpu_sensors
from hybrid_dagster.residency import Classification
from hybrid_dagster.validation import effective_classifications, validate_definitions


def test_training_assets_join_the_example_and_validate_clean() -> None:
    from examples.clinical_ai import definitions as example

    combined = dg.Definitions(
        assets=[
            example.clinical_cdc,
            example.eu_ward_occupancy,
            example.eu_lab_features,
            example.us_claims,
            example.us_claims_by_ward,
            example.group_ward_benchmark,
            *gpu_assets,
        ],
        sensors=gpu_sensors,
        resources={
            **{p.name.replace("-", "_"): p for p in example.PLANES},
            "residency_policy": example.POLICY,
        },
    )
    dg.Definitions.validate_loadable(combined)
    report = validate_definitions(combined)
    assert report.ok, report.lines()
    classes = effective_classifications(combined)
    assert classes[EU_MODEL_KEY] == Classification.RESTRICTED
    assert classes[dg.AssetKey("gpu_cost_report")] == Classification.INTERNAL
    nodes = combined.resolve_asset_graph()
    eu = nodes.get(EU_MODEL_KEY)
    assert eu.tags["hybrid/plane"] == "eu-onprem" and eu.tags["hybrid/gpu_pool"] == "eu-onprem-a100"
    assert {
        dg.AssetKey(["clinical", "encounters"]),
        dg.AssetKey(["clinical", "lab_results"]),
    } <= eu.parent_keys
    us = nodes.get(US_MODEL_KEY)
    assert us.tags["hybrid/plane"] == "us-onprem" and us.parent_keys == {dg.AssetKey(["us", "claims"])}
