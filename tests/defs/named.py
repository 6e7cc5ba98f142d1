"""A Definitions object under a non-standard name, plus a lazily built one, selected with -a."""

import dagster as dg

from hybrid_dagster.pinning import pinned
from tests.defs.common import PLANES

report = dg.AssetSpec("report", **pinned("us-cloud", "public"))
platform = dg.Definitions(assets=[report], resources=PLANES)


@dg.definitions
def lazy() -> dg.Definitions:
    return dg.Definitions(assets=[dg.AssetSpec("x", **pinned("nowhere", "public"))], resources=PLANES)
