"""Inside a plane: train on guarded inputs, store the model with skops, register its metadata.

Correctness rules:

- Inputs are read through :class:`~hybrid_dagster.plane.work.PlaneWork` (the residency guard), and their
  Iceberg snapshot ids are recorded, so a model names exactly the data it was trained on.
- The artifact is written with skops (no pickle) into the warehouse of the plane the work runs in; loading
  refuses any type outside scikit-learn, SciPy and NumPy.
- The model registry is an Iceberg table in the same plane holding metadata only: metrics, input snapshot
  ids, pool, versions, code version, artifact path - never rows.
- What crosses back through Dagster Pipes: metrics (floats), counts, snapshot ids, the artifact path.

Example:
    .. code-block:: python

        from hybrid_dagster.plane.models import open_training

        with open_training() as training:
            encounters = training.read("clinical.encounters")
            model, metrics = fit(encounters)
            training.finish(model, metrics, training_rows=encounters.num_rows)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from hybrid_dagster.errors import ValueFreeError
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import PlaneSpec
from hybrid_dagster.plane.work import PlaneWork, open_plane_work

TRAINING_EXTRAS_KEY = "hybrid_training"
"""Pipes extras key under which the training asset passes its spec (inputs, pool, versions, registry)."""
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.")


TRAINING_INSTALL_HINT = "pip install 'hybrid-dagster[training]'"


class UntrustedModelError(ValueFreeError):
    """A stored model holds types outside scikit-learn, NumPy and SciPy; it is not loaded."""


class TrainingDependencyMissing(ValueFreeError):
    """skops (or scikit-learn) is not installed in the plane's environment."""


def _skops() -> Any:
    try:
        import skops.io
    except ImportError:
        raise TrainingDependencyMissing(
            f"storing and loading models needs skops and scikit-learn in the plane's environment: "
            f"{TRAINING_INSTALL_HINT}"
        ) from None
    return skops.io


@dataclass(frozen=True)
class InputSnapshot:
    plane: str
    table: str
    snapshot_id: int | None
    rows: int


class TrainingRun:
    """One training run inside a plane: its guarded inputs, its spec, and where its model goes."""

    def __init__(self, work: PlaneWork) -> None:
        self.work = work
        self.spec: Mapping[str, Any] = work.pipes.extras[TRAINING_EXTRAS_KEY]
        self.inputs: list[InputSnapshot] = []

    @property
    def plane(self) -> PlaneSpec:
        return self.work.plane

    def read(self, table: str) -> pa.Table:
        """Read one declared input table (through the residency guard) and record its snapshot id."""
        declared = {i["table"]: i for i in self.spec["inputs"]}
        if table not in declared:
            raise ValueFreeError(
                f"training asset {self.spec['asset']!r} reads {table!r}, which is not one of its declared "
                f"inputs ({sorted(declared)}): add it to the asset's inputs"
            )
        plane = declared[table]["plane"]
        data = self.work.read_table(plane, table)
        snapshot_id = self.work.snapshots_read.get((plane, table))
        self.inputs.append(InputSnapshot(plane, table, snapshot_id, data.num_rows))
        return data

    def artifact_path(self) -> str:
        """Where this run's model goes in the plane's warehouse."""
        _, root = storage.filesystem(self.plane)
        asset = str(self.spec["asset"]).replace("/", "__")
        return f"{root}/models/{asset}/{self.spec['run_id']}.skops"

    def finish(self, model: Any, metrics: Mapping[str, float], *, training_rows: int) -> str:
        """Store ``model`` (skops), append its registry row, report metrics through Pipes; returns the path.

        Example:
            >>> training.finish(pipeline, {"roc_auc": 0.81}, training_rows=1200)
        """
        skops_io = _skops()
        fs, _ = storage.filesystem(self.plane)
        path = self.artifact_path()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(skops_io.dumps(model))
        asset = str(self.spec["asset"])
        registry = str(self.spec["registry_table"])
        row = {
            "model": asset,
            "lineage": str(self.spec["lineage"]),
            "version": str(self.spec["run_id"]),
            "trained_at": pa.scalar(int(time.time() * 1_000_000), pa.timestamp("us", tz="UTC")),
            "pool": str(self.spec["pool"]),
            "plane": self.plane.name,
            "jurisdiction": self.plane.jurisdiction,
            "accelerator": str(self.spec["accelerator"]),
            "gpus": int(self.spec["gpus"]),
            "driver_version": str(self.spec["driver_version"]),
            "cuda_version": str(self.spec["cuda_version"]),
            "code_version": str(self.spec["code_version"]),
            "artifact": path,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "training_rows": int(training_rows),
            "metrics": json.dumps({k: float(v) for k, v in sorted(metrics.items())}),
            "input_snapshots": json.dumps(
                [{"plane": i.plane, "table": i.table, "snapshot_id": i.snapshot_id} for i in self.inputs]
            ),
        }
        new = pa.Table.from_pylist([row])
        catalog = storage.open_catalog(self.plane)
        if catalog.table_exists(registry):
            previous = catalog.load_table(registry).scan().to_arrow()
            new = pa.concat_tables([previous, new.cast(previous.schema)]) if previous.num_rows else new
        written = self.work.write_table(asset, registry, new)
        metadata: dict[str, Any] = {key: value for key, value in written.items() if key.startswith("hybrid/")}
        metadata["hybrid/registry_table"] = {"raw_value": f"{self.plane.name}.{registry}", "type": "text"}
        metadata["model_path"] = {"raw_value": path, "type": "path"}
        metadata["training_rows"] = {"raw_value": int(training_rows), "type": "int"}
        for name, value in metrics.items():
            metadata[f"metric/{name}"] = {"raw_value": float(value), "type": "float"}
        for snap in self.inputs:
            if snap.snapshot_id is not None:
                metadata[f"input_snapshot/{snap.table}"] = {"raw_value": snap.snapshot_id, "type": "int"}
        self.work.report(asset, metadata)
        return path


@contextmanager
def open_training() -> Iterator[TrainingRun]:
    """Open Dagster Pipes inside the pool's plane for a training run started by a training asset."""
    with open_plane_work() as work:
        yield TrainingRun(work)


def load_model(plane: PlaneSpec, path: str) -> Any:
    """Load a model stored by :meth:`TrainingRun.finish`, refusing types outside sklearn/NumPy/SciPy.

    Example:
        >>> model = load_model(eu_plane.spec(), "/srv/eu/warehouse/models/models__eu/run.skops")
    """
    skops_io = _skops()
    fs, _ = storage.filesystem(plane)
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    untrusted = skops_io.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise UntrustedModelError(
            f"model at {path} in plane {plane.name!r} holds types outside scikit-learn/NumPy/SciPy "
            f"({', '.join(sorted(refused))}): it is not loaded"
        )
    return skops_io.loads(data, trusted=untrusted)
