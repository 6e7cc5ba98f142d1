"""The demo folder a capability's demo step runs in when it is started on its own, after `make demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def existing_demo_home(prog: str, argv: list[str] | None) -> Path | None:
    """``--home`` (default ``.demo``), with ``HYBRID_DAGSTER_HOME`` and ``DAGSTER_HOME`` pointed at it
    unless already set; None, after saying what to run, when ``make demo`` has not made its Dagster home.

    Example:
        >>> home = existing_demo_home("python -m examples.clinical_ai.demo_dr", ["--home", ".demo"])
    """
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--home", default=".demo", help="The demo folder (as given to the demo).")
    home = Path(parser.parse_args(argv).home).resolve()
    os.environ.setdefault("HYBRID_DAGSTER_HOME", str(home))
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    if not (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").exists():
        print(f"no Dagster home in {os.environ['DAGSTER_HOME']}: run `make demo` first", file=sys.stderr)
        return None
    return home
