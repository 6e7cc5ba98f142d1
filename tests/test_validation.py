"""The static residency check over real Definitions objects."""

from __future__ import annotations

import dagster as dg
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    Classification,
    ResidencyPolicy,
    ResidencyViolation,
    TransferRoute,
)
from hybrid_dagster.validation import (
    ResidencyCheckFailed,
    ViolationKind,
    asset_classification,
    asset_plane_name,
    effective_classifications,
    enforce_residency,
    find_planes,
    find_policy,
    hybrid_definitions,
    validate_definitions,
)
from tests.defs.common import EU_ONPREM, PLANES, POLICY, US_CLOUD, plane

PATIENTS = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))


def _defs(*assets: object, policy: ResidencyPolicy | None = POLICY, **resources: object) -> dg.Definitions:
    all_resources: dict[str, object] = {**PLANES, **resources}
    if policy is not None:
        all_resources["residency_policy"] = policy
    return dg.Definitions(assets=list(assets), resources=all_resources)  # type: ignore[arg-type]


def test_clean_graph_is_ok_and_summarised() -> None:
    from tests.defs.clean import defs

    report = validate_definitions(defs)

    assert report.ok, report.lines()
    assert report.summary() == "residency ok: 4 assets on 3 planes in 2 jurisdictions, 1 declared route"
    assert report.lines() == [report.summary()]
    assert report.planes == {"eu-onprem": "EU", "eu-cloud": "EU", "us-cloud": "US"}
    assert report.assets[dg.AssetKey("ward_counts")].effective == Classification.INTERNAL
    assert report.assets[dg.AssetKey("cohort")].classified_at == dg.AssetKey("cohort")


def test_direct_restricted_edge_into_another_jurisdiction() -> None:
    @dg.asset(deps=[PATIENTS], **pinned("us-cloud", "restricted"))
    def us_copy() -> None: ...

    report = validate_definitions(_defs(PATIENTS, us_copy))

    assert not report.ok
    [violation] = report.violations
    assert violation.kind == ViolationKind.TRANSFER
    assert violation.upstream == dg.AssetKey("patients")
    assert violation.asset == dg.AssetKey("us_copy")
    assert violation.classification == Classification.RESTRICTED
    assert (violation.source_jurisdiction, violation.target_jurisdiction) == ("EU", "US")
    assert violation.message.startswith("patients (eu-onprem, EU) -> us_copy (us-cloud, US), restricted: ")
    assert "the declared route EU->US (GDPR Art. 46 SCCs) covers only internal" in violation.message
    assert report.summary().startswith("residency check failed: 1 problem in 2 assets")


def test_violation_two_hops_down_through_an_internal_tagged_asset() -> None:
    @dg.asset(deps=[PATIENTS], **pinned("eu-cloud", "internal"))
    def visit_stats() -> None: ...

    @dg.asset(deps=[visit_stats], **pinned("us-cloud", "internal"))
    def us_dashboard() -> None: ...

    report = validate_definitions(_defs(PATIENTS, visit_stats, us_dashboard))

    [violation] = report.violations
    assert violation.upstream == dg.AssetKey("visit_stats")
    assert violation.asset == dg.AssetKey("us_dashboard")
    assert violation.classification == Classification.RESTRICTED
    assert violation.classified_at == dg.AssetKey("patients")
    assert violation.message.startswith(
        "visit_stats (eu-cloud, EU) -> us_dashboard (us-cloud, US), restricted (inherited from patients): "
    )
    assert effective_classifications(_defs(PATIENTS, visit_stats, us_dashboard)) == {
        dg.AssetKey("patients"): Classification.RESTRICTED,
        dg.AssetKey("visit_stats"): Classification.RESTRICTED,
        dg.AssetKey("us_dashboard"): Classification.RESTRICTED,
    }


