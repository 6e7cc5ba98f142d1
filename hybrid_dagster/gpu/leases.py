"""GPU leases in a SQL store (SQLAlchemy): SQLite by default, PostgreSQL in production.

Correctness rules:

- No over-booking: a lease is granted inside one transaction that holds the pool's lock row (``SELECT ...
  FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite, which takes the database write lock), counts
  the GPUs of the pool's live leases and inserts the new lease only if they fit. Concurrent runs in other
  processes therefore serialize on the pool.
- A live lease has no ``released_at`` and a heartbeat newer than ``ttl_s``. A lease whose run stopped
  heartbeating (the process died) expires: it stops counting at once and is marked ``expired`` by the next
  grant or sweep.
- A run that ends, fails or is cancelled releases its leases (:meth:`LeaseStore.release`); releasing twice
  is harmless. Released leases stay as history for cost reports.
- Device indices (``CUDA_VISIBLE_DEVICES``) of live leases of one pool never overlap.

Example:
    >>> store = LeaseStore("sqlite:////tmp/gpu_leases.db")
    >>> lease = store.acquire("eu-onprem-a100", gpus=2, capacity=8, run_id="run-1", incarnation="node-1")
    >>> lease.cuda_visible_devices
    '0,1'
    >>> store.release(lease.lease_id, "succeeded")
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from hybrid_dagster.gpu.errors import LeaseStoreError, PoolFull
from hybrid_dagster.gpu.model import Lease

DEFAULT_TTL_S = 300.0
"""A lease whose heartbeat is older than this (seconds) belongs to a dead run and expires."""

metadata = sa.MetaData()

pools_table = sa.Table(
    "hd_gpu_pools",
    metadata,
    sa.Column("pool", sa.String(200), primary_key=True),
    sa.Column("capacity", sa.Integer, nullable=False),
)

leases_table = sa.Table(
    "hd_gpu_leases",
    metadata,
    sa.Column("lease_id", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(200), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("devices", sa.String(400), nullable=False),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("incarnation", sa.String(200), nullable=True),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("released_at", sa.Float, nullable=True),
    sa.Column("release_reason", sa.String(200), nullable=True),
    sa.Index("hd_gpu_leases_live", "pool", "released_at"),
    sa.Index("hd_gpu_leases_run", "run_id"),
)

lineages_table = sa.Table(
    "hd_gpu_lineages",
    metadata,
    sa.Column("lineage", sa.String(200), primary_key=True),
    sa.Column("driver_version", sa.String(100), nullable=False),
    sa.Column("cuda_version", sa.String(100), nullable=False),
    sa.Column("first_pool", sa.String(200), nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
)


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite connections take the write lock when a transaction begins.

    Example:
        >>> make_engine("postgresql+psycopg2://gpu@db.internal/leases")
    """
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class LeaseStore:
    """Leases of GPU pools in one SQL database, shared by every run and the teardown sensor.

    Example:
        >>> store = LeaseStore("postgresql+psycopg2://gpu@db.internal/leases")
        >>> with store.leased("us-onprem-l40s", gpus=1, capacity=4, run_id=context.run.run_id) as lease:
        ...     ...  # CUDA_VISIBLE_DEVICES=lease.cuda_visible_devices
    """

    def __init__(self, url: str, *, ttl_s: float = DEFAULT_TTL_S, engine: Engine | None = None) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.engine = engine if engine is not None else make_engine(url)
        try:
            metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as error:
            raise LeaseStoreError(
                f"GPU lease store at {self._where()} cannot be set up ({type(error).__name__}); check that "
                "the database is reachable and the user may create tables"
            ) from None

    def _where(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- granting and releasing ----------------------------------------------------------------------

    def acquire(
        self,
        pool: str,
        *,
        gpus: int,
        capacity: int,
        run_id: str,
        incarnation: str | None = None,
        now: float | None = None,
    ) -> Lease:
        """Grant ``gpus`` GPUs of ``pool`` to ``run_id`` or raise :class:`PoolFull`, atomically.

        Example:
            >>> store.acquire("eu-onprem-a100", gpus=2, capacity=8, run_id="run-1")
        """
        if gpus < 1:
            raise ValueError(f"pool {pool!r}: a lease needs at least one GPU, got {gpus}")
        stamp = time.time() if now is None else now
        with self.engine.begin() as conn:
            self._lock_pool(conn, pool, capacity)
            self._expire(conn, stamp, pool=pool)
            rows = conn.execute(
                sa.select(leases_table.c.gpus, leases_table.c.devices).where(
                    leases_table.c.pool == pool, leases_table.c.released_at.is_(None)
                )
            ).all()
            held = sum(r.gpus for r in rows)
            if held + gpus > capacity:
                raise PoolFull(
                    f"GPU pool {pool!r} has {capacity - held} of {capacity} GPUs free, run {run_id} asked "
                    f"for {gpus}: wait for a lease to end, or allow bursting to a cloud pool of the same "
                    "jurisdiction"
                )
            taken = {int(d) for r in rows for d in r.devices.split(",") if d}
            devices = tuple(i for i in range(capacity) if i not in taken)[:gpus]
            lease = Lease(
                lease_id=uuid.uuid4().hex,
                pool=pool,
                gpus=gpus,
                devices=devices,
                run_id=run_id,
                incarnation=incarnation,
                since=stamp,
                heartbeat=stamp,
            )
            conn.execute(
                leases_table.insert().values(
                    lease_id=lease.lease_id,
                    pool=pool,
                    gpus=gpus,
                    devices=lease.cuda_visible_devices,
                    run_id=run_id,
                    incarnation=incarnation,
                    since=stamp,
                    heartbeat=stamp,
                )
            )
        return lease

    def _lock_pool(self, conn: Connection, pool: str, capacity: int) -> None:
        insert: Any
        if conn.dialect.name == "postgresql":
            insert = postgresql.insert(pools_table)
        elif conn.dialect.name == "sqlite":
            insert = sqlite.insert(pools_table)
        else:
            raise LeaseStoreError(f"GPU lease store: dialect {conn.dialect.name} is not supported")
        conn.execute(insert.values(pool=pool, capacity=capacity).on_conflict_do_nothing())
        conn.execute(sa.select(pools_table.c.pool).where(pools_table.c.pool == pool).with_for_update()).one()
        conn.execute(pools_table.update().where(pools_table.c.pool == pool).values(capacity=capacity))

    def heartbeat(self, lease_id: str, *, now: float | None = None) -> bool:
        """Mark the lease alive; False when it was already released or expired.

        Example:
            >>> store.heartbeat(lease.lease_id)
            True
        """
        stamp = time.time() if now is None else now
        with self.engine.begin() as conn:
            updated = conn.execute(
                leases_table.update()
                .where(leases_table.c.lease_id == lease_id, leases_table.c.released_at.is_(None))
                .values(heartbeat=stamp)
            ).rowcount
        return bool(updated)

    def set_incarnation(self, lease_id: str, incarnation: str) -> None:
        """Record which capacity unit (instance id, pod uid, node id) a lease runs on."""
        with self.engine.begin() as conn:
            conn.execute(
                leases_table.update()
                .where(leases_table.c.lease_id == lease_id)
                .values(incarnation=incarnation)
            )

    def release(self, lease_id: str, reason: str, *, now: float | None = None) -> bool:
        """End a lease (idempotent); True if it was live.

        Example:
            >>> store.release(lease.lease_id, "failed")
        """
        stamp = time.time() if now is None else now
        with self.engine.begin() as conn:
            updated = conn.execute(
                leases_table.update()
                .where(leases_table.c.lease_id == lease_id, leases_table.c.released_at.is_(None))
                .values(released_at=stamp, release_reason=reason)
            ).rowcount
        return bool(updated)

    def release_runs(self, run_ids: Iterable[str], reason: str, *, now: float | None = None) -> int:
        """End every live lease of the given runs (runs that ended, failed or were cancelled)."""
        ids = sorted(set(run_ids))
        if not ids:
            return 0
        stamp = time.time() if now is None else now
        released = 0
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                released += conn.execute(
                    leases_table.update()
                    .where(
                        leases_table.c.run_id.in_(ids[start : start + 500]),
                        leases_table.c.released_at.is_(None),
                    )
                    .values(released_at=stamp, release_reason=reason)
                ).rowcount
        return released

    def expire(self, *, now: float | None = None) -> int:
        """Mark leases of dead runs (no heartbeat for ``ttl_s``) as expired; returns how many."""
        with self.engine.begin() as conn:
            return self._expire(conn, time.time() if now is None else now)

    def _expire(self, conn: Connection, now: float, pool: str | None = None) -> int:
        condition = sa.and_(leases_table.c.released_at.is_(None), leases_table.c.heartbeat < now - self.ttl_s)
        if pool is not None:
            condition = sa.and_(condition, leases_table.c.pool == pool)
        return int(
            conn.execute(
                leases_table.update()
                .where(condition)
                .values(released_at=leases_table.c.heartbeat + self.ttl_s, release_reason="expired")
            ).rowcount
        )

    # -- reading --------------------------------------------------------------------------------------

    def live_leases(self, pools: Sequence[str] | None = None, *, now: float | None = None) -> list[Lease]:
        """Leases not released and still heartbeating.

        Example:
            >>> [lease.run_id for lease in store.live_leases(["eu-onprem-a100"])]
        """
        stamp = time.time() if now is None else now
        query = sa.select(leases_table).where(
            leases_table.c.released_at.is_(None), leases_table.c.heartbeat >= stamp - self.ttl_s
        )
        if pools is not None:
            query = query.where(leases_table.c.pool.in_(list(pools)))
        with self.engine.connect() as conn:
            return [_lease(row) for row in conn.execute(query).mappings()]

    def leases_since(self, start: float) -> list[Lease]:
        """Every lease live at some point after ``start`` (for cost reports)."""
        query = sa.select(leases_table).where(
            sa.or_(leases_table.c.released_at.is_(None), leases_table.c.released_at >= start)
        )
        with self.engine.connect() as conn:
            return [_lease(row) for row in conn.execute(query).mappings()]

    def last_activity(self) -> dict[str, float]:
        """Per incarnation: the latest moment any lease on it was alive (release time or heartbeat)."""
        activity = sa.func.max(sa.func.coalesce(leases_table.c.released_at, leases_table.c.heartbeat))
        query = (
            sa.select(leases_table.c.incarnation, activity)
            .where(leases_table.c.incarnation.is_not(None))
            .group_by(leases_table.c.incarnation)
        )
        with self.engine.connect() as conn:
            return {str(inc): float(ts) for inc, ts in conn.execute(query).all()}

    def free_gpus(self, capacities: dict[str, int], *, now: float | None = None) -> dict[str, int]:
        """Free GPUs per pool: capacity minus the GPUs of live leases.

        Example:
            >>> store.free_gpus({"eu-onprem-a100": 8})
            {'eu-onprem-a100': 6}
        """
        held: dict[str, int] = dict.fromkeys(capacities, 0)
        for lease in self.live_leases(list(capacities), now=now):
            held[lease.pool] = held.get(lease.pool, 0) + lease.gpus
        return {pool: max(0, capacity - held[pool]) for pool, capacity in capacities.items()}

    # -- model lineages -------------------------------------------------------------------------------

    def lineage_versions(self, lineage: str) -> tuple[str, str] | None:
        """The (driver, CUDA) versions a model lineage was first trained with, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(lineages_table.c.driver_version, lineages_table.c.cuda_version).where(
                    lineages_table.c.lineage == lineage
                )
            ).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def record_lineage(self, lineage: str, versions: tuple[str, str], pool: str) -> None:
        """Pin a lineage to its first (driver, CUDA) pair; a later call never changes it."""
        with self.engine.begin() as conn:
            insert: Any = (
                postgresql.insert(lineages_table)
                if conn.dialect.name == "postgresql"
                else sqlite.insert(lineages_table)
            )
            conn.execute(
                insert.values(
                    lineage=lineage,
                    driver_version=versions[0],
                    cuda_version=versions[1],
                    first_pool=pool,
                    recorded_at=time.time(),
                ).on_conflict_do_nothing()
            )


def _lease(row: Any) -> Lease:
    return Lease(
        lease_id=row["lease_id"],
        pool=row["pool"],
        gpus=int(row["gpus"]),
        devices=tuple(int(d) for d in str(row["devices"]).split(",") if d),
        run_id=row["run_id"],
        incarnation=row["incarnation"],
        since=float(row["since"]),
        heartbeat=float(row["heartbeat"]),
        released_at=None if row["released_at"] is None else float(row["released_at"]),
        release_reason=row["release_reason"],
    )
