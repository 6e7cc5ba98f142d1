"""Differential test: a random, seeded PostgreSQL workload streamed into Iceberg, compared strictly.

The workload has inserts, updates that leave TOASTed values unchanged, key updates, key swaps through a
free id in one transaction, deletes, rolled-back transactions, savepoints rolled back, a column added
mid-stream, and a concurrent writer while the first copy is taken. It is streamed through the documented
entry points, ``hybrid-dagster cdc run`` (killed with SIGKILL during the copy and mid-stream) and the
``cdc_table_assets`` factory materialized with ``dagster.materialize``, for both decoders (pgoutput on the
embedded PostgreSQL, wal2json on Debian PostgreSQL 15 when installed). After every run that finished, and at
the end, each Iceberg table must equal ``SELECT *`` of its source table (:mod:`tests.cdc.strict`).

The seed is printed and named in every failure; rerun one with ``HD_CDC_SEED=<seed>``. ``HD_CDC_ROUNDS``
sets the number of workload rounds (default 4; each round picks a kill, a CLI run or a materialization).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import psycopg2
import psycopg2.extras
import pytest

from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.cdc.sources.config import PostgresCdcSource
from hybrid_dagster.cdc.worker import CdcJobSpec
from hybrid_dagster.residency import ResidencyPolicy
from tests.cdc.strict import diff_tables
from tests.planes import make_plane

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "diff"
DSN_ENV = "HD_DIFF_DSN"
KEYS = {"public.patients": ["id"], "public.notes": ["site", "n"]}

# Value classes every decoder keeps exactly. A wal2json without numeric-data-types-as-string (2.5, Debian's
# build, lacks it) writes float NaN/Infinity as JSON null: the source warns (issue 8, type fidelity), so they
# stay out of its workload; pgoutput keeps them.
SPECIAL_FLOATS = {"pgoutput": True, "wal2json": False}
ADD_COLUMN_WITH_DEFAULT = True  # old rows read the default (Iceberg initial default), as in PostgreSQL

SCHEMA = """
CREATE TABLE patients (
    id int PRIMARY KEY, name text, dossier text, score numeric(10, 2), weight real, ratio double precision,
    born date, seen timestamptz, local_ts timestamp, flag boolean, raw bytea, meta jsonb, tag uuid,
    visits bigint, small smallint, free numeric
);
CREATE TABLE notes (site text, n int, body text, rev int NOT NULL, PRIMARY KEY (site, n));
ALTER TABLE notes REPLICA IDENTITY FULL;
"""

TEXTS = [
    "",
    "Zoë",
    "東京の病院",
    "a\u0301",
    "🙂🙂",
    "quote ' and \" and \\",
    "line\nbreak\ttab",
    "NULL",
    "null",
]


def seed_of() -> int:
    return int(os.environ.get("HD_CDC_SEED") or random.SystemRandom().randrange(2**31))


class Values:
    """Random column values, from one seeded generator."""

    def __init__(self, rng: random.Random, special_floats: bool) -> None:
        self.rng = rng
        self.special_floats = special_floats

    def text(self) -> str | None:
        r = self.rng.random()
        if r < 0.1:
            return None
        if r < 0.5:
            return self.rng.choice(TEXTS)
        return "".join(
            self.rng.choice("abcdefghij klmnoÄÖÜß€漢字🙂'\\") for _ in range(self.rng.randint(1, 40))
        )

    def dossier(self) -> str | None:
        r = self.rng.random()
        if r < 0.1:
            return None
        if r < 0.55:  # out of line: incompressible and over the TOAST threshold
            return self.rng.randbytes(self.rng.randint(2500, 6000)).hex()
        return self.text()

    def score(self) -> Decimal | None:
        if self.rng.random() < 0.1:
            return None
        return Decimal(self.rng.randint(-9_999_999_999, 9_999_999_999)).scaleb(-2)

    def float(self, bits: int) -> float | None:
        r = self.rng.random()
        if r < 0.08:
            return None
        if r < 0.2:
            specials = [
                0.0,
                -0.0,
                5e-324 if bits == 64 else 1e-45,
                1.7976931348623157e308 if bits == 64 else 3.4e38,
            ]
            if self.special_floats:
                specials += [float("nan"), float("inf"), float("-inf")]
            return self.rng.choice(specials)
        value = self.rng.uniform(-1e6, 1e6) * 10 ** self.rng.randint(-20, 20)
        return value if bits == 64 else float(np.float32(value))

    def born(self) -> date | None:
        if self.rng.random() < 0.1:
            return None
        return date(1800, 1, 1) + timedelta(days=self.rng.randint(0, 150_000))

    def seen(self) -> datetime | None:
        if self.rng.random() < 0.1:
            return None
        zone = timezone(timedelta(minutes=self.rng.choice([0, 330, -480, 60, 765])))
        base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=self.rng.randint(-(2**52), 2**52))
        return base.astimezone(zone)

    def local_ts(self) -> datetime | None:
        value = self.seen()
        return None if value is None else value.replace(tzinfo=None)

    def patient(self, key: int, columns: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"id": key}
        for column in columns:
            if column != "id":
                row[column] = self.column(column)
        return row

    def column(self, column: str) -> Any:
        rng = self.rng
        makers: dict[str, Any] = {
            "name": self.text,
            "dossier": self.dossier,
            "score": self.score,
            "weight": lambda: self.float(32),
            "ratio": lambda: self.float(64),
            "born": self.born,
            "seen": self.seen,
            "local_ts": self.local_ts,
            "flag": lambda: rng.choice([True, False, None]),
            "raw": lambda: rng.choice([None, b"", b"\x00\xff\\x", rng.randbytes(rng.randint(1, 64))]),
            "meta": lambda: rng.choice(
                [None, json.dumps({"k": [1, 2.5, None], "ü": self.text()}), json.dumps([True, "🙂"])]
            ),
            "tag": lambda: None if rng.random() < 0.2 else str(uuid.UUID(int=rng.getrandbits(128))),
            "visits": lambda: rng.choice([None, 0, -(2**63), 2**63 - 1, rng.randint(-(2**62), 2**62)]),
            "small": lambda: rng.choice([None, -32768, 32767, rng.randint(-100, 100)]),
            "free": lambda: rng.choice(
                [None, "0", "1e-30", "123456789012345678901234567890.123456789", "-0.50"]
            ),
            "status": lambda: rng.choice([None, "active", "discharged"]),
        }
        value = makers[column]()
        return psycopg2.Binary(value) if column == "raw" and value is not None else value


class Workload:
    """Seeded transactions over one key range of ``patients`` and one site of ``notes``."""

    def __init__(self, dsn: str, rng: random.Random, *, base: int, site: str, special_floats: bool) -> None:
        self.dsn, self.rng, self.base, self.site = dsn, rng, base, site
        self.values = Values(rng, special_floats)
        self.next_key = base + 1
        self.transactions = 0

    def fresh(self) -> int:
        self.next_key += 1
        return self.next_key

    def patient_columns(self, cur: Any) -> list[str]:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'patients'::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum"
        )
        return [r[0] for r in cur.fetchall()]

    def ids(self, cur: Any) -> list[int]:
        cur.execute(
            "SELECT id FROM patients WHERE id > %s AND id <= %s ORDER BY id", (self.base, self.base + 10**6)
        )
        return [r[0] for r in cur.fetchall()]

    def insert(self, cur: Any, columns: list[str], key: int | None = None) -> None:
        row = self.values.patient(key if key is not None else self.fresh(), columns)
        names = ", ".join(row)
        cur.execute(
            f"INSERT INTO patients ({names}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values())
        )

    def operation(self, cur: Any, columns: list[str]) -> None:
        ids = self.ids(cur)
        r = self.rng.random()
        if r < 0.3 or len(ids) < 3:
            self.insert(cur, columns)
        elif r < 0.55:  # leave the dossier (TOASTed or not) unchanged
            chosen = self.rng.sample(
                [c for c in columns if c not in ("id", "dossier")], self.rng.randint(1, 3)
            )
            sets = ", ".join(f"{c} = %s" for c in chosen)
            cur.execute(
                f"UPDATE patients SET {sets} WHERE id = %s",
                [*(self.values.column(c) for c in chosen), self.rng.choice(ids)],
            )
        elif r < 0.6:
            cur.execute(
                "UPDATE patients SET dossier = %s WHERE id = %s",
                (self.values.dossier(), self.rng.choice(ids)),
            )
        elif r < 0.7:  # key update, dossier unchanged
            cur.execute("UPDATE patients SET id = %s WHERE id = %s", (self.fresh(), self.rng.choice(ids)))
        elif r < 0.8:  # swap two keys through a free one, in this transaction
            a, b = self.rng.sample(ids, 2)
            cur.execute("UPDATE patients SET id = %s WHERE id = %s", (-a, a))
            cur.execute("UPDATE patients SET id = %s WHERE id = %s", (a, b))
            cur.execute("UPDATE patients SET id = %s WHERE id = %s", (b, -a))
        elif r < 0.88:
            cur.execute("DELETE FROM patients WHERE id = %s", (self.rng.choice(ids),))
        elif r < 0.94:
            self.note(cur)
        else:  # work undone by a savepoint
            cur.execute("SAVEPOINT s")
            self.insert(cur, columns)
            cur.execute("UPDATE patients SET id = %s WHERE id = %s", (self.fresh(), self.rng.choice(ids)))
            cur.execute("ROLLBACK TO SAVEPOINT s")

    def note(self, cur: Any) -> None:
        cur.execute("SELECT n FROM notes WHERE site = %s", (self.site,))
        ns = [r[0] for r in cur.fetchall()]
        r = self.rng.random()
        if r < 0.4 or not ns:
            body = self.values.dossier()
            cur.execute("INSERT INTO notes VALUES (%s, %s, %s, 0)", (self.site, self.fresh(), body))
        elif r < 0.7:  # body unchanged (REPLICA IDENTITY FULL)
            cur.execute(
                "UPDATE notes SET rev = rev + 1 WHERE site = %s AND n = %s", (self.site, self.rng.choice(ns))
            )
        elif r < 0.9:
            cur.execute(
                "UPDATE notes SET n = %s WHERE site = %s AND n = %s",
                (self.fresh(), self.site, self.rng.choice(ns)),
            )
        else:
            cur.execute("DELETE FROM notes WHERE site = %s AND n = %s", (self.site, self.rng.choice(ns)))

    def run(self, transactions: int, stop: threading.Event | None = None) -> None:
        conn = psycopg2.connect(self.dsn)
        try:
            for _ in range(transactions):
                if stop is not None and stop.is_set():
                    break
                with conn.cursor() as cur:
                    columns = self.patient_columns(cur)
                    for _ in range(self.rng.randint(1, 4)):
                        self.operation(cur, columns)
                if self.rng.random() < 0.1:
                    conn.rollback()
                else:
                    conn.commit()
                self.transactions += 1
                if stop is not None:
                    time.sleep(0.005)  # a steady writer, not a flood the first run can never catch up with
        finally:
            conn.close()

    def populate(self, patients: int, notes: int) -> None:
        conn = psycopg2.connect(self.dsn)
        with conn.cursor() as cur:
            columns = self.patient_columns(cur)
            for _ in range(patients):
                self.insert(cur, columns)
            for _ in range(notes):
                cur.execute(
                    "INSERT INTO notes VALUES (%s, %s, %s, 0)",
                    (self.site, self.fresh(), self.values.dossier()),
                )
        conn.commit()
        conn.close()


def execute(dsn: str, statement: str) -> Any:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall() if cur.description else None
    conn.close()
    return rows


class Harness:
    """One database, one plane, one slot; the CLI and the asset factory stream into the same tables."""

    def __init__(self, dsn: str, decoder: str, tmp_path: Path, seed: int) -> None:
        self.dsn, self.decoder, self.seed = dsn, decoder, seed
        self.plane = make_plane(tmp_path / "warehouse")
        self.slot = f"diff_{decoder}"
        tables = [
            {
                "source_table": t,
                "identifier": self.identifier(t),
                "classification": "restricted",
                "home_plane": self.plane.name,
                "data_jurisdictions": ["EU"],
            }
            for t in KEYS
        ]
        spec = CdcJobSpec.model_validate(
            {
                "source": {
                    "kind": "postgres",
                    "dsn_env": DSN_ENV,
                    "slot_name": self.slot,
                    "decoder": decoder,
                },
                "tables": tables,
                "dead_letter_table": f"{NAMESPACE}._dead_letters",
                "batch_events": 300,
            }
        )
        self.spec_path, self.plane_path = tmp_path / "job.json", tmp_path / "plane.json"
        self.spec_path.write_text(spec.model_dump_json())
        # While a writer never stops, a run would never drain: the bounded spec stops reading after 3 s.
        self.bounded_path = tmp_path / "job_bounded.json"
        self.bounded_path.write_text(spec.model_copy(update={"max_seconds": 3.0}).model_dump_json())
        self.plane_path.write_text(json.dumps(self.plane.to_config()))
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), DSN_ENV: dsn}
        self.assets = cdc_table_assets(
            name="diff_cdc",
            source=PostgresCdcSource(dsn_env=DSN_ENV, slot_name=self.slot, decoder=decoder),
            plane=self.plane,
            source_jurisdiction="EU",
            tables=[CdcTable(t, "restricted") for t in KEYS],
            namespace=NAMESPACE,
            batch_events=300,
        )
        self.log: list[str] = []
        self.started = time.monotonic()

    def note(self, step: str) -> None:
        self.log.append(f"{step} @{time.monotonic() - self.started:.0f}s")

    @staticmethod
    def identifier(table: str) -> str:
        return f"{NAMESPACE}.{table.split('.')[1]}"

    def cli(self, bounded: bool = False) -> subprocess.Popen[bytes]:
        cli = str(Path(sys.executable).parent / "hybrid-dagster")
        spec = self.bounded_path if bounded else self.spec_path
        argv = [cli, "cdc", "run", "--spec", str(spec), "--plane", str(self.plane_path)]
        return subprocess.Popen(
            argv, env=self.env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def cli_to_end(self, bounded: bool = False) -> None:
        worker = self.cli(bounded)
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, self.context(f"cdc run failed:\n{err.decode()[-4000:]}")
        self.note("cli run")

    def kill_during_copy(self) -> None:
        """SIGKILL ``cdc run`` while its copy's temporary slot exists (open until the copy committed)."""
        worker = self.cli(bounded=True)
        started = time.monotonic()
        seen = False
        while worker.poll() is None and time.monotonic() - started < 120:
            query = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'hd_copy_%'"
            if execute(self.dsn, query)[0][0]:
                seen = True
                time.sleep(random.Random(self.seed).uniform(0, 0.2))
                break
            time.sleep(0.02)
        self.kill(worker, "during the copy")
        assert seen, self.context("the copy's temporary slot never showed: the kill did not land in the copy")
        self.note(f"tables copied before the kill: {self.copied()}")

    def copied(self) -> int:
        catalog = self.plane.load_catalog()
        return sum(
            1
            for table in KEYS
            if catalog.table_exists(self.identifier(table))
            and catalog.load_table(self.identifier(table)).current_snapshot() is not None
        )

    def kill_after(self, seconds: float) -> None:
        worker = self.cli()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=seconds)
        self.kill(worker, f"after {seconds:.2f}s")

    def kill(self, worker: subprocess.Popen[bytes], when: str) -> None:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            self.note(f"SIGKILL {when}")
        else:
            _, err = worker.communicate()
            assert worker.returncode == 0, self.context(f"cdc run failed:\n{err.decode()[-4000:]}")
            self.note(f"cli run (ended before the kill {when})")

    def materialize(self) -> None:
        result = dg.materialize(
            [self.assets], resources={"eu_onprem": self.plane, "residency_policy": ResidencyPolicy()}
        )
        assert result.success, self.context("materialize failed")
        self.note("materialize")

    def context(self, what: str) -> str:
        return f"{what}\n[HD_CDC_SEED={self.seed} decoder={self.decoder}; steps: {', '.join(self.log)}]"

    def assert_equal(self) -> None:
        catalog = self.plane.load_catalog()
        problems: list[str] = []
        for table, keys in KEYS.items():
            rows = catalog.load_table(self.identifier(table)).scan().to_arrow()
            problems += diff_tables(self.dsn, table, rows, keys)
        dead = (
            catalog.load_table(f"{NAMESPACE}._dead_letters").scan().to_arrow().num_rows
            if catalog.table_exists(f"{NAMESPACE}._dead_letters")
            else 0
        )
        if dead:
            problems.append(f"{dead} dead letters")
        assert not problems, self.context("Iceberg differs from SELECT *:\n" + "\n".join(problems))


