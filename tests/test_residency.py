"""The residency model: classification order, transfer routes and the policy."""

import pytest
from hypothesis import given, strategies as st

from hybrid_dagster.residency import (
    Classification,
    Jurisdiction,
    ResidencyPolicy,
    ResidencyViolation,
    TransferRoute,
)

ORDER = [
    Classification.PUBLIC,
    Classification.INTERNAL,
    Classification.CONFIDENTIAL,
    Classification.RESTRICTED,
]
SCC = TransferRoute(source="eu", target="US", legal_basis="GDPR Art. 46 SCCs", classifications=["Internal"])


@given(st.sampled_from(ORDER), st.sampled_from(ORDER))
def test_classification_comparisons_follow_sensitivity(a: Classification, b: Classification) -> None:
    ra, rb = ORDER.index(a), ORDER.index(b)
    assert (a < b, a <= b, a > b, a >= b) == (ra < rb, ra <= rb, ra > rb, ra >= rb)
    assert max(a, b) == ORDER[max(ra, rb)]
    assert Classification.highest([a, b]) == ORDER[max(ra, rb)]


def test_regulated_and_parse() -> None:
    assert [c.is_regulated for c in ORDER] == [False, False, True, True]
    assert Classification.parse("Restricted") is Classification.RESTRICTED
    assert Classification.highest([]) is Classification.PUBLIC
    with pytest.raises(
        ValueError, match="unknown classification 'secret'; expected one of public < internal"
    ):
        Classification.parse("secret")
    assert Jurisdiction.parse("eu") is Jurisdiction.EU
    with pytest.raises(ValueError, match="unknown jurisdiction 'XX'"):
        Jurisdiction.parse("XX")


def test_transfer_route_normalises_and_validates() -> None:
    assert (SCC.source, SCC.target, SCC.classifications) == ("EU", "US", ["internal"])
    assert SCC.describe() == "EU->US (GDPR Art. 46 SCCs)"
    assert SCC.covers("EU", "US", Classification.INTERNAL)
    assert not SCC.covers("EU", "US", Classification.CONFIDENTIAL)
    assert not SCC.covers("US", "EU", Classification.INTERNAL)
    with pytest.raises(ValueError, match="legal basis"):
        TransferRoute(source="EU", target="US", legal_basis=" ", classifications=["internal"])
    with pytest.raises(ValueError, match="must name the classifications"):
        TransferRoute(source="EU", target="US", legal_basis="SCCs", classifications=[])


def test_policy_check_transfer() -> None:
    policy = ResidencyPolicy(routes=[SCC])

    assert (
        policy.check_transfer(what="x", source="EU", target="EU", classification=Classification.RESTRICTED)
        is None
    )
    assert (
        policy.check_transfer(what="x", source="EU", target="JP", classification=Classification.INTERNAL)
        is None
    )
    with pytest.raises(ResidencyViolation) as raised:
        policy.check_transfer(
            what="claims", source="EU", target="US", classification=Classification.CONFIDENTIAL
        )
    assert str(raised.value) == (
        "claims: confidential data may not move from EU to US: no declared transfer route covers "
        "confidential data EU->US (the declared route EU->US (GDPR Art. 46 SCCs) covers only internal)"
    )
    allowed = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="DPF", classifications=["confidential"])]
    )
    route = allowed.check_transfer(
        what="x", source="EU", target="US", classification=Classification.CONFIDENTIAL
    )
    assert route is not None and route.legal_basis == "DPF"
