"""DR replication throughput: a 1 GB / 200-snapshot Iceberg table copied to a secondary, then one new
snapshot copied incrementally.

Prints ONE JSON object on stdout (progress on stderr)::

    .venv/bin/python -m benchmarks.replication                     # 1000 MB in 200 snapshots
    .venv/bin/python benchmarks/replication.py --mb 50 --snapshots 20   # a quick run
    .venv/bin/python -m benchmarks.replication --help

Figures: ``full_mb_per_s`` (data bytes of the first, full replication - every data file copied, every
manifest and manifest list rewritten with the secondary's paths, the table registered - per second of
wall clock), ``incremental_s`` (one new snapshot, replicated after the full copy) and
``incremental_s_short_history`` (the same on a table with a tenth of the history): the incremental copy
must not grow with the table's history, so the two should be close. Both warehouses are ``file://``
on the same disk; the copier is the same for ``s3://`` (tests run it against moto).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io import load_file_io
from pyiceberg.table import Table

from hybrid_dagster.dr.replicate import replicate_table, target_location

ROW_BYTES = 1024


def _batch(rows: int, start: int) -> pa.Table:
    payload = os.urandom(rows * ROW_BYTES)  # incompressible: Parquet size ~ raw size
    return pa.table(
        {
            "id": pa.array(range(start, start + rows), pa.int64()),
            "payload": pa.array(
                [payload[i * ROW_BYTES : (i + 1) * ROW_BYTES] for i in range(rows)], pa.binary()
            ),
        }
    )


def _table(root: Path, name: str, mb: float, snapshots: int) -> tuple[SqlCatalog, Table]:
    catalog = SqlCatalog(name, uri=f"sqlite:///{root / f'{name}.db'}", warehouse=f"file://{root / name}")
    catalog.create_namespace("bench")
    rows = max(1, int(mb * 1_000_000 / snapshots / ROW_BYTES))
    table = catalog.create_table("bench.events", schema=_batch(1, 0).schema)
    for i in range(snapshots):
        table.append(_batch(rows, i * rows), snapshot_properties={"hybrid.cdc.position": f"{i}:0"})
        if (i + 1) % 20 == 0:
            print(f"  {name}: {i + 1}/{snapshots} snapshots", file=sys.stderr)
    return catalog, table


def _replicate(root: Path, name: str, table: Table) -> tuple[float, int]:
    target = SqlCatalog(
        f"{name}-dr", uri=f"sqlite:///{root / f'{name}-dr.db'}", warehouse=f"file://{root}/{name}-dr"
    )
    io = load_file_io({}, f"file://{root}/{name}-dr")
    location = target_location(table, f"file://{root / name}", f"file://{root}/{name}-dr")
    started = time.perf_counter()
    result = replicate_table(table, target, io, location)
    return time.perf_counter() - started, result.bytes_copied


def _incremental(root: Path, name: str, catalog: SqlCatalog, table: Table, rows: int) -> float:
    table.append(_batch(rows, 10**9))
    table = catalog.load_table("bench.events")
    seconds, _ = _replicate(root, name, table)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replication", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mb", type=float, default=1000.0, help="table size in MB (default 1000)")
    parser.add_argument("--snapshots", type=int, default=200, help="snapshots in the table (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="hd-bench-dr-"))
    try:
        print(f"writing {args.mb:.0f} MB in {args.snapshots} snapshots under {root}", file=sys.stderr)
        catalog, table = _table(root, "primary", args.mb, args.snapshots)
        full_s, copied = _replicate(root, "primary", table)
        rows = max(1, int(args.mb * 1_000_000 / args.snapshots / ROW_BYTES))
        incremental_s = _incremental(root, "primary", catalog, table, rows)
        short = max(2, args.snapshots // 10)
        short_catalog, short_table = _table(root, "short", args.mb * short / args.snapshots, short)
        _replicate(root, "short", short_table)
        incremental_short_s = _incremental(root, "short", short_catalog, short_table, rows)
        body = {
            "mb": round(copied / 1_000_000, 1),
            "snapshots": args.snapshots,
            "full_s": round(full_s, 3),
            "full_mb_per_s": round(copied / 1_000_000 / full_s, 1),
            "incremental_s": round(incremental_s, 3),
            "incremental_s_short_history": round(incremental_short_s, 3),
            "short_history_snapshots": short,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(body))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
