"""Asset factory: a model trained on a plane's Iceberg tables, on a GPU pool of the data's jurisdiction.

Correctness rules:

- The asset is pinned (``hybrid/plane``) to the plane of its first pool, so the static residency check
  refuses a pool outside the data's jurisdiction before anything runs; ``hybrid/gpu_pool`` names the pool.
- At run time placement picks the pool (jurisdiction of the inputs as a hard filter, on-prem first, burst
  to a cloud pool of the same jurisdiction only when on-prem is full and bursting is allowed, the model
  lineage's driver/CUDA versions kept) and takes a lease; a full pool after placement (another run won the
  race) re-places. The lease is released however the run ends and heartbeats while it runs.
- The training code runs inside the chosen pool's plane through ``DataPlane.run`` (a subprocess with
  ``CUDA_VISIBLE_DEVICES`` from the lease, or a Kubernetes pod with the pool's node selector, tolerations,
  GPU limits and teardown labels); only metrics, counts, snapshot ids and paths come back.
- The first successful run of a lineage pins its (driver, CUDA) versions.

Example:
    .. code-block:: python

        from hybrid_dagster.assets.training import TrainingInput, training_asset

        readmission = training_asset(
            key=["models", "readmission_risk"],
            module="clinical.work.train_readmission",
            pools=[eu_onprem_a100, eu_cloud_h100],
            inputs=[TrainingInput("clinical/encounters", eu_onprem, "clinical.encounters")],
            lineage="readmission-risk",
        )
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from hybrid_dagster.gpu.errors import PoolFull
from hybrid_dagster.gpu.model import Demand, Lease, Placement
from hybrid_dagster.gpu.placement import place
from hybrid_dagster.pinning import pinned
from hybrid_dagster.plane.models import TRAINING_EXTRAS_KEY
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.gpu_pool import GPU_POOL_TAG, GpuPool

TRAINING_TEXT_METADATA = ("hybrid/registry_table", "model_path")
TRAINING_METADATA_KEYS = ("training_rows", "metric/*", "input_snapshot/*")
"""What a training run reports: metrics, counts, snapshot ids and where its model is (declared, so that
regulated training runs may report them)."""
PLACEMENT_ATTEMPTS = 3


@dataclass(frozen=True)
class TrainingInput:
    """An Iceberg table a model is trained on: its asset, its plane and its identifier there.

    Example:
        >>> TrainingInput("clinical/lab_results", eu_onprem, "clinical.lab_results")
    """

    asset: str | Sequence[str] | dg.AssetKey
    plane: DataPlane
    table: str

    @property
    def key(self) -> dg.AssetKey:
        if isinstance(self.asset, dg.AssetKey):
            return self.asset
        if isinstance(self.asset, str):
            return dg.AssetKey.from_user_string(self.asset)
        return dg.AssetKey(list(self.asset))


def training_asset(
    *,
    key: str | Sequence[str] | dg.AssetKey,
    module: str,
    pools: Sequence[GpuPool],
    inputs: Sequence[TrainingInput],
    lineage: str | None = None,
    gpus: int = 1,
    allow_burst: bool = True,
    classification: str = "restricted",
    registry_table: str = "models.registry",
    code_version: str = "1",
    group_name: str | None = None,
    owners: Sequence[str] = (),
    kinds: Iterable[str] = ("scikitlearn", "iceberg"),
    description: str | None = None,
) -> dg.AssetsDefinition:
    """A training asset: placement, a GPU lease, and ``module`` run inside the chosen pool's plane.

    ``module`` runs with :func:`hybrid_dagster.plane.models.open_training`; its registry row lands in
    ``registry_table`` of the plane it ran in. ``pools`` are the candidates, the first one's plane is the
    asset's ``hybrid/plane``.

    Example:
        .. code-block:: python

            us_model = training_asset(
                key="models/us_high_cost_claims", module="clinical.work.train_claims",
                pools=[us_onprem_l40s, us_cloud_a10g],
                inputs=[TrainingInput("us/claims", us_onprem, "claims.claims")],
                lineage="high-cost-claims", owners=["team:us-ml"],
            )
    """
    if not pools:
        raise ValueError("training_asset needs at least one GpuPool")
    if not inputs:
        raise ValueError("training_asset needs at least one TrainingInput (the data it is trained on)")
    asset_key = (
        key
        if isinstance(key, dg.AssetKey)
        else (dg.AssetKey.from_user_string(key) if isinstance(key, str) else dg.AssetKey(list(key)))
    )
    name = asset_key.to_user_string()
    stores = {pool.lease_store for pool in pools}
    if len(stores) > 1:
        raise ValueError(
            f"training asset {name!r}: its GPU pools must share one lease store, got {len(stores)}"
        )
    primary = pools[0]
    model_lineage = lineage or name
    by_name = {pool.name: pool for pool in pools}
    args = pinned(primary.plane, classification, kinds=kinds, tags={GPU_POOL_TAG: primary.name})
    known_planes = [*{p.plane.name: p.plane for p in pools}.values(), *[i.plane for i in inputs]]

    @dg.asset(
        key=asset_key,
        deps=[i.key for i in inputs],
        group_name=group_name,
        owners=list(owners),
        code_version=code_version,
        description=description
        or f"Model {model_lineage!r} trained on {', '.join(i.table for i in inputs)}.",
        metadata={
            **args["metadata"],
            "hybrid/gpu_pools": ", ".join(pool.name for pool in pools),
            "hybrid/model_lineage": model_lineage,
        },
        tags=args["tags"],
        kinds=args["kinds"],
    )
    def _train(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = primary.store()
        demand = Demand(
            gpus=gpus,
            jurisdictions=frozenset(i.plane.jurisdiction for i in inputs),
            lineage=model_lineage,
            lineage_versions=store.lineage_versions(model_lineage),
            allow_burst=allow_burst,
        )
        placement, lease = _place_and_lease(context, demand, pools, name)
        pool = by_name[placement.pool]
        context.log.info(
            f"training {name} on GPU pool {pool.name} ({pool.location}, {pool.jurisdiction}, "
            f"{lease.gpus} x {pool.accelerator}, devices {lease.cuda_visible_devices}); "
            + "; ".join(f"{p}: {why}" for p, why in sorted(placement.exclusions.items()))
        )
        with pool.held(lease):
            spec = {
                "asset": name,
                "run_id": context.run.run_id,
                "lineage": model_lineage,
                "inputs": [
                    {"asset": i.key.to_user_string(), "plane": i.plane.name, "table": i.table} for i in inputs
                ],
                "pool": pool.name,
                "accelerator": pool.accelerator,
                "gpus": lease.gpus,
                "driver_version": pool.driver_version,
                "cuda_version": pool.cuda_version,
                "code_version": code_version,
                "registry_table": registry_table,
            }
            invocation = pool.leased_plane(lease).run(
                context,
                module=module,
                extras={TRAINING_EXTRAS_KEY: spec},
                known_planes=known_planes,
                allowed_text_metadata=TRAINING_TEXT_METADATA,
                allowed_metadata_keys=TRAINING_METADATA_KEYS,
            )
            result = invocation.get_materialize_result()
        store.record_lineage(model_lineage, (pool.driver_version, pool.cuda_version), pool.name)
        return dg.MaterializeResult(
            metadata={
                **(result.metadata or {}),
                GPU_POOL_TAG: pool.name,
                "hybrid/placement": "burst (cloud)" if placement.burst else pool.location.replace("_", "-"),
                "hybrid/jurisdiction": pool.jurisdiction,
                "hybrid/accelerator": f"{lease.gpus} x {pool.accelerator}",
                "hybrid/versions": f"driver {pool.driver_version}, CUDA {pool.cuda_version}",
                "gpu_hours_price_usd": pool.price_per_gpu_hour,
            },
            data_version=result.data_version,
        )

    return _train


def _place_and_lease(
    context: dg.AssetExecutionContext, demand: Demand, pools: Sequence[GpuPool], name: str
) -> tuple[Placement, Lease]:
    """Place, then lease; when another run filled the chosen pool in between, place again."""
    store = pools[0].store()
    facts = [pool.facts() for pool in pools]
    capacities = {pool.name: pool.capacity_gpus for pool in pools}
    by_name = {pool.name: pool for pool in pools}
    for attempt in range(1, PLACEMENT_ATTEMPTS + 1):
        placement = place(demand, facts, store.free_gpus(capacities), what=f"training asset {name!r}")
        pool = by_name[placement.pool]
        try:
            lease = store.acquire(
                pool.name, gpus=demand.gpus, capacity=pool.capacity_gpus, run_id=context.run.run_id
            )
        except PoolFull:
            if attempt == PLACEMENT_ATTEMPTS:
                raise
            continue
        return placement, lease
    raise AssertionError("unreachable")
