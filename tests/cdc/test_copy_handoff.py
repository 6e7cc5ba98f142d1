"""The initial copy hands off to the stream exactly: unchanged TOAST values stay on their own row.

Issue 8, defect 2: a copy read later than the slot's consistent point, with carry-forward filling unchanged
(TOASTed) values from the copied table at the *old* key, lost a value (key update 1 -> 2: NULL) or put one
row's value on another (ids swapped through -1: each row got the other's dossier). Every test captures two
tables, one with REPLICA IDENTITY DEFAULT and one with FULL, runs through both decoders, and compares each
Iceberg table strictly with ``SELECT *``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2

from hybrid_dagster.cdc.worker import CdcJobSpec, run_job
from hybrid_dagster.resources import DataPlane
from tests.cdc.strict import diff_tables
from tests.planes import make_plane

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = {"td": "DEFAULT", "tf": "FULL"}  # table -> replica identity


def sql(dsn: str, *statements: str, params: tuple[Any, ...] = ()) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, params or None)
    conn.close()


def big_text(tag: str) -> str:
    """12 kB that does not compress: stored out of line (TOAST), so an update leaving it is 'unchanged'."""
    return tag + secrets.token_hex(6000)


def create_tables(dsn: str, rows: dict[int, str]) -> None:
    for table, identity in TABLES.items():
        sql(
            dsn,
            f"CREATE TABLE {table} (id int PRIMARY KEY, big text, v int NOT NULL DEFAULT 0)",
            f"ALTER TABLE {table} REPLICA IDENTITY {identity}",
        )
        for key, tag in rows.items():
            sql(dsn, f"INSERT INTO {table} (id, big) VALUES (%s, %s)", params=(key, big_text(tag)))
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT min(pg_column_size(big)) FROM td")
        row = cur.fetchone()
    conn.close()
    assert row is not None and (row[0] or 0) > 8000, "the test values must be stored out of line"


def spec(dsn: str, decoder: str, max_seconds: float | None = None) -> CdcJobSpec:
    return CdcJobSpec.model_validate(
        {
            "source": {"kind": "postgres", "dsn": dsn, "slot_name": "handoff", "decoder": decoder},
            "tables": [
                {
                    "source_table": f"public.{table}",
                    "identifier": f"handoff.{table}",
                    "classification": "restricted",
                    "home_plane": "eu-onprem",
                    "data_jurisdictions": ["EU"],
                }
                for table in TABLES
            ],
            "dead_letter_table": "handoff._dead_letters",
            "max_seconds": max_seconds,
        }
    )


def assert_exact(dsn: str, plane: DataPlane, context: str) -> None:
    catalog = plane.load_catalog()
    problems: list[str] = []
    for table in TABLES:
        rows = catalog.load_table(f"handoff.{table}").scan().to_arrow()
        problems += diff_tables(dsn, f"public.{table}", rows, ["id"])
    assert not problems, context + "\n" + "\n".join(problems)


def hand_made_slot(dsn: str, decoder: str) -> None:
    """What a user (or an earlier tool) leaves behind: a publication and a slot, no copy."""
    if decoder == "pgoutput":
        sql(dsn, f"CREATE PUBLICATION handoff FOR TABLE {', '.join(TABLES)}")
    sql(dsn, "SELECT pg_create_logical_replication_slot('handoff', %s)", params=(decoder,))


def key_update_and_swap(dsn: str) -> None:
    """The two cases of the issue, on every table: id 1 -> 5, and ids 2 and 3 swapped through -2."""
    conn = psycopg2.connect(dsn)
    for table in TABLES:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET id = 5 WHERE id = 1")
        conn.commit()
        with conn.cursor() as cur:  # one transaction
            cur.execute(f"UPDATE {table} SET id = -2 WHERE id = 2")
            cur.execute(f"UPDATE {table} SET id = 2 WHERE id = 3")
            cur.execute(f"UPDATE {table} SET id = 3 WHERE id = -2")
        conn.commit()
        with conn.cursor() as cur:  # and once more with the TOASTed values unchanged
            cur.execute(f"UPDATE {table} SET v = v + 1")
        conn.commit()
    conn.close()


def undo(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    for table in TABLES:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET id = 1 WHERE id = 5")
            cur.execute(f"UPDATE {table} SET id = -2 WHERE id = 2")
            cur.execute(f"UPDATE {table} SET id = 2 WHERE id = 3")
            cur.execute(f"UPDATE {table} SET id = 3 WHERE id = -2")
        conn.commit()
    conn.close()


ROWS = {1: "A", 2: "B", 3: "C", 4: "D"}


def test_changes_after_a_hand_made_slot_keep_unchanged_values_on_their_row(
    pg_decoder_db: tuple[str, str], tmp_path: Path
) -> None:
    dsn, decoder = pg_decoder_db
    create_tables(dsn, ROWS)
    hand_made_slot(dsn, decoder)
    key_update_and_swap(dsn)
    plane = make_plane(tmp_path / "warehouse")
    run_job(spec(dsn, decoder), plane)
    assert_exact(dsn, plane, f"first run after a hand-made slot, {decoder}")
    undo(dsn)  # streaming on top stays exact
    run_job(spec(dsn, decoder), plane)
    assert_exact(dsn, plane, f"second run, {decoder}")


SETUP_THEN_DIE = """
import os, signal, sys
from pathlib import Path
from hybrid_dagster.cdc.worker import CdcJobSpec
spec = CdcJobSpec.model_validate_json(Path(sys.argv[1]).read_text())
source = spec.source.build([m.source for m in spec.mappings()])
source.setup()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_first_run_killed_after_creating_its_slot(pg_decoder_db: tuple[str, str], tmp_path: Path) -> None:
    """SIGKILL right after the slot exists, changes, then ``hybrid-dagster cdc run``: exact."""
    dsn, decoder = pg_decoder_db
    create_tables(dsn, ROWS)
    plane = make_plane(tmp_path / "warehouse")
    (tmp_path / "job.json").write_text(spec(dsn, decoder).model_dump_json())
    (tmp_path / "plane.json").write_text(json.dumps(plane.to_config()))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    died = subprocess.run(
        [sys.executable, "-c", SETUP_THEN_DIE, str(tmp_path / "job.json")],
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert died.returncode == -signal.SIGKILL
    key_update_and_swap(dsn)
    cli = str(Path(sys.executable).parent / "hybrid-dagster")
    argv = [cli, "cdc", "run", "--spec", str(tmp_path / "job.json"), "--plane", str(tmp_path / "plane.json")]
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exact(dsn, plane, f"cdc run after a first run killed after its slot, {decoder}")


class Writer(threading.Thread):
    """Swaps ids through a free negative id and bumps ``v`` (TOASTed values unchanged), until stopped."""

    def __init__(self, dsn: str, keys: list[int], seed: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.keys, self.rng = dsn, keys, random.Random(seed)
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            while not self.stop.is_set():
                a, b = self.rng.sample(self.keys, 2)
                table = self.rng.choice(list(TABLES))
                with conn.cursor() as cur:
                    if self.rng.random() < 0.7:
                        cur.execute(f"UPDATE {table} SET id = -%s WHERE id = %s", (a, a))
                        cur.execute(f"UPDATE {table} SET id = %s WHERE id = %s", (a, b))
                        cur.execute(f"UPDATE {table} SET id = %s WHERE id = -%s", (b, a))
                    else:
                        cur.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (a,))
                conn.commit()
                self.transactions += 1
                time.sleep(0.005)
            conn.close()
        except BaseException as error:  # reported by the test
            self.error = error


def test_concurrent_writes_during_an_uncrashed_first_run(
    pg_decoder_db: tuple[str, str], tmp_path: Path
) -> None:
    dsn, decoder = pg_decoder_db
    keys = list(range(1, 41))
    create_tables(dsn, {k: f"row{k}-" for k in keys})
    plane = make_plane(tmp_path / "warehouse")
    writer = Writer(dsn, keys, seed=8)
    writer.start()
    try:
        time.sleep(0.2)
        # the first run: slot, copy, then streaming for a while (it cannot drain a writer that never stops)
        run_job(spec(dsn, decoder, max_seconds=3), plane)
        time.sleep(0.2)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert writer.transactions > 10
    run_job(spec(dsn, decoder), plane)
    assert_exact(dsn, plane, f"after a writer during the first run, {decoder}")
