"""`make ui`: start the example's embedded database, then the Dagster UI on the demo's instance."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    home = Path(os.environ.get("HYBRID_DAGSTER_HOME", ".demo")).resolve()
    os.environ["HYBRID_DAGSTER_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    config = home / "dagster" / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    from examples.clinical_ai.database import start_clinical_database

    start_clinical_database(home)
    dagster = str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "dev", "-m", "examples.clinical_ai.definitions", *sys.argv[1:]]
    os.execv(dagster, argv)


if __name__ == "__main__":
    main()
