"""A stand-in for Dagster's sensor daemon, for crash tests: ticks the OpenLineage sensor and stores the
cursor (atomically, after the tick returned) the way the daemon stores a tick's cursor.

``python -m tests.sensors.lineage_worker HOME WAREHOUSE CURSOR_FILE URL BATCH``; prints ``tick`` before
each tick and exits 0 once the sensor has caught up.
"""

import os
import sys
from pathlib import Path

from hybrid_dagster.sensors import openlineage_sensor
from tests.planes import make_plane
from tests.sensors.lineage_harness import definitions, http_transport, local_instance, tick


def main() -> int:
    home, warehouse, cursor_file, url, batch = sys.argv[1:6]
    plane = make_plane(Path(warehouse))
    instance = local_instance(Path(home))
    sensor = openlineage_sensor(planes=[plane], transport=http_transport(url), batch_size=int(batch))
    defs = definitions(plane, sensor)
    path = Path(cursor_file)
    while True:
        cursor = path.read_text(encoding="utf-8") if path.exists() else None
        print("tick", flush=True)
        done = tick(sensor, instance, defs, cursor)
        if done.raised is not None:
            raise done.raised
        if done.cursor is not None and done.cursor != cursor:
            scratch = path.with_suffix(".tmp")
            scratch.write_text(done.cursor, encoding="utf-8")
            os.replace(scratch, path)
        if done.skip.startswith("No new Dagster events"):
            return 0


if __name__ == "__main__":
    sys.exit(main())
