"""A synthetic hospital operational database (patients, encounters, lab results) and its workload.

Everything is generated from a seeded RNG: no real person is in here. The workload mixes multi-row
transactions of inserts, updates, deletes and primary-key changes, NULLs, unicode and large text.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extras

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id   bigint PRIMARY KEY,
    full_name    text NOT NULL,
    birth_date   date,
    sex          text,
    postcode     text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS encounters (
    encounter_id bigint PRIMARY KEY,
    patient_id   bigint NOT NULL,
    ward         text NOT NULL,
    admitted_at  timestamptz NOT NULL,
    discharged_at timestamptz,
    notes        text
);
CREATE TABLE IF NOT EXISTS lab_results (
    result_id    bigint PRIMARY KEY,
    encounter_id bigint NOT NULL,
    test_code    text NOT NULL,
    value        double precision,
    unit         text,
    abnormal     boolean,
    taken_at     timestamptz NOT NULL
);
"""

INSERT_PATIENT = (
    "INSERT INTO patients (patient_id, full_name, birth_date, sex, postcode) VALUES (%s,%s,%s,%s,%s)"
)
INSERT_PATIENT = (
    "INSERT INTO patients (patient_id, full_name, birth_date, sex, postcode) VALUES (%s, %s, %s, %s, %s)"
)
TABLES = ("public.patients", "public.encounters", "public.lab_results")
GIVEN = [
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Élodie",
    "Fatima",
    "Giulia",
    "Håkon",
    "Ines",
    "Jürgen",
    "Zoë",
    "Łukasz",
]
FAMILY = [
    "Álvarez",
    "Berg",
    "Çelik",
    "Dubois",
    "Eriksson",
    "Fischer",
    "García",
    "Nowak",
    "Østergaard",
    "Rossi",
]
WARDS = ["cardiology", "oncology", "pediatrics", "icu", "neurology", "maternity"]
TESTS = [("HBA1C", "%"), ("CRP", "mg/L"), ("LDL", "mmol/L"), ("HGB", "g/dL"), ("K", "mmol/L")]


@dataclass
class Workload:
    """Counters of what the generator did (for tests and the demo summary)."""

    transactions: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    key_changes: int = 0