def test_declassified_aggregate_crosses_freely_without_any_route() -> None:
    @dg.asset(deps=[PATIENTS], **pinned("eu-onprem", "internal", declassified="counts per ward, k >= 10"))
    def ward_counts() -> None: ...

    @dg.asset(deps=[ward_counts], **pinned("us-cloud", "internal"))
    def us_dashboard() -> None: ...

    report = validate_definitions(_defs(PATIENTS, ward_counts, us_dashboard, policy=None))

    assert report.ok, report.lines()
    assert report.routes == 0
    assert report.assets[dg.AssetKey("us_dashboard")].effective == Classification.INTERNAL


def test_edge_into_a_declassified_aggregate_is_still_checked() -> None:
    @dg.asset(deps=[PATIENTS], **pinned("us-cloud", "internal", declassified="counts per ward, k >= 10"))
    def ward_counts() -> None: ...

    @dg.asset(deps=[ward_counts], **pinned("us-cloud", "public"))
    def us_dashboard() -> None: ...

    report = validate_definitions(_defs(PATIENTS, ward_counts, us_dashboard))

    [violation] = report.violations
    assert (violation.upstream, violation.asset) == (dg.AssetKey("patients"), dg.AssetKey("ward_counts"))
    assert violation.classification == Classification.RESTRICTED


def test_route_covering_internal_does_not_allow_confidential() -> None:
    claims = dg.AssetSpec("claims", **pinned("eu-onprem", "confidential"))

    @dg.asset(deps=[claims], **pinned("us-cloud", "confidential"))
    def us_claims() -> None: ...

    report = validate_definitions(_defs(claims, us_claims))
    [violation] = report.violations
    assert violation.classification == Classification.CONFIDENTIAL
    assert "no declared transfer route covers confidential data EU->US" in violation.message
    assert "covers only internal" in violation.message

    allowed = ResidencyPolicy(
        routes=[
            TransferRoute(
                source="EU", target="US", legal_basis="GDPR Art. 46 SCCs", classifications=["confidential"]
            )
        ]
    )
    assert validate_definitions(_defs(claims, us_claims, policy=allowed)).ok


def test_unregulated_data_crosses_without_route_and_route_is_directional() -> None:
    notes = dg.AssetSpec("notes", **pinned("eu-onprem", "internal"))

    @dg.asset(deps=[notes], **pinned("us-cloud", "internal"))
    def us_notes() -> None: ...

    us_records = dg.AssetSpec("us_records", **pinned("us-cloud", "confidential"))

    @dg.asset(deps=[us_records], **pinned("eu-onprem", "confidential"))
    def eu_records() -> None: ...

    eu_to_us = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="DPF", classifications=["confidential"])]
    )
    report = validate_definitions(_defs(notes, us_notes, us_records, eu_records, policy=eu_to_us))

    [violation] = report.violations
    assert (violation.source_jurisdiction, violation.target_jurisdiction) == ("US", "EU")


def test_classification_is_the_maximum_over_a_diamond() -> None:
    public = dg.AssetSpec("catalog", **pinned("eu-onprem", "public"))
    confidential = dg.AssetSpec("claims", **pinned("eu-onprem", "confidential"))

    @dg.asset(deps=[public, confidential, PATIENTS], **pinned("eu-onprem", "internal"))
    def joined() -> None: ...

    effective = effective_classifications(_defs(public, confidential, PATIENTS, joined))
    assert effective[dg.AssetKey("joined")] == Classification.RESTRICTED


def test_multi_assets_source_assets_and_prefixed_keys_are_checked() -> None:
    @dg.observable_source_asset(key=["ehr", "admissions"], tags=pinned("eu-onprem", "restricted")["tags"])
    def admissions() -> dg.DataVersion:
        return dg.DataVersion("1")

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["clinical", "beds"], deps=[admissions], **pinned("eu-onprem", "internal")),
            dg.AssetSpec(["clinical", "staff"], **pinned("us-cloud", "internal")),
        ]
    )
    def split():  # type: ignore[no-untyped-def]
        yield dg.MaterializeResult(asset_key=["clinical", "beds"])
        yield dg.MaterializeResult(asset_key=["clinical", "staff"])

    @dg.asset(key_prefix="us", deps=[dg.AssetKey(["clinical", "beds"])], **pinned("us-cloud", "internal"))
    def beds_report() -> None: ...

    report = validate_definitions(_defs(admissions, split, beds_report))

    [violation] = report.violations
    assert violation.message.startswith(
        "clinical/beds (eu-onprem, EU) -> us/beds_report (us-cloud, US), restricted "
        "(inherited from ehr/admissions)"
    )
    assert report.assets_checked == 4


