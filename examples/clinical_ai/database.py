"""The EU clinical operational database of the example, on an embedded PostgreSQL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from examples.clinical_ai.hospital_db import HospitalDb, Workload
from examples.clinical_ai.planes import EU_DB_DSN_ENV
from hybrid_dagster.servers.postgres import PostgresServer, start_embedded_postgres

DATABASE = "meridian_eu"


@dataclass
class ClinicalDatabase:
    server: PostgresServer
    db: HospitalDb

    def run_workload(self, *, transactions: int) -> Workload:
        self.db.workload = Workload()
        return self.db.run_workload(transactions=transactions)


def start_clinical_database(home: Path, *, patients: int = 300, seed: int = 7) -> ClinicalDatabase:
    """Start the embedded server, create and fill the database on first use, export its DSN.

    The DSN goes into ``MERIDIAN_EU_CLINICAL_DSN``, which plane work inherits; in production this
    variable comes from the plane's secrets backend.
    """
    server = start_embedded_postgres(home / "postgres")
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
    return ClinicalDatabase(server, db)
