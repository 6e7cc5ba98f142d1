"""CDC logs in to PostgreSQL with a password resolved inside the plane from OpenBao: the job spec carries
only the reference; a role that needs a password is refused without it; the read is audited."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from examples.clinical_ai.hospital_db import TABLES, HospitalDb
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.cdc.worker import CdcJobSpec, run_job
from hybrid_dagster.resources import SecretsConfig
from hybrid_dagster.secrets import SecretRef
from hybrid_dagster.testing.openbao import OpenBaoServer
from hybrid_dagster.testing.postgres import add_password_role
from tests.cdc.cdc_harness import assert_equal_to_source, job_spec
from tests.fixtures.postgres import PgDatabase
from tests.planes import make_plane
from tests.secrets.vault_setup import approle, read_policy, unique


def test_cdc_logs_in_with_a_password_resolved_inside_the_plane(
    pg_db: PgDatabase, openbao: OpenBaoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = HospitalDb(pg_db.dsn, seed=3)
    db.create()
    db.populate(patients=15)
    role, password = f"cdc_{uuid.uuid4().hex[:8]}", f"Pg-Pw-{uuid.uuid4().hex}"
    role_dsn = add_password_role(pg_db.server, pg_db.name, role, password)
    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:  # the DBA creates the publication
        names = sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in TABLES)
        cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(role), names))
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(role_dsn).close()

    path = f"{unique('eu-onprem')}/restricted/clinical-db"
    root = openbao.root_client()
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": password}, mount_point="secret")
    role_id, secret_id = approle(root, unique("eu-onprem-engineer"), read_policy(path))
    monkeypatch.setenv("EU_ROLE_ID", role_id)
    monkeypatch.setenv("EU_SECRET_ID", secret_id)
    monkeypatch.setenv("CDC_DSN", role_dsn)
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", audit_url)
    plane = make_plane(
        tmp_path / "warehouse",
        secrets=SecretsConfig(
            backend="vault",
            address=openbao.address,
            auth_method="approle",
            role_id_env="EU_ROLE_ID",
            secret_id_env="EU_SECRET_ID",
        ),
    )
    spec_dict = job_spec("unused", "pgoutput", slot=role).model_dump()
    spec_dict["source"] = {
        "kind": "postgres",
        "dsn_env": "CDC_DSN",
        "slot_name": role,
        "password_secret": SecretRef(backend="vault", path=path, key="password").model_dump(),
    }
    spec = CdcJobSpec.model_validate(spec_dict)
    assert password not in spec.model_dump_json()

    _, facts = run_job(spec, plane)
    assert facts["clinical.patients"]["snapshot_rows"] == 15
    assert_equal_to_source(pg_db.dsn, plane)

    log = AuditLog(audit_url)
    (read,) = list(log.records("secret.read"))
    assert read.details["path"] == path and read.details["outcome"] == "ok" and read.plane == "eu-onprem"
    assert password not in Path(tmp_path / "audit.db").read_bytes().decode("latin-1")
    log.close()
