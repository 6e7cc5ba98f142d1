"""Cost teardown decisions: which GPU capacity to tear down, and why everything else is kept.

Correctness rules (after SkyPilot's autostop and Kueue's admission, plus data residency's caution):

- Capacity is keyed by incarnation (instance id, pod/job uid, node id), never by name: the idle clock of a
  unit starts at its own launch, and teardown acts on that incarnation only.
- Busy = a live Dagster run holds a live lease on it (by incarnation or by the lease/run label the run put
  on it). Leases of runs that ended, failed or were cancelled are released first; leases of dead runs
  expire by heartbeat.
- Idle = not busy for the pool's ``idle_minutes`` since the later of its launch and the last lease on it.
- Past the pool's maximum lifetime a unit goes even if busy, with a warning.
- A unit whose state cannot be read, or whose backend could not be listed, counts as busy. Protected pools
  and units tagged protected are never torn down. Units of pools this sensor does not manage are left alone.
- Dry-run decides the same but touches nothing. At most ``max_teardowns`` units go per tick; the rest wait.

Example:
    >>> decisions = decide(units, pools, live_leases, last_activity, live_runs=set(), now=time.time())
    >>> [(d.unit.name, d.action, d.why) for d in decisions]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from hybrid_dagster.gpu.backends.base import GpuBackend, Listing
from hybrid_dagster.gpu.history import CapacityHistory
from hybrid_dagster.gpu.leases import LeaseStore
from hybrid_dagster.gpu.model import CapacityUnit, Lease, PoolFacts

Action = Literal["terminate", "keep"]
RunState = Literal["live", "ended"]
DEFAULT_HORIZON_HOURS = 24.0
"""Without a maximum lifetime, an idle unit is assumed to have burned for this long before anyone noticed."""


@dataclass(frozen=True)
class Decision:
    """What the tick does with one unit, and why.

    Example:
        >>> Decision(unit, "keep", "held by live run 3f2a (lease 9c1d)")
    """

    unit: CapacityUnit
    action: Action
    why: str
    warning: bool = False
    cost_saved_usd: float = 0.0


@dataclass
class TickReport:
    """The outcome of one teardown tick."""

    decisions: list[Decision] = field(default_factory=list)
    terminated: list[Decision] = field(default_factory=list)
    unreadable_backends: dict[str, str] = field(default_factory=dict)
    released_runs: int = 0
    expired_leases: int = 0
    dry_run: bool = False
    elapsed_s: float = 0.0

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "keep"]

    @property
    def cost_saved_usd(self) -> float:
        return round(sum(d.cost_saved_usd for d in self.terminated), 2)

    def summary(self) -> str:
        """One actionable line (used as the sensor's skip reason)."""
        verb = "would tear down" if self.dry_run else "tore down"
        done = ", ".join(f"{d.unit.name} ({d.unit.incarnation})" for d in self.terminated) or "nothing"
        parts = [f"{verb} {done}; cost saved ${self.cost_saved_usd:.2f}"]
        if self.kept:
            counts: dict[str, int] = {}
            for d in self.kept:
                counts[d.why.split(":")[0]] = counts.get(d.why.split(":")[0], 0) + 1
            parts.append("kept " + ", ".join(f"{n} {why}" for why, n in sorted(counts.items())))
        if self.unreadable_backends:
            parts.append(
                "could not list "
                + ", ".join(f"{k} ({v})" for k, v in sorted(self.unreadable_backends.items()))
                + ": their capacity counts as busy until the backend can be read (check credentials/endpoint)"
            )
        if self.dry_run and self.terminated:
            parts.append("dry-run: set dry_run=False to act")
        return "; ".join(parts)


def cost_saved(unit: CapacityUnit, pool: PoolFacts, now: float) -> float:
    """Money a teardown saves: the unit's hourly cost until it would have gone anyway (its maximum
    lifetime), or for :data:`DEFAULT_HORIZON_HOURS` when the pool has none."""
    hourly = unit.gpus * pool.price_per_gpu_hour
    if pool.max_lifetime_hours is None or unit.launched_at is None:
        return round(hourly * DEFAULT_HORIZON_HOURS, 2)
    remaining_h = max(0.0, pool.max_lifetime_hours - (now - unit.launched_at) / 3600.0)
    return round(hourly * remaining_h, 2)


def decide(
    units: Iterable[CapacityUnit],
    pools: Mapping[str, PoolFacts],
    live_leases: Sequence[Lease],
    last_activity: Mapping[str, float],
    *,
    live_runs: set[str] | None = None,
    now: float,
) -> list[Decision]:
    """Pure: a decision per unit (see the module's rules). ``live_runs`` are runs known to be live (for
    units a run labelled but holds no lease on); leases are trusted as live as given."""
    by_incarnation: dict[str, Lease] = {}
    by_lease: dict[str, Lease] = {}
    by_run: dict[str, Lease] = {}
    for lease in live_leases:
        if lease.incarnation:
            by_incarnation.setdefault(lease.incarnation, lease)
        by_lease[lease.lease_id] = lease
        by_run.setdefault(lease.run_id, lease)
    running = live_runs or set()
    decisions: list[Decision] = []
    for unit in units:
        pool = pools.get(unit.pool)
        if pool is None:
            decisions.append(Decision(unit, "keep", f"unmanaged: pool {unit.pool!r} is not configured here"))
            continue
        if pool.protected or unit.protected:
            where = f"pool {pool.name}" if pool.protected else "tag hybrid-dagster/protected=true"
            decisions.append(Decision(unit, "keep", f"protected: {where}"))
            continue
        if not unit.readable or unit.launched_at is None:
            decisions.append(
                Decision(
                    unit, "keep", f"unreadable: {unit.why_unreadable or 'no launch time'}; counts as busy"
                )
            )
            continue
        age_h = (now - unit.launched_at) / 3600.0
        holder = (
            by_incarnation.get(unit.incarnation)
            or (by_lease.get(unit.lease_id) if unit.lease_id else None)
            or (by_run.get(unit.run_id) if unit.run_id else None)
        )
        if pool.max_lifetime_hours is not None and age_h > pool.max_lifetime_hours:
            who = f", although run {holder.run_id} holds lease {holder.lease_id}" if holder else ""
            decisions.append(
                Decision(
                    unit,
                    "terminate",
                    f"past max lifetime: {age_h:.1f} h > {pool.max_lifetime_hours:g} h{who}",
                    warning=holder is not None,
                    cost_saved_usd=cost_saved(unit, pool, now),
                )
            )
            continue
        if holder is not None:
            decisions.append(
                Decision(unit, "keep", f"busy: run {holder.run_id} holds lease {holder.lease_id}")
            )
            continue
        if unit.run_id and unit.run_id in running:
            decisions.append(Decision(unit, "keep", f"busy: created by live run {unit.run_id}"))
            continue
        if unit.state not in {"running", "Running", "Pending", "Active"}:
            decisions.append(Decision(unit, "keep", f"not billed: state {unit.state}"))
            continue
        idle_since = max(unit.launched_at, last_activity.get(unit.incarnation, unit.launched_at))
        idle_min = (now - idle_since) / 60.0
        if idle_min >= pool.idle_minutes:
            decisions.append(
                Decision(
                    unit,
                    "terminate",
                    f"idle: no live run's lease for {idle_min:.0f} min >= {pool.idle_minutes:g} min",
                    cost_saved_usd=cost_saved(unit, pool, now),
                )
            )
        else:
            decisions.append(
                Decision(unit, "keep", f"recently used: idle {idle_min:.0f} min < {pool.idle_minutes:g} min")
            )
    return decisions


def run_tick(
    pools: Sequence[PoolFacts],
    backends: Mapping[str, GpuBackend],
    store: LeaseStore,
    *,
    run_states: Callable[[set[str]], Mapping[str, RunState]] | None = None,
    dry_run: bool = False,
    max_teardowns: int = 20,
    record: Callable[[Decision, float], None] | None = None,
    now: float | None = None,
) -> TickReport:
    """One teardown tick: list capacity, settle leases, decide, act (bounded), record.

    ``backends`` maps pool name -> backend; backends with the same :meth:`GpuBackend.key` are listed once.
    ``run_states`` says which of the given run ids are ``"live"`` or have ``"ended"`` (succeeded, failed,
    cancelled); leases of ended runs are released before deciding, and a unit labelled with a live run's id
    is busy. Runs it does not know are left to lease expiry.

    Example:
        >>> backends = {p.name: p.capacity_backend() for p in pools}
        >>> report = run_tick([p.facts() for p in pools], backends, store)
        >>> report.summary()
    """
    started = time.perf_counter()
    stamp = time.time() if now is None else now
    report = TickReport(dry_run=dry_run)
    report.expired_leases = store.expire(now=stamp)
    leases = store.live_leases(now=stamp)
    grouped: dict[str, tuple[GpuBackend, list[str]]] = {}
    for pool in pools:
        backend = backends[pool.name]
        grouped.setdefault(backend.key(), (backend, []))[1].append(pool.name)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(grouped)))) as executor:  # listings are I/O
        listings: list[Listing] = list(executor.map(lambda g: g[0].list(g[1]), grouped.values()))
    units: list[CapacityUnit] = []
    for key, listing in zip(grouped, listings, strict=True):
        if listing.error is not None:
            report.unreadable_backends[key] = listing.error
        units.extend(listing.units)

    live_runs: set[str] = set()
    if run_states is not None:
        states = run_states({lease.run_id for lease in leases} | {u.run_id for u in units if u.run_id})
        ended = {run_id for run_id, state in states.items() if state == "ended"}
        live_runs = {run_id for run_id, state in states.items() if state == "live"}
        if ended:
            report.released_runs = store.release_runs(
                ended, "run ended (released by teardown sensor)", now=stamp
            )
            leases = [lease for lease in leases if lease.run_id not in ended]
    activity = store.last_activity()

    facts = {pool.name: pool for pool in pools}
    history = CapacityHistory(store)
    history.observe([u for u in units if u.pool in facts], now=stamp)
    by_key = {backend.key(): backend for backend, _ in grouped.values()}
    backend_of = {pool.name: backends[pool.name].key() for pool in pools}
    chosen: list[Decision] = []
    decisions: list[Decision] = []
    for decision in decide(units, facts, leases, activity, live_runs=live_runs, now=stamp):
        if decision.action == "terminate" and len(chosen) >= max_teardowns:
            why = f"deferred: batch limit {max_teardowns} reached; next tick ({decision.why})"
            decision = Decision(decision.unit, "keep", why)
        elif decision.action == "terminate":
            chosen.append(decision)
        decisions.append(decision)
    refused: dict[str, str | None] = {}
    if not dry_run:
        per_backend: dict[str, list[CapacityUnit]] = {}
        for decision in chosen:
            per_backend.setdefault(backend_of[decision.unit.pool], []).append(decision.unit)
        for key, batch in per_backend.items():
            refused.update(by_key[key].terminate_many(batch))
    for decision in decisions:
        why_refused = refused.get(decision.unit.incarnation) if decision.action == "terminate" else None
        if why_refused is not None:
            decision = Decision(decision.unit, "keep", f"teardown refused: {why_refused}")
        elif decision.action == "terminate":
            report.terminated.append(decision)
        report.decisions.append(decision)
    if not dry_run and report.terminated:
        history.record_teardowns([(d.unit, d.why, d.cost_saved_usd) for d in report.terminated], at=stamp)
        if record is not None:
            for decision in report.terminated:
                record(decision, stamp)
    report.elapsed_s = time.perf_counter() - started
    return report
