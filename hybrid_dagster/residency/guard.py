"""The run-time guard: the last check before regulated data is launched, read or written.

The static check (:mod:`hybrid_dagster.residency.graph`) can be bypassed - a module that skips
``enforce_residency``, an IO manager pointed at the wrong plane, a subset run. The guard recomputes what
a step may touch from the asset graph of the running code location (or of the job), fail-closed:

- a step's *intent* per asset: its effective classification, home plane and the jurisdictions its data
  lives in (home plus every upstream plane whose regulated data flows in; a declassified asset starts
  afresh at home);
- a step's *clearance*: the most sensitive data its process may touch (its assets' inputs, also when
  declassified). A step with no classified asset (a plain op, an op without tags) has restricted
  clearance, so everything it reports is screened;
- :func:`check_write` refuses regulated data into a plane outside its jurisdictions without a route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from hybrid_dagster._dagster_compat import BaseAssetGraph, CheckError
from hybrid_dagster.errors import ResidencyError, ResidencyViolation
from hybrid_dagster.keys import (
    CLASSIFICATION_TAG,
    DATA_JURISDICTIONS_METADATA_KEY,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
)
from hybrid_dagster.residency.graph import AssetResidency, is_stub_asset, validate_asset_graph
from hybrid_dagster.residency.model import Classification, PlaneRef, ResidencyPolicy, TransferRoute

StepContext = dg.OutputContext | dg.InputContext | dg.AssetExecutionContext | dg.OpExecutionContext

NO_POLICY_HINT = (
    "no ResidencyPolicy resource was visible to this step, so no declared route could apply: give the asset "
    "a `residency_policy: ResidencyPolicy` parameter"
)


@dataclass(frozen=True)
class WriteIntent:
    """What is about to be written: which asset, how sensitive, and where its data legally lives.

    ``data_jurisdictions`` holds the home plane's jurisdiction plus the jurisdictions of every upstream
    plane whose regulated data flows into the asset (declassified assets start afresh at their home).
    ``clearance`` is the most sensitive data the step producing it may read (at least ``classification``).

    Example:
        >>> WriteIntent("clinical/patients", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))
    """

    asset: str
    classification: Classification
    home_plane: str
    data_jurisdictions: frozenset[str]
    clearance: Classification | None = field(default=None, compare=False)
    declassified: bool = field(default=False, compare=False)

    @property
    def read_clearance(self) -> Classification:
        return max(self.classification, self.clearance or self.classification)


def check_write(intent: WriteIntent, target_plane: PlaneRef, policy: ResidencyPolicy) -> list[TransferRoute]:
    """Raise :class:`ResidencyViolation` unless ``intent`` may be written into ``target_plane``.

    Returns the declared routes the write relies on (empty for a write inside the data's jurisdictions or
    of unregulated data).

    Example:
        .. code-block:: python

            check_write(intent, us_plane, policy)  # raises: restricted EU data into a US warehouse
    """
    routes: list[TransferRoute] = []
    if not intent.classification.is_regulated:
        return routes
    target = target_plane.jurisdiction
    for source in sorted(intent.data_jurisdictions - {target}):
        what = (
            f"write of asset {intent.asset!r} ({intent.classification.value}, home plane "
            f"{intent.home_plane!r}, data in {source}) into plane {target_plane.name!r} ({target}) blocked"
        )
        route = policy.check_transfer(
            what=what, source=source, target=target, classification=intent.classification
        )
        if route is not None:
            routes.append(route)
    return routes


@dataclass
class StepResidency:
    """What one step may touch: its assets' intents, its clearance, the planes it sees, the routes."""

    planes: dict[str, PlaneRef]
    policy: ResidencyPolicy
    policy_visible: bool
    intents: list[WriteIntent]
    clearance: Classification
    step: str
    routes_used: list[TransferRoute] = field(default_factory=list)

    @property
    def regulated(self) -> bool:
        """Whether the step's process touches confidential or restricted data (its output stays screened)."""
        return self.clearance.is_regulated

    def check_target(self, target: PlaneRef) -> None:
        """Refuse to run the step's work in ``target`` when its regulated data may not be written there."""
        for intent in self.intents:
            try:
                self.routes_used.extend(check_write(intent, target, self.policy))
            except ResidencyViolation as violation:
                if self.policy_visible:
                    raise
                raise ResidencyViolation(f"{violation} ({NO_POLICY_HINT})") from violation


