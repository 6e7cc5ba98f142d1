"""Placement: jurisdiction is a hard filter, on-prem first, burst only when on-prem is full, version parity,
and a refusal that names every pool - property-tested over random pools and demands."""

import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.errors import ValueFreeError
from hybrid_dagster.gpu.errors import NoEligiblePool
from hybrid_dagster.gpu.model import Demand, PoolFacts
from hybrid_dagster.gpu.placement import place, static_exclusion

JURISDICTIONS = ["EU", "US", "UK"]
VERSIONS = [("535.104", "12.2"), ("550.54", "12.4")]
ACCELERATORS = ["A100", "H100", "L40S"]


@st.composite
def pools(draw: st.DrawFn) -> list[PoolFacts]:
    count = draw(st.integers(min_value=0, max_value=8))
    found = []
    for i in range(count):
        driver, cuda = draw(st.sampled_from(VERSIONS))
        found.append(
            PoolFacts(
                name=f"pool-{i}",
                plane=f"plane-{i}",
                jurisdiction=draw(st.sampled_from(JURISDICTIONS)),
                location=draw(st.sampled_from(["on_prem", "cloud"])),
                accelerator=draw(st.sampled_from(ACCELERATORS)),
                capacity_gpus=draw(st.integers(min_value=1, max_value=16)),
                price_per_gpu_hour=1.0,
                driver_version=driver,
                cuda_version=cuda,
            )
        )
    return found


demands = st.builds(
    Demand,
    gpus=st.integers(min_value=1, max_value=8),
    jurisdictions=st.frozensets(st.sampled_from(JURISDICTIONS), min_size=0, max_size=2),
    lineage=st.just("readmission"),
    lineage_versions=st.one_of(st.none(), st.sampled_from(VERSIONS)),
    allow_burst=st.booleans(),
    accelerator=st.one_of(st.none(), st.sampled_from(ACCELERATORS)),
)


@settings(max_examples=400, deadline=None)
@given(pool_list=pools(), demand=demands, data=st.data())
def test_placement_properties(pool_list: list[PoolFacts], demand: Demand, data: st.DataObject) -> None:
    free = {p.name: data.draw(st.integers(min_value=0, max_value=p.capacity_gpus)) for p in pool_list}
    try:
        chosen = place(demand, pool_list, free)
    except NoEligiblePool as refused:
        # the error names every pool, each with a reason, and is value-free
        assert isinstance(refused, ValueFreeError)
        assert set(refused.exclusions) == {p.name for p in pool_list}
        assert all(refused.exclusions.values())
        for pool in pool_list:
            assert pool.name in str(refused)
        # nothing was eligible and free: no pool that passes the static filters has room (or may burst)
        for pool in pool_list:
            if static_exclusion(demand, pool) is None and free[pool.name] >= demand.gpus:
                assert pool.burst and not demand.allow_burst
        return
    pool = next(p for p in pool_list if p.name == chosen.pool)
    # jurisdiction is a hard filter: exactly the data's single jurisdiction
    assert demand.jurisdictions == {pool.jurisdiction}
    # parity and accelerator
    if demand.lineage_versions is not None:
        assert pool.versions == demand.lineage_versions
    if demand.accelerator is not None:
        assert pool.accelerator == demand.accelerator
    assert free[pool.name] >= demand.gpus
    eligible_on_prem = [p for p in pool_list if not p.burst and static_exclusion(demand, p) is None]
    if chosen.burst:
        # burst only when on-prem is full, and only when allowed
        assert pool.location == "cloud" and demand.allow_burst
        assert all(free[p.name] < demand.gpus for p in eligible_on_prem)
    else:
        assert pool.location == "on_prem"
    assert set(chosen.exclusions) | {chosen.pool} == {p.name for p in pool_list}


def _pool(name: str, jurisdiction: str, location: str, versions: tuple[str, str] = VERSIONS[1]) -> PoolFacts:
    return PoolFacts(name, f"{name}-plane", jurisdiction, location, "A100", 8, 1.0, *versions)  # type: ignore[arg-type]


def test_a_full_eu_on_prem_never_falls_through_to_a_free_us_pool() -> None:
    eu = _pool("eu-onprem-a100", "EU", "on_prem")
    us = _pool("us-onprem-a100", "US", "on_prem")
    with pytest.raises(NoEligiblePool) as refused:
        place(Demand(2, frozenset({"EU"}), allow_burst=False), [eu, us], {eu.name: 0, us.name: 8})
    assert "full: 0 of 8 GPUs free" in refused.value.exclusions[eu.name]
    assert "hard filter" in refused.value.exclusions[us.name]


def test_burst_to_cloud_of_the_same_jurisdiction_only_when_on_prem_is_full() -> None:
    eu, eu_cloud = _pool("eu-onprem", "EU", "on_prem"), _pool("eu-cloud", "EU", "cloud")
    demand = Demand(4, frozenset({"EU"}))
    assert place(demand, [eu_cloud, eu], {eu.name: 4, eu_cloud.name: 8}).pool == "eu-onprem"
    burst = place(demand, [eu, eu_cloud], {eu.name: 3, eu_cloud.name: 8})
    assert (burst.pool, burst.burst) == ("eu-cloud", True)
    assert burst.exclusions["eu-onprem"] == "full: 3 of 8 GPUs free, 4 needed"


def test_lineage_version_mismatch_is_refused_with_the_reason() -> None:
    old = _pool("eu-onprem", "EU", "on_prem", VERSIONS[0])
    demand = Demand(1, frozenset({"EU"}), lineage="readmission", lineage_versions=VERSIONS[1])
    with pytest.raises(NoEligiblePool, match=r"driver 535.104 / CUDA 12.2 differ from model lineage"):
        place(demand, [old], {old.name: 8})


def test_data_of_two_jurisdictions_has_no_pool() -> None:
    eu, us = _pool("eu", "EU", "on_prem"), _pool("us", "US", "on_prem")
    with pytest.raises(NoEligiblePool, match="spans EU, US"):
        place(Demand(1, frozenset({"EU", "US"})), [eu, us], {"eu": 8, "us": 8})
