"""What GPU capacity existed and what was torn down, in the lease store's database (for cost reports).

Correctness rules: observations are keyed by incarnation (a re-created unit with the same name is a new
row); a teardown is recorded once per incarnation, with the cost it saved.

Example:
    >>> history = CapacityHistory(store)
    >>> history.observe(units, now=time.time())
    >>> history.teardowns(since=0.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from hybrid_dagster.gpu.leases import LeaseStore, metadata
from hybrid_dagster.gpu.model import CapacityUnit

capacity_table = sa.Table(
    "hd_gpu_capacity",
    metadata,
    sa.Column("incarnation", sa.String(200), primary_key=True),
    sa.Column("pool", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(50), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)

teardowns_table = sa.Table(
    "hd_gpu_teardowns",
    metadata,
    sa.Column("incarnation", sa.String(200), primary_key=True),
    sa.Column("pool", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(50), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("reason", sa.String(400), nullable=False),
    sa.Column("cost_saved_usd", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Observation:
    """A unit of capacity seen alive from ``first_seen`` to ``last_seen``."""

    incarnation: str
    pool: str
    backend: str
    name: str
    gpus: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class TeardownRecord:
    """One torn-down incarnation and what it saved."""

    incarnation: str
    pool: str
    backend: str
    name: str
    gpus: int
    at: float
    reason: str
    cost_saved_usd: float


class CapacityHistory:
    """Capacity observations and teardowns, next to the leases.

    Example:
        >>> CapacityHistory(store).record_teardown(unit, at=now, reason="idle 45 min", cost_saved_usd=12.5)
    """

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        metadata.create_all(store.engine, tables=[capacity_table, teardowns_table])

    def observe(self, units: Iterable[CapacityUnit], *, now: float) -> None:
        """Extend the observed lifetime of each readable unit to ``now`` (one transaction)."""
        seen = [u for u in units if u.readable]
        if not seen:
            return
        with self.store.engine.begin() as conn:
            known = {
                row[0]
                for start in range(0, len(seen), 500)
                for row in conn.execute(
                    sa.select(capacity_table.c.incarnation).where(
                        capacity_table.c.incarnation.in_([u.incarnation for u in seen[start : start + 500]])
                    )
                )
            }
            fresh = [u for u in seen if u.incarnation not in known]
            if fresh:
                conn.execute(
                    capacity_table.insert(),
                    [
                        {
                            "incarnation": u.incarnation,
                            "pool": u.pool,
                            "backend": u.backend,
                            "name": u.name,
                            "gpus": u.gpus,
                            "first_seen": u.launched_at if u.launched_at is not None else now,
                            "last_seen": now,
                        }
                        for u in fresh
                    ],
                )
            old = [u.incarnation for u in seen if u.incarnation in known]
            for start in range(0, len(old), 500):
                conn.execute(
                    capacity_table.update()
                    .where(capacity_table.c.incarnation.in_(old[start : start + 500]))
                    .values(last_seen=now)
                )

    def record_teardown(self, unit: CapacityUnit, *, at: float, reason: str, cost_saved_usd: float) -> None:
        self.record_teardowns([(unit, reason, cost_saved_usd)], at=at)

    def record_teardowns(self, done: Sequence[tuple[CapacityUnit, str, float]], *, at: float) -> None:
        """Record torn-down units ``(unit, reason, cost saved)`` in one transaction, once per incarnation."""
        if not done:
            return
        with self.store.engine.begin() as conn:
            known = {
                row[0]
                for row in conn.execute(
                    sa.select(teardowns_table.c.incarnation).where(
                        teardowns_table.c.incarnation.in_([u.incarnation for u, _, _ in done])
                    )
                )
            }
            fresh = [
                {
                    "incarnation": unit.incarnation,
                    "pool": unit.pool,
                    "backend": unit.backend,
                    "name": unit.name,
                    "gpus": unit.gpus,
                    "at": at,
                    "reason": reason[:400],
                    "cost_saved_usd": cost,
                }
                for unit, reason, cost in done
                if unit.incarnation not in known
            ]
            if fresh:
                conn.execute(teardowns_table.insert(), fresh)

    def observations(self, since: float, pools: Sequence[str] | None = None) -> list[Observation]:
        query = sa.select(capacity_table).where(capacity_table.c.last_seen >= since)
        if pools is not None:
            query = query.where(capacity_table.c.pool.in_(list(pools)))
        with self.store.engine.connect() as conn:
            return [Observation(**dict(row)) for row in conn.execute(query).mappings()]

    def teardowns(self, since: float) -> list[TeardownRecord]:
        query = sa.select(teardowns_table).where(teardowns_table.c.at >= since)
        with self.store.engine.connect() as conn:
            return [TeardownRecord(**dict(row)) for row in conn.execute(query).mappings()]
