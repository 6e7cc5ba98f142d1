"""Meridian Health's planes, residency policy and EU clinical CDC declared in YAML (``defs/``).

The YAML twin of :mod:`examples.clinical_ai.definitions` for teams who keep platform config in YAML:
``defs/planes/defs.yaml`` declares the four planes and the EU->US route, ``defs/eu_clinical_cdc/defs.yaml``
the CDC tables on the eu-onprem plane. Load with ``dagster dev -m examples.clinical_ai.yaml_definitions``.
"""

import importlib
from pathlib import Path

import dagster as dg

from hybrid_dagster.validation import enforce_residency

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dg.definitions
def defs() -> dg.Definitions:
    tree = dg.ComponentTree.from_module(
        defs_module=importlib.import_module("examples.clinical_ai.defs"), project_root=PROJECT_ROOT
    )
    return enforce_residency(tree.build_defs())
