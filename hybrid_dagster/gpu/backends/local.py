"""Local backend: on-prem GPU nodes registered in the lease store's database.

Correctness rules: each registration is a new incarnation (a uuid), so a node re-registered under the same
name is a different unit; terminating marks exactly that incarnation as torn down (the operator's drain /
power-off automation watches ``hd_gpu_local_nodes.terminated_at``).

Example:
    >>> backend = LocalBackend(store)
    >>> node = backend.register("eu-onprem-a100", "dgx-07", gpus=8)
    >>> [u.name for u in backend.list(["eu-onprem-a100"]).units]
    ['dgx-07']
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from hybrid_dagster.gpu.backends.base import GpuBackend, Listing
from hybrid_dagster.gpu.errors import BackendUnavailable
from hybrid_dagster.gpu.leases import LeaseStore, metadata
from hybrid_dagster.gpu.model import CapacityUnit

nodes_table = sa.Table(
    "hd_gpu_local_nodes",
    metadata,
    sa.Column("incarnation", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("launched_at", sa.Float, nullable=False),
    sa.Column("protected", sa.Boolean, nullable=False, default=False),
    sa.Column("terminated_at", sa.Float, nullable=True),
)


class LocalBackend(GpuBackend):
    """GPU nodes of on-prem pools, kept in the lease store's SQL database.

    Example:
        >>> LocalBackend(LeaseStore("sqlite:////srv/hybrid/gpu.db")).list(["eu-onprem-a100"])
    """

    kind = "local"

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        nodes_table.create(store.engine, checkfirst=True)

    def key(self) -> str:
        return f"local:{self.store.url}"

    def register(
        self,
        pool: str,
        name: str,
        *,
        gpus: int,
        protected: bool = False,
        launched_at: float | None = None,
    ) -> CapacityUnit:
        """Record a node (a new incarnation) of ``pool``."""
        incarnation = f"node-{uuid.uuid4().hex[:16]}"
        stamp = time.time() if launched_at is None else launched_at
        with self.store.engine.begin() as conn:
            conn.execute(
                nodes_table.insert().values(
                    incarnation=incarnation,
                    pool=pool,
                    name=name,
                    gpus=gpus,
                    launched_at=stamp,
                    protected=protected,
                )
            )
        return CapacityUnit(
            self.kind, pool, incarnation, name, gpus, stamp, "running", protected=protected, kind="node"
        )

    def list(self, pools: Sequence[str]) -> Listing:
        query = sa.select(nodes_table).where(
            nodes_table.c.pool.in_(list(pools)), nodes_table.c.terminated_at.is_(None)
        )
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as error:
            return Listing(self.kind, error=type(error).__name__, pools=tuple(pools))
        units = [
            CapacityUnit(
                backend=self.kind,
                pool=row["pool"],
                incarnation=row["incarnation"],
                name=row["name"],
                gpus=int(row["gpus"]),
                launched_at=float(row["launched_at"]),
                state="running",
                protected=bool(row["protected"]),
                kind="node",
            )
            for row in rows
        ]
        return Listing(self.kind, units=units, pools=tuple(pools))

    def terminate(self, unit: CapacityUnit) -> None:
        with self.store.engine.begin() as conn:
            done = conn.execute(
                nodes_table.update()
                .where(nodes_table.c.incarnation == unit.incarnation, nodes_table.c.terminated_at.is_(None))
                .values(terminated_at=time.time())
            ).rowcount
        if not done:
            raise BackendUnavailable(
                f"local GPU node {unit.name!r} (incarnation {unit.incarnation}) of pool {unit.pool!r} is "
                "already gone"
            )
