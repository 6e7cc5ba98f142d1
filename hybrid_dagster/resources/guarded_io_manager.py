"""The default IO manager of residency-checked Definitions: Dagster's filesystem pickling, fail-closed.

Correctness rule: a value returned by an asset whose clearance is confidential or restricted is never
pickled into the orchestrator's storage - the step fails instead, naming the asset and what to do.
Unregulated assets (and regulated ones returning ``None``) behave exactly as with ``FilesystemIOManager``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from hybrid_dagster.errors import ResidencyError
from hybrid_dagster.residency.graph import validate_asset_graph
from hybrid_dagster.residency.guard import asset_graph_of
from hybrid_dagster.residency.model import Classification, ResidencyPolicy


class _RefusingIOManager(dg.IOManager):
    def __init__(self, inner: dg.IOManager) -> None:
        self.inner = inner

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is not None and context.has_asset_key and _clearance(context).is_regulated:
            raise ResidencyError(
                f"asset {context.asset_key.to_user_string()!r} is regulated and returned a "
                f"{type(obj).__name__}: its rows would be pickled into the orchestrator's storage. Return a "
                "dg.MaterializeResult from plane work (DataPlane.run), or use PlaneIcebergIOManager"
            )
        self.inner.handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        return self.inner.load_input(context)


class ResidencyGuardedIOManager(dg.ConfigurableIOManagerFactory):
    """``FilesystemIOManager`` that refuses to store values of confidential or restricted assets.

    ``enforce_residency`` installs it as the default ``io_manager`` when the Definitions name none.

    Example:
        .. code-block:: python

            defs = dg.Definitions(assets=[...], resources={"io_manager": ResidencyGuardedIOManager()})
    """

    base_dir: str | None = Field(
        default=None, description="Base directory for pickled values (default: the instance's storage)."
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.IOManager:
        inner = dg.FilesystemIOManager(base_dir=self.base_dir).create_io_manager(context)
        return _RefusingIOManager(inner)


def _clearance(context: dg.OutputContext) -> Classification:
    graph = asset_graph_of(context)
    key = context.asset_key
    if not graph.has(key):
        return Classification.RESTRICTED
    residency = validate_asset_graph(graph, {}, ResidencyPolicy()).assets.get(key)
    if residency is None or residency.clearance is None:
        return Classification.RESTRICTED
    return residency.clearance