def test_unknown_plane() -> None:
    report = validate_definitions(_defs(dg.AssetSpec("x", **pinned("mars-base", "public"))))

    [violation] = report.violations
    assert violation.kind == ViolationKind.UNKNOWN_PLANE
    assert violation.message == (
        "asset 'x' is pinned to plane 'mars-base', which is not a DataPlane resource of these "
        "Definitions (planes: eu-cloud, eu-onprem, us-cloud)"
    )


def test_missing_tags() -> None:
    no_class = dg.AssetSpec("no_class", tags={PLANE_TAG: "eu-onprem"})
    no_plane = dg.AssetSpec("no_plane", tags={CLASSIFICATION_TAG: "public"})

    report = validate_definitions(_defs(no_class, no_plane))

    assert {(v.kind, v.asset) for v in report.violations} == {
        (ViolationKind.MISSING_TAG, dg.AssetKey("no_class")),
        (ViolationKind.MISSING_TAG, dg.AssetKey("no_plane")),
    }
    messages = "\n".join(report.lines())
    assert "asset 'no_class' has no 'hybrid/classification' tag" in messages
    assert "asset 'no_plane' has no 'hybrid/plane' tag" in messages


def test_invalid_classification_value() -> None:
    spec = dg.AssetSpec("x", tags={PLANE_TAG: "eu-onprem", CLASSIFICATION_TAG: "top-secret"})

    [violation] = validate_definitions(_defs(spec)).violations

    assert violation.kind == ViolationKind.INVALID_TAG
    assert "asset 'x': invalid 'hybrid/classification' tag: unknown classification 'top-secret'" in (
        violation.message
    )


def test_duplicate_plane_names() -> None:
    report = validate_definitions(_defs(PATIENTS, eu_again=plane("eu-onprem", "EU", "/tmp/elsewhere")))

    [violation] = report.violations
    assert violation.kind == ViolationKind.DUPLICATE_PLANE
    assert violation.message == (
        "resources 'eu_onprem' and 'eu_again' are both DataPlane 'eu-onprem': plane names must be unique"
    )


def test_declassification_without_justification_is_an_error_and_does_not_declassify() -> None:
    @dg.asset(
        deps=[PATIENTS],
        tags={PLANE_TAG: "eu-onprem", CLASSIFICATION_TAG: "internal"},
        metadata={DECLASSIFIED_METADATA_KEY: "   "},
    )
    def counts() -> None: ...

    report = validate_definitions(_defs(PATIENTS, counts))

    [violation] = report.violations
    assert violation.kind == ViolationKind.DECLASSIFICATION
    assert "asset 'counts' is declassified" in violation.message
    assert report.assets[dg.AssetKey("counts")].effective == Classification.RESTRICTED


def test_undefined_upstream_asset_is_reported() -> None:
    @dg.asset(deps=["ghost"], **pinned("eu-onprem", "internal"))
    def haunted() -> None: ...

    [violation] = validate_definitions(_defs(haunted)).violations

    assert violation.kind == ViolationKind.UNDEFINED_ASSET
    assert violation.message.startswith("asset 'ghost' is used by haunted but not defined in the Definitions")


def test_policy_lookup() -> None:
    other = ResidencyPolicy(routes=[POLICY.routes[0]])
    assert find_policy(dg.Definitions(resources={"rules": other})) is other
    assert find_policy(dg.Definitions()).routes == []
    assert find_planes(_defs()) == {p.name: p for p in PLANES.values()}

    report = validate_definitions(dg.Definitions(resources={"a": other, "b": ResidencyPolicy()}))
    [violation] = report.violations
    assert violation.kind == ViolationKind.POLICY
    assert "several ResidencyPolicy resources (a, b)" in violation.message