def step_residency(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    planes: Mapping[str, PlaneRef],
    policy: ResidencyPolicy,
    *,
    policy_visible: bool,
    home: PlaneRef,
) -> StepResidency:
    """The residency of the running step: intents of its assets (or checks) and its clearance.

    Assets come from ``selected_asset_keys``, asset checks from ``selected_asset_check_keys`` (a check
    touches its asset and its ``additional_deps``); a plain op is classified by its own
    ``hybrid/classification`` tag, and without one it counts as restricted (fail closed).

    Example:
        .. code-block:: python

            residency = step_residency(context, planes, policy, policy_visible=True, home=eu)
            residency.check_target(eu)
    """
    name = context.op_handle.name if hasattr(context, "op_handle") else "step"
    intents: list[WriteIntent] = []
    levels: list[Classification] = []
    keys = _selected_asset_keys(context)
    check_keys = _selected_check_keys(context)
    if keys or check_keys:
        report = _report(context, planes)
        for key in keys:
            intent = intent_for_key(context, planes, key, report)
            intents.append(intent)
            levels.append(intent.read_clearance)
        for check_key in check_keys:
            levels.append(_check_clearance(context, report, check_key))
    else:
        levels.append(_op_classification(context))
    if policy.strict and keys:
        _refuse_static_violations(context, planes, policy, keys)
    return StepResidency(
        planes=dict(planes),
        policy=policy,
        policy_visible=policy_visible,
        intents=intents,
        clearance=Classification.highest(levels),
        step=name,
    )


def _refuse_static_violations(
    context: StepContext, planes: Mapping[str, PlaneRef], policy: ResidencyPolicy, keys: list[dg.AssetKey]
) -> None:
    """A strict policy: the static check's violations of this step's assets stop it at run time too."""
    report = validate_asset_graph(asset_graph_of(context), planes, policy)
    mine = [v.message for v in report.violations if v.asset in set(keys)]
    if mine:
        raise ResidencyViolation(
            "the residency policy is strict and the static check fails for this step's assets:\n"
            + "\n".join(mine)
        )


def write_intent_for(
    context: StepContext,
    planes: Sequence[PlaneRef] | Mapping[str, PlaneRef],
    asset_key: dg.AssetKey | None = None,
) -> WriteIntent:
    """Build the :class:`WriteIntent` for ``asset_key`` (default: the context's asset) at run time.

    The effective classification and the upstream planes come from the asset graph of the code location
    (or of the running job), so the guard does not depend on the static check having run. When the job's
    graph holds only part of the lineage (a subset run), the classification and jurisdictions recorded
    with the latest materialization of each boundary asset (``hybrid/classification``,
    ``hybrid/data_jurisdictions``) stand in for the missing ancestors. Missing tags, an unknown plane or an
    ancestor of unknown residency raise :class:`ResidencyError`: the guard fails closed.

    Example:
        .. code-block:: python

            def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
                intent = write_intent_for(context, self.planes)
                check_write(intent, self._plane(intent.home_plane), self.policy)
    """
    key = asset_key if asset_key is not None else context.asset_key
    by_name = {p.name: p for p in (planes.values() if isinstance(planes, Mapping) else planes)}
    return intent_for_key(context, by_name, key, None)


def intent_for_key(
    context: StepContext,
    planes: Mapping[str, PlaneRef],
    key: dg.AssetKey,
    report: tuple[dict[dg.AssetKey, AssetResidency], dict[dg.AssetKey, frozenset[str]]] | None,
) -> WriteIntent:
    """The intent of ``key`` from a resolved graph (computed when ``report`` is None)."""
    assets, recorded = report if report is not None else _report(context, planes, key)
    if key not in assets:
        raise ResidencyError(f"asset {key.to_user_string()!r} is not in the asset graph of this run")
    return intent_from_residency(assets[key], assets, planes, recorded)