def differential(
    pg_decoder_db: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: int
) -> None:
    dsn, decoder = pg_decoder_db
    seed = seed_of()
    print(f"differential CDC test: HD_CDC_SEED={seed} decoder={decoder}")
    monkeypatch.setenv(DSN_ENV, dsn)
    rng = random.Random(seed)
    specials = SPECIAL_FLOATS[decoder]
    execute(dsn, SCHEMA)
    main = Workload(dsn, random.Random(rng.random()), base=0, site="eu", special_floats=specials)
    main.populate(patients=80, notes=20)
    harness = Harness(dsn, decoder, tmp_path, seed)

    # The first copy is taken while another writer changes rows (its own keys); killed during the copy once.
    other = Workload(dsn, random.Random(rng.random()), base=10**7, site="us", special_floats=specials)
    other.populate(patients=30, notes=10)
    stop = threading.Event()
    writer = threading.Thread(target=other.run, args=(10**6, stop), daemon=True)
    writer.start()
    try:
        harness.kill_during_copy()
        harness.cli_to_end(bounded=True)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert other.transactions > 0, harness.context("the concurrent writer did not write")
    harness.cli_to_end()  # drain what the writer wrote after the first run read
    harness.assert_equal()

    altered_at = rounds // 2
    for round_ in range(rounds):
        if round_ == altered_at:
            default = " DEFAULT 'active'" if ADD_COLUMN_WITH_DEFAULT else ""
            execute(dsn, f"ALTER TABLE patients ADD COLUMN status text{default}")
            harness.note("added column status")
        main.run(rng.randint(20, 60))
        action = rng.choice(["kill", "cli", "materialize"])
        if action == "kill":
            harness.kill_after(rng.uniform(1.5, 5.0))
            action = rng.choice(["cli", "materialize"])
        if action == "cli":
            harness.cli_to_end()
        else:
            harness.materialize()
        harness.assert_equal()


def test_random_workload_matches_select_star(
    pg_decoder_db: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    differential(pg_decoder_db, tmp_path, monkeypatch, int(os.environ.get("HD_CDC_ROUNDS") or 4))
