"""The run-time write guard: the last check before regulated data lands in a warehouse.

The static check (:mod:`hybrid_dagster.validation`) can be bypassed - a module that skips
``enforce_residency``, an IO manager pointed at the wrong plane. Code that writes data calls
:func:`check_write` right before the write, so a wrong target fails the run instead of leaking rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster_shared.check import CheckError

from hybrid_dagster.residency import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    Classification,
    ResidencyError,
    ResidencyPolicy,
    TransferRoute,
)
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.validation import AssetResidency, is_stub_asset, validate_asset_graph

DATA_JURISDICTIONS_METADATA_KEY = "hybrid/data_jurisdictions"
"""Materialization metadata: comma-separated jurisdictions the written data legally lives in."""


@dataclass(frozen=True)
class WriteIntent:
    """What is about to be written: which asset, how sensitive, and where its data legally lives.

    ``data_jurisdictions`` holds the home plane's jurisdiction plus the jurisdictions of every upstream
    plane whose regulated data flows into the asset (declassified assets start afresh at their home).

    Example:
        >>> WriteIntent("clinical/patients", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))
    """

    asset: str
    classification: Classification
    home_plane: str
    data_jurisdictions: frozenset[str]


def check_write(intent: WriteIntent, target_plane: DataPlane, policy: ResidencyPolicy) -> list[TransferRoute]:
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


def write_intent_for(
    context: dg.OutputContext | dg.InputContext | dg.AssetExecutionContext | dg.OpExecutionContext,
    planes: Sequence[DataPlane] | Mapping[str, DataPlane],
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
    graph = asset_graph_of(context)
    if not graph.has(key):
        raise ResidencyError(f"asset {key.to_user_string()!r} is not in the asset graph of this run")
    recorded = _recorded_residency(context, graph, key)
    levels = {k: level for k, (level, _) in recorded.items()}
    assets = validate_asset_graph(graph, by_name, ResidencyPolicy(), recorded=levels).assets
    extra = {k: places for k, (_, places) in recorded.items()}
    return intent_from_residency(assets[key], assets, by_name, extra)


def intent_from_residency(
    asset: AssetResidency,
    assets: Mapping[dg.AssetKey, AssetResidency],
    planes: Mapping[str, DataPlane],
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
        raise ResidencyError(
            f"asset {name!r} has no valid {CLASSIFICATION_TAG!r} tag: the write guard refuses unclassified "
            "data"
        )
    places = _data_jurisdictions(asset, assets, planes, recorded_jurisdictions or {})
    return WriteIntent(
        asset=name,
        classification=asset.effective,
        home_plane=asset.plane,
        data_jurisdictions=frozenset(places),
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


def asset_graph_of(
    context: dg.OutputContext | dg.InputContext | dg.AssetExecutionContext | dg.OpExecutionContext,
) -> BaseAssetGraph:
    """The code location's asset graph when the run has one, else the running job's graph."""
    step = context.step_context if isinstance(context, dg.OutputContext | dg.InputContext) else context
    try:
        return step.repository_def.asset_graph
    except CheckError:
        return step.job_def.asset_layer.asset_graph


def _recorded_residency(
    context: dg.OutputContext | dg.InputContext | dg.AssetExecutionContext | dg.OpExecutionContext,
    graph: BaseAssetGraph,
    key: dg.AssetKey,
) -> dict[dg.AssetKey, tuple[Classification, frozenset[str]]]:
    boundary: set[dg.AssetKey] = set()
    seen: set[dg.AssetKey] = set()
    todo = [key]
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
    found: dict[dg.AssetKey, tuple[Classification, frozenset[str]]] = {}
    for asset in sorted(boundary):
        event = instance.get_latest_materialization_event(asset)
        materialization = event.asset_materialization if event is not None else None
        metadata = materialization.metadata if materialization is not None else {}
        level = metadata.get(CLASSIFICATION_TAG)
        places = metadata.get(DATA_JURISDICTIONS_METADATA_KEY)
        if level is None or places is None:
            raise ResidencyError(
                f"asset {asset.to_user_string()!r} reads inputs outside this run's asset graph and its "
                f"latest materialization has no {CLASSIFICATION_TAG!r} and "
                f"{DATA_JURISDICTIONS_METADATA_KEY!r} metadata: the write guard cannot tell how sensitive "
                f"the data of {key.to_user_string()!r} is"
            )
        found[asset] = (
            Classification.parse(str(level.value)),
            frozenset(p for p in str(places.value).split(",") if p),
        )
    return found


def _data_jurisdictions(
    asset: AssetResidency,
    assets: Mapping[dg.AssetKey, AssetResidency],
    planes: Mapping[str, DataPlane],
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
        if current.declassification is not None and current.declared is not None:
            continue
        found |= recorded.get(current.key, frozenset())
        todo.extend(parent for parent in (assets[p] for p in current.parents) if _regulated(parent.effective))
    return found


def _regulated(level: Classification | None) -> bool:
    return level is not None and level.is_regulated


def _jurisdiction(asset: AssetResidency, planes: Mapping[str, DataPlane]) -> str:
    name = asset.key.to_user_string()
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
