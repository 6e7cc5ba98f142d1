"""Placement of a training run on a GPU pool: pure, fast, and explicit about every refusal.

Correctness rules:

- Jurisdiction is a hard filter: a pool is a candidate only if it sits in the (single) jurisdiction of the
  run's input data. Nothing ever falls through to another jurisdiction; input data from several
  jurisdictions, or of unknown jurisdiction, has no candidate at all.
- On-prem first: a cloud pool is chosen only when every eligible on-prem pool lacks the free GPUs, and only
  when the run allows bursting.
- Version parity: once a model lineage was trained with a (driver, CUDA) pair, only pools with the same
  pair are eligible; a mismatch is stated as the reason.
- No eligible pool raises :class:`~hybrid_dagster.gpu.errors.NoEligiblePool`, naming every pool and why it
  was excluded.

Example:
    >>> from hybrid_dagster.gpu.model import Demand, PoolFacts
    >>> eu = PoolFacts("eu-onprem-a100", "eu-onprem", "EU", "on_prem", "A100", 8, 1.1, "550.54", "12.4")
    >>> place(Demand(gpus=2, jurisdictions=frozenset({"EU"})), [eu], {"eu-onprem-a100": 8}).pool
    'eu-onprem-a100'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hybrid_dagster.gpu.errors import NoEligiblePool
from hybrid_dagster.gpu.model import Demand, Placement, PoolFacts


def static_exclusion(demand: Demand, pool: PoolFacts) -> str | None:
    """Why ``pool`` can never take ``demand`` (whatever is free), or None.

    Example:
        >>> static_exclusion(Demand(1, frozenset({"US"})), eu_pool)
        "jurisdiction EU is not the input data's jurisdiction (US): jurisdiction is a hard filter"
    """
    places = sorted(demand.jurisdictions)
    if not places:
        return "the input data's jurisdiction is unknown: no pool may take it"
    if len(places) > 1:
        return f"the input data spans {', '.join(places)}; a pool sits in one jurisdiction"
    if pool.jurisdiction != places[0]:
        return (
            f"jurisdiction {pool.jurisdiction} is not the input data's jurisdiction ({places[0]}): "
            "jurisdiction is a hard filter"
        )
    if demand.accelerator is not None and pool.accelerator != demand.accelerator:
        return f"accelerator {pool.accelerator}, the run asks for {demand.accelerator}"
    if demand.lineage_versions is not None and pool.versions != demand.lineage_versions:
        driver, cuda = demand.lineage_versions
        return (
            f"driver {pool.driver_version} / CUDA {pool.cuda_version} differ from model lineage "
            f"{demand.lineage!r} (driver {driver} / CUDA {cuda}): version parity refuses it"
        )
    if pool.capacity_gpus < demand.gpus:
        return f"capacity {pool.capacity_gpus} GPUs, the run needs {demand.gpus}"
    return None


def place(
    demand: Demand,
    pools: Sequence[PoolFacts],
    free_gpus: Mapping[str, int],
    *,
    what: str = "this training run",
) -> Placement:
    """Choose the pool for ``demand`` given each pool's free GPUs; raise ``NoEligiblePool`` if none.

    Pools are tried in the order given within each tier (on-prem, then cloud).

    Example:
        >>> place(demand, [eu_onprem, eu_cloud], {"eu-onprem-a100": 0, "eu-cloud-h100": 8}).burst
        True
    """
    if demand.gpus < 1:
        raise ValueError(f"{what}: a demand needs at least one GPU, got {demand.gpus}")
    exclusions: dict[str, str] = {}
    on_prem: list[PoolFacts] = []
    cloud: list[PoolFacts] = []
    for pool in pools:
        reason = static_exclusion(demand, pool)
        if reason is not None:
            exclusions[pool.name] = reason
        else:
            (cloud if pool.burst else on_prem).append(pool)
    for pool in on_prem:
        free = free_gpus.get(pool.name, 0)
        if free >= demand.gpus:
            chosen = Placement(pool=pool.name, burst=False, exclusions=exclusions)
            for other in on_prem + cloud:
                if other.name != pool.name:
                    exclusions.setdefault(other.name, f"not needed: on-prem pool {pool.name} has room")
            return chosen
        exclusions[pool.name] = f"full: {free} of {pool.capacity_gpus} GPUs free, {demand.gpus} needed"
    for pool in cloud:
        if not demand.allow_burst:
            exclusions[pool.name] = "cloud burst pool, and bursting is not allowed for this run"
            continue
        free = free_gpus.get(pool.name, 0)
        if free >= demand.gpus:
            for other in cloud:
                if other.name != pool.name and other.name not in exclusions:
                    exclusions[other.name] = f"not needed: burst pool {pool.name} has room"
            return Placement(pool=pool.name, burst=True, exclusions=exclusions)
        exclusions[pool.name] = f"full: {free} of {pool.capacity_gpus} GPUs free, {demand.gpus} needed"
    raise NoEligiblePool(what, exclusions)