def intent_from_residency(
    asset: AssetResidency,
    assets: Mapping[dg.AssetKey, AssetResidency],
    planes: Mapping[str, PlaneRef],
    recorded_jurisdictions: Mapping[dg.AssetKey, frozenset[str]] | None = None,
) -> WriteIntent:
    """The :class:`WriteIntent` of one asset resolved by :func:`validate_asset_graph`.

    Example:
        >>> report = validate_asset_graph(graph, planes, policy)
        >>> intent_from_residency(report.assets[key], report.assets, planes)
    """
    name = asset.key.to_user_string()
    if asset.plane is None:
        raise ResidencyError(
            f"asset {name!r} has no {PLANE_TAG!r} tag: the write guard refuses unpinned data"
        )
    if asset.effective is None:
        raise ResidencyError(f"asset {name!r} has no resolvable {CLASSIFICATION_TAG!r}: the guard refuses it")
    places = _data_jurisdictions(asset, assets, planes, recorded_jurisdictions or {})
    return WriteIntent(
        asset=name,
        classification=asset.effective,
        home_plane=asset.plane,
        data_jurisdictions=frozenset(places),
        clearance=asset.clearance,
        declassified=asset.declassification is not None,
    )


def recorded_residency_metadata(
    classification: Classification, data_jurisdictions: Iterable[str]
) -> dict[str, str]:
    """Materialization metadata that lets a later subset run know what this asset's data is.

    Example:
        >>> recorded_residency_metadata(Classification.RESTRICTED, {"EU"})
        {'hybrid/classification': 'restricted', 'hybrid/data_jurisdictions': 'EU'}
    """
    return {
        CLASSIFICATION_TAG: classification.value,
        DATA_JURISDICTIONS_METADATA_KEY: ",".join(sorted(data_jurisdictions)),
    }


def asset_graph_of(context: StepContext) -> BaseAssetGraph:
    """The code location's asset graph when the run has one, else the running job's graph."""
    step = context.step_context if isinstance(context, dg.OutputContext | dg.InputContext) else context
    try:
        return step.repository_def.asset_graph
    except CheckError:
        return step.job_def.asset_layer.asset_graph


def _report(
    context: StepContext, planes: Mapping[str, PlaneRef], key: dg.AssetKey | None = None
) -> tuple[dict[dg.AssetKey, AssetResidency], dict[dg.AssetKey, frozenset[str]]]:
    graph = asset_graph_of(context)
    keys = [key] if key is not None else [*_selected_asset_keys(context), *_check_owners(context)]
    for k in keys:
        if not graph.has(k):
            raise ResidencyError(f"asset {k.to_user_string()!r} is not in the asset graph of this run")
    recorded = _recorded_residency(context, graph, keys)
    levels = {k: level for k, (level, _) in recorded.items()}
    assets = validate_asset_graph(graph, planes, ResidencyPolicy(), recorded=levels).assets
    return assets, {k: places for k, (_, places) in recorded.items()}


def _selected_asset_keys(context: StepContext) -> list[dg.AssetKey]:
    if isinstance(context, dg.OutputContext | dg.InputContext):
        return [context.asset_key]
    if not context.has_assets_def:
        return []
    tagged = context.assets_def.tags_by_key
    return sorted(k for k in context.selected_asset_keys if k in tagged)


def _selected_check_keys(context: StepContext) -> list[dg.AssetCheckKey]:
    if isinstance(context, dg.OutputContext | dg.InputContext) or not context.has_assets_def:
        return []
    return sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string())


def _check_owners(context: StepContext) -> list[dg.AssetKey]:
    return [k.asset_key for k in _selected_check_keys(context)]


def _check_clearance(
    context: StepContext,
    report: tuple[dict[dg.AssetKey, AssetResidency], dict[dg.AssetKey, frozenset[str]]],
    check_key: dg.AssetCheckKey,
) -> Classification:
    assets, _ = report
    graph = asset_graph_of(context)
    touched = {check_key.asset_key} | {
        k for k in graph.get(check_key).parent_entity_keys if isinstance(k, dg.AssetKey)
    }
    levels = [
        a.clearance or a.effective or Classification.RESTRICTED
        if (a := assets.get(k)) is not None
        else Classification.RESTRICTED
        for k in touched
    ]
    return Classification.highest(levels)


def _op_classification(context: StepContext) -> Classification:
    tags = (
        context.op_def.tags if isinstance(context, dg.OpExecutionContext | dg.AssetExecutionContext) else {}
    )
    value = tags.get(CLASSIFICATION_TAG)
    if value is None:
        return Classification.RESTRICTED
    try:
        return Classification.parse(str(value))
    except ValueError:
        return Classification.RESTRICTED


