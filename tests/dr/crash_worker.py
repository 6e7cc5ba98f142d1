"""Run a replication or a drill of the test plane under ``ROOT`` in this process, to be SIGKILLed by
``test_crash.py``: prints ``ready`` once imports are done, ``done`` at the end."""

import sys
from pathlib import Path

from hybrid_dagster.dr import replicate_plane, run_drill, secondary_plane
from hybrid_dagster.residency import ResidencyPolicy
from tests.dr.planes import eu_plane


def main(mode: str, root: Path) -> None:
    primary = eu_plane(root)
    secondary = secondary_plane(primary)
    print("ready", flush=True)
    if mode == "replicate":
        replicate_plane(primary, secondary, ResidencyPolicy(), workers=2)
    else:
        run_drill(primary, secondary)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
