"""The only module that touches private Dagster names (``dagster._*``, ``dagster_shared``).

Dagster's private APIs may change in any release; keeping them here means one file to fix on an
upgrade, and a test (``tests/test_layers.py``) fails if any other module imports a private name.
"""

from __future__ import annotations

from dagster._core.code_pointer import (
    load_python_file as load_python_file,
    load_python_module as load_python_module,
)
from dagster._core.definitions.assets.graph.base_asset_graph import (
    BaseAssetGraph as BaseAssetGraph,
    BaseAssetNode as BaseAssetNode,
)
from dagster._core.execution.context.compute import current_execution_context
from dagster.components.definitions import LazyDefinitions as LazyDefinitions
from dagster_shared.check import CheckError as CheckError

STUB_ASSET_METADATA_KEY = "dagster/auto_created_stub_asset"
"""Metadata Dagster puts on the placeholder node it creates for an undefined dependency."""


def in_dagster_step() -> bool:
    """Whether the calling code runs inside a Dagster step's compute function (this process)."""
    return current_execution_context.get() is not None
