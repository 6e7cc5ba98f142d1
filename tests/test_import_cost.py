"""``import hybrid_dagster`` stays cheap: the CDC engine, pyiceberg, numpy and pyarrow load on first use."""

import subprocess
import sys

HEAVY = ("pyiceberg", "numpy", "pyarrow", "psycopg2", "hybrid_dagster.cdc")


def test_import_does_not_load_heavy_modules() -> None:
    code = f"import sys, hybrid_dagster; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"import hybrid_dagster loaded {loaded.stdout.strip()}"


def test_lazy_names_still_resolve() -> None:
    import hybrid_dagster

    assert hybrid_dagster.cdc_table_assets.__name__ == "cdc_table_assets"
    assert hybrid_dagster.PlaneIcebergIOManager.__name__ == "PlaneIcebergIOManager"


def test_every_public_name_resolves() -> None:
    import hybrid_dagster

    missing = [name for name in hybrid_dagster.__all__ if getattr(hybrid_dagster, name, None) is None]
    assert missing == []
    assert sorted(hybrid_dagster.__all__) == sorted(set(hybrid_dagster.__all__))