def _recorded_residency(
    context: StepContext, graph: BaseAssetGraph, keys: Sequence[dg.AssetKey]
) -> dict[dg.AssetKey, tuple[Classification, frozenset[str]]]:
    boundary: set[dg.AssetKey] = set()
    seen: set[dg.AssetKey] = set()
    todo = list(keys)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        node = graph.get(current)
        parents = node.parent_keys - {current}
        if DECLASSIFIED_METADATA_KEY in node.metadata and CLASSIFICATION_TAG in node.tags:
            continue
        if any(is_stub_asset(graph.get(p)) for p in parents):
            boundary.add(current)
        todo.extend(p for p in parents if not is_stub_asset(graph.get(p)))
    if not boundary:
        return {}
    instance = (
        context.step_context.instance
        if isinstance(context, dg.OutputContext | dg.InputContext)
        else context.instance
    )
    target = ", ".join(repr(k.to_user_string()) for k in keys)
    found: dict[dg.AssetKey, tuple[Classification, frozenset[str]]] = {}
    for asset in sorted(boundary):
        # What the inputs outside this graph recorded when they were written stands in for them; the
        # boundary asset's own last record is the fallback (it was written from those inputs).
        stubs = sorted(p for p in graph.get(asset).parent_keys - {asset} if is_stub_asset(graph.get(p)))
        records = [_recorded(instance, stub) for stub in stubs]
        if any(r is None for r in records):
            own = _recorded(instance, asset)
            if own is None:
                missing = ", ".join(
                    repr(s.to_user_string()) for s, r in zip(stubs, records, strict=True) if r is None
                )
                raise ResidencyError(
                    f"asset {asset.to_user_string()!r} reads inputs outside this run's asset graph "
                    f"({missing}) whose latest materialization has no {CLASSIFICATION_TAG!r} and "
                    f"{DATA_JURISDICTIONS_METADATA_KEY!r} metadata: the write guard cannot tell how "
                    f"sensitive the data of {target} is"
                )
            records = [own]
        known = [r for r in records if r is not None]
        found[asset] = (
            Classification.highest([level for level, _ in known]),
            frozenset().union(*(places for _, places in known)),
        )
    return found


def _recorded(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[Classification, frozenset[str]] | None:
    """The classification and jurisdictions ``key``'s latest materialization recorded, if any."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    metadata = materialization.metadata if materialization is not None else {}
    level = metadata.get(CLASSIFICATION_TAG)
    places = metadata.get(DATA_JURISDICTIONS_METADATA_KEY)
    if level is None or places is None:
        return None
    try:
        parsed = Classification.parse(str(level.value))
    except ValueError:
        parsed = Classification.RESTRICTED
    return parsed, frozenset(p for p in str(places.value).split(",") if p)


def _data_jurisdictions(
    asset: AssetResidency,
    assets: Mapping[dg.AssetKey, AssetResidency],
    planes: Mapping[str, PlaneRef],
    recorded: Mapping[dg.AssetKey, frozenset[str]],
) -> set[str]:
    found: set[str] = set()
    seen: set[dg.AssetKey] = set()
    todo = [asset]
    while todo:
        current = todo.pop()
        if current.key in seen:
            continue
        seen.add(current.key)
        found.add(_jurisdiction(current, planes))
        if current.declassification is not None:
            continue
        found |= recorded.get(current.key, frozenset())
        for parent in (assets[p] for p in current.parents):
            if parent.undefined and current.key in recorded:
                continue  # the recorded jurisdictions stand in for inputs outside this graph
            if _regulated(parent.effective):
                todo.append(parent)
    return found


def _regulated(level: Classification | None) -> bool:
    return level is not None and level.is_regulated


def _jurisdiction(asset: AssetResidency, planes: Mapping[str, PlaneRef]) -> str:
    name = asset.key.to_user_string()
    if asset.undefined:
        raise ResidencyError(
            f"asset {name!r} is not defined in this code location: the jurisdiction of its data is unknown"
        )
    if asset.plane is None:
        raise ResidencyError(
            f"asset {name!r} holds regulated data but has no {PLANE_TAG!r} tag: its jurisdiction is unknown"
        )
    plane = planes.get(asset.plane)
    if plane is None:
        known = ", ".join(sorted(planes)) or "none"
        raise ResidencyError(
            f"asset {name!r} is pinned to plane {asset.plane!r}, unknown here (planes: {known})"
        )
    return plane.jurisdiction