class HospitalDb:
    """Creates and mutates the synthetic hospital database.

    Example:
        >>> db = HospitalDb(dsn, seed=7)
        >>> db.create()
        >>> db.populate(patients=200)
        >>> db.run_workload(transactions=50)
    """

    def __init__(self, dsn: str, *, seed: int = 0) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.workload = Workload()
        self._next_id = {"patients": 1, "encounters": 1, "lab_results": 1}

    @contextmanager
    def session(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection that commits on success and is always closed."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def create(self) -> None:
        with self.session() as conn, conn.cursor() as cur:
            cur.execute(SCHEMA)
            for table, key in (
                ("patients", "patient_id"),
                ("encounters", "encounter_id"),
                ("lab_results", "result_id"),
            ):
                cur.execute(f"SELECT coalesce(max({key}), 0) + 1 FROM {table}")
                row = cur.fetchone()
                self._next_id[table] = int(row[0]) if row else 1

    def _id(self, table: str) -> int:
        value = self._next_id[table]
        self._next_id[table] = value + 1
        return value

    def _patient(self) -> tuple:
        r = self.rng
        name = f"{r.choice(GIVEN)} {r.choice(FAMILY)}"
        birth = (
            None
            if r.random() < 0.05
            else f"{r.randint(1930, 2024)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        )
        return (
            self._id("patients"),
            name,
            birth,
            r.choice(["F", "M", "X", None]),
            f"{r.randint(10000, 99999)}",
        )

    def _notes(self) -> str | None:
        r = self.rng
        roll = r.random()
        if roll < 0.2:
            return None
        if roll < 0.25:  # large enough to be TOASTed out of line
            return "Verlauf unauffällig; Kontrolle in 6 Wochen. " * r.randint(300, 600)
        return r.choice(["stable", "observe 24h", "transfer pending", "résumé: afebrile ✓", "家族歴なし"])

    def populate(
        self, *, patients: int, encounters_per_patient: int = 2, results_per_encounter: int = 2
    ) -> None:
        with self.session() as conn, conn.cursor() as cur:
            for _ in range(patients):
                p = self._patient()
                cur.execute(INSERT_PATIENT, p)
                for _ in range(encounters_per_patient):
                    self._insert_encounter(cur, p[0], results_per_encounter)
        self.workload.inserts += patients * (1 + encounters_per_patient * (1 + results_per_encounter))

    def _insert_encounter(self, cur: psycopg2.extensions.cursor, patient_id: int, results: int) -> None:
        r = self.rng
        eid = self._id("encounters")
        # Most encounters ended some time after admission (1-10 days); some patients are still in.
        admitted_hours_ago = r.randint(1, 2000)
        stay_hours = r.randint(12, 240)
        discharged = stay_hours < admitted_hours_ago and r.random() < 0.85
        cur.execute(
            "INSERT INTO encounters VALUES (%s,%s,%s, now() - make_interval(hours => %s), "
            "CASE WHEN %s THEN now() - make_interval(hours => %s) END, %s)",
            (
                eid,
                patient_id,
                r.choice(WARDS),
                admitted_hours_ago,
                discharged,
                admitted_hours_ago - stay_hours,
                self._notes(),
            ),
        )
        for _ in range(results):
            code, unit = r.choice(TESTS)
            value = None if r.random() < 0.05 else round(r.uniform(0.5, 200), 3)
            cur.execute(
                "INSERT INTO lab_results VALUES (%s,%s,%s,%s,%s,%s, now())",
                (self._id("lab_results"), eid, code, value, unit, None if value is None else value > 150),
            )

    def run_workload(self, *, transactions: int, max_ops: int = 6) -> Workload:
        """Random multi-row transactions of inserts, updates, deletes and primary-key changes."""
        r = self.rng
        with self.session() as conn:
            for _ in range(transactions):
                with conn.cursor() as cur:
                    for _ in range(r.randint(1, max_ops)):
                        self._random_op(cur)
                conn.commit()
                self.workload.transactions += 1
        return self.workload

    def _random_op(self, cur: psycopg2.extensions.cursor) -> None:
        r = self.rng
        roll = r.random()
        w = self.workload
        if roll < 0.25:
            p = self._patient()
            cur.execute(INSERT_PATIENT, p)
            self._insert_encounter(cur, p[0], r.randint(0, 3))
            w.inserts += 1
        elif roll < 0.55:
            cur.execute(
                "UPDATE encounters SET discharged_at = now(), ward = %s WHERE encounter_id = "
                "(SELECT encounter_id FROM encounters ORDER BY random() LIMIT 1)",
                (r.choice(WARDS),),
            )
            w.updates += cur.rowcount
        elif roll < 0.7:
            cur.execute(
                "UPDATE lab_results SET value = %s, abnormal = NULL WHERE result_id = "
                "(SELECT result_id FROM lab_results ORDER BY random() LIMIT 1)",
                (round(r.uniform(0.5, 200), 3),),
            )
            w.updates += cur.rowcount
        elif roll < 0.8:
            cur.execute(
                "UPDATE patients SET postcode = %s, full_name = full_name || %s, updated_at = now() "
                "WHERE patient_id = (SELECT patient_id FROM patients ORDER BY random() LIMIT 1)",
                (f"{r.randint(10000, 99999)}", r.choice(["", " Jr.", "-Łoś"])),
            )
            w.updates += cur.rowcount
        elif roll < 0.9:
            cur.execute(
                "DELETE FROM lab_results WHERE result_id = "
                "(SELECT result_id FROM lab_results ORDER BY random() LIMIT 1)"
            )
            w.deletes += cur.rowcount
        else:
            new_id = self._id("lab_results")
            cur.execute(
                "UPDATE lab_results SET result_id = %s WHERE result_id = "
                "(SELECT result_id FROM lab_results ORDER BY random() LIMIT 1)",
                (new_id,),
            )
            w.key_changes += cur.rowcount
