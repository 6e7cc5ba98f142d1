"""Demo step: the OpenLineage sensor over the demo's event log, into a JSON-lines file in the demo folder.

Runs after the demo's materializations: ticks the sensor (file transport) until it has caught up and
writes every event to ``<home>/lineage.jsonl`` (``.demo/`` is git-ignored). Each line is one
OpenLineage run event; Iceberg tables are named by their location in their plane's warehouse, with the
catalog table and the Dagster asset key as symlinks, and plane/jurisdiction/classification in the
``hybridDagster_residency`` facet.

Standalone, after ``make demo``::

    python -m examples.clinical_ai.demo_lineage --home .demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from examples.clinical_ai.demo_home import existing_demo_home

LINEAGE_FILE = "lineage.jsonl"


def run_demo(home: Path, instance: Any = None) -> dict[str, Any]:
    """Emit the demo's event log as OpenLineage events; returns the ``lineage`` section of summary.json.

    Example:
        .. code-block:: python

            section = run_demo(Path(".demo"))  # {"lineage": {"events": 97, "path": ".../lineage.jsonl"}}
    """
    # Imported here, as in demo.py: the example's planes read HYBRID_DAGSTER_HOME when first imported.
    import dagster as dg

    from examples.clinical_ai.definitions import defs
    from examples.clinical_ai.planes import PLANES
    from hybrid_dagster.sensors import openlineage_sensor

    path = Path(home).resolve() / LINEAGE_FILE
    path.unlink(missing_ok=True)
    sensor = openlineage_sensor(
        planes=PLANES, transport={"type": "file", "log_file_path": str(path), "append": True}, batch_size=1000
    )
    instance = instance or dg.DagsterInstance.get()
    repository = defs.get_repository_def()
    cursor: str | None = None
    for _ in range(10_000):
        result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository))
        assert isinstance(result, dg.SensorResult) and result.skip_reason is not None
        message = result.skip_reason.skip_message or ""
        if not message.startswith("Emitted"):
            if not message.startswith("No new Dagster events"):
                raise RuntimeError(message)
            break
        cursor = result.cursor or cursor
    path.touch()
    events = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"lineage": {"events": events, "path": str(path)}}


def main(argv: list[str] | None = None) -> int:
    home = existing_demo_home("python -m examples.clinical_ai.demo_lineage", argv)
    if home is None:
        return 1
    section = run_demo(home)
    print(json.dumps(section))
    print(f"OpenLineage events: {section['lineage']['path']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