def test_tag_helpers() -> None:
    spec = dg.AssetSpec("x", **pinned("eu-onprem", "confidential"))
    assert asset_plane_name(spec) == "eu-onprem"
    assert asset_classification(spec) == Classification.CONFIDENTIAL
    assert asset_plane_name({}) is None
    assert asset_classification({}) is None


def test_enforce_residency_raises_with_every_problem_and_passes_clean_defs() -> None:
    from tests.defs.clean import defs as clean

    @dg.asset(deps=[PATIENTS], **pinned("us-cloud", "restricted"))
    def us_copy() -> None: ...

    unknown = dg.AssetSpec("x", **pinned("mars-base", "public"))

    with pytest.raises(ResidencyViolation) as raised:
        enforce_residency(_defs(PATIENTS, us_copy, unknown))

    assert isinstance(raised.value, ResidencyCheckFailed)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("residency check failed: 2 problems")
    assert len(lines) == 3
    assert enforce_residency(clean) is clean


def test_hybrid_definitions_honours_strict() -> None:
    @dg.asset(deps=[PATIENTS], **pinned("us-cloud", "restricted"))
    def us_copy() -> None: ...

    resources = {"eu": EU_ONPREM, "us": US_CLOUD}
    with pytest.raises(ResidencyViolation):
        hybrid_definitions(
            assets=[PATIENTS, us_copy],
            resources={**resources, "residency_policy": ResidencyPolicy(strict=True)},
        )
    with pytest.warns(UserWarning, match="patients \\(eu-onprem, EU\\) -> us_copy"):
        defs = hybrid_definitions(assets=[PATIENTS, us_copy], resources=resources)
    assert isinstance(defs, dg.Definitions)


LEVELS = list(Classification)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LEVELS), st.booleans()), min_size=1, max_size=6))
def test_effective_classification_along_a_chain(chain: list[tuple[Classification, bool]]) -> None:
    """Along a chain, effective = max(declared, upstream effective) unless declassified."""
    specs = []
    expected: dict[dg.AssetKey, Classification] = {}
    previous: Classification | None = None
    for i, (level, declassified) in enumerate(chain):
        key = dg.AssetKey(f"a{i}")
        specs.append(
            dg.AssetSpec(
                key,
                deps=[f"a{i - 1}"] if i else [],
                **pinned("eu-onprem", level, declassified="aggregate" if declassified else None),
            )
        )
        effective = level if declassified or previous is None else max(level, previous, key=lambda c: c.rank)
        expected[key] = effective
        previous = effective

    assert effective_classifications(dg.Definitions(assets=specs)) == expected


def test_confidential_input_raises_an_internal_tagged_asset() -> None:
    claims = dg.AssetSpec("claims", **pinned("eu-onprem", "confidential"))

    @dg.asset(deps=[claims], **pinned("eu-onprem", "internal"))
    def claim_counts() -> None: ...

    @dg.asset(deps=[claim_counts], **pinned("us-cloud", "internal"))
    def us_counts() -> None: ...

    [violation] = validate_definitions(_defs(claims, claim_counts, us_counts)).violations

    assert violation.classification == Classification.CONFIDENTIAL
    assert "confidential (inherited from claims)" in violation.message


def test_plain_tags_on_a_plain_asset_work_like_the_helper() -> None:
    @dg.asset(tags={"hybrid/plane": "eu-onprem", "hybrid/classification": "restricted"})
    def referrals() -> None: ...

    @dg.asset(deps=[referrals], tags={"hybrid/plane": "us-cloud", "hybrid/classification": "internal"})
    def us_report() -> None: ...

    report = validate_definitions(_defs(referrals, us_report))
    assert not report.ok
    assert report.lines() == [v.message for v in report.violations]
    assert "referrals (eu-onprem, EU) -> us_report (us-cloud, US), restricted" in report.lines()[0]
