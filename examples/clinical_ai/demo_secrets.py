"""Demo step: secrets resolved inside the planes, with each plane's own identity.

Starts an OpenBao dev server and moto (Secrets Manager + IAM, enforcing), applies the example's access
tiers (``defs/access/defs.yaml``) to OpenBao, stores the example PostgreSQL CDC role's password in OpenBao
(``HYBRID_DAGSTER_DEMO_DB_PASSWORD`` if set, else random) and a partner API token for the US cloud plane
in Secrets Manager. Then the EU clinical CDC logs in to PostgreSQL with that password - resolved inside
the eu-onprem plane with its AppRole - and the us-cloud plane reads its token with its own IAM keys.
Every read is audited; no value reaches the orchestrator.

Standalone: ``python -m examples.clinical_ai.demo_secrets --home .demo``.
"""

import argparse
import json
import os
import secrets as token_source
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
from psycopg2 import sql

from examples.clinical_ai.database import DATABASE, ClinicalDatabase, start_clinical_database
from examples.clinical_ai.planes import EU_ONPREM, POLICY, US_CLOUD
from hybrid_dagster.access import apply_vault, iam_policy, load_access
from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.audit.log import AUDIT_URL_ENV
from hybrid_dagster.cdc.sources.config import PostgresCdcSource
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import Classification
from hybrid_dagster.resources import DataPlane, SecretsConfig
from hybrid_dagster.secrets import READ_KIND, SecretRef
from hybrid_dagster.testing.moto import start_moto_server
from hybrid_dagster.testing.openbao import start_openbao_dev
from hybrid_dagster.testing.postgres import add_password_role

ACCESS_YAML = Path(__file__).parent / "defs" / "access" / "defs.yaml"
PASSWORD_ENV = "HYBRID_DAGSTER_DEMO_DB_PASSWORD"
CDC_ROLE = "meridian_cdc"
CDC_SLOT = "meridian_eu_vault"
CDC_DSN_ENV = "MERIDIAN_EU_CDC_DSN"
"""The CDC role's DSN without its password (the password comes from OpenBao, inside the plane)."""
EU_ROLE_ID_ENV, EU_SECRET_ID_ENV = "MERIDIAN_EU_ONPREM_ROLE_ID", "MERIDIAN_EU_ONPREM_SECRET_ID"
US_KEY_ID_ENV, US_SECRET_KEY_ENV = "MERIDIAN_US_CLOUD_AWS_KEY_ID", "MERIDIAN_US_CLOUD_AWS_SECRET_KEY"
CLINICAL_TABLES = ("public.patients", "public.encounters", "public.lab_results")


def _plane(base: DataPlane, home: Path, secrets: SecretsConfig) -> DataPlane:
    """``base`` with its own warehouse under ``home/secrets`` (the main demo's tables stay untouched)."""
    config = base.to_config()
    config["warehouse"] = f"file://{home / 'secrets' / 'planes' / base.name / 'warehouse'}"
    config["secrets"] = secrets.model_dump()
    return DataPlane.from_config(config)


def _us_partner_asset(ref: SecretRef) -> dg.AssetsDefinition:
    @dg.asset(
        key=["us_partner", "credential_check"],
        group_name="us_claims",
        owners=["team:claims"],
        description="Checks that the US cloud plane can reach the claims partner API credential.",
        **pinned("us-cloud", "internal", kinds={"python"}),
    )
    def credential_check(context: dg.AssetExecutionContext, us_cloud: DataPlane) -> dg.MaterializeResult:
        return us_cloud.run(
            context,
            module="examples.clinical_ai.work.us_partner_credential",
            extras={"asset": "us_partner/credential_check", "api_token": ref.model_dump()},
        ).get_materialize_result()

    return credential_check


def run_demo(home: Path, *, patients: int = 300, database: ClinicalDatabase | None = None) -> dict[str, Any]:
    """Run the secrets step in ``home``; return the ``secrets`` section of ``summary.json``.

    Give ``database`` when the caller's clinical database is running (it is then left running);
    otherwise the step starts the one in ``home/postgres`` and stops it at the end. The CDC of this step
    uses its own slot (``meridian_eu_vault``) and warehouse (``home/secrets/planes``), so the main demo's
    tables and slot are untouched.

    Example:
        >>> run_demo(Path(".demo"))["secrets"]["backends"]  # doctest: +SKIP
        ['vault', 'aws']
    """
    home = home.resolve()
    work_dir = home / "secrets"
    work_dir.mkdir(parents=True, exist_ok=True)
    password = os.environ.get(PASSWORD_ENV) or token_source.token_urlsafe(24)
    if not os.environ.get(AUDIT_URL_ENV) and not os.environ.get("DAGSTER_HOME"):
        os.environ[AUDIT_URL_ENV] = f"sqlite:///{work_dir / 'hybrid_audit.db'}"
    audit_url = os.environ.get(AUDIT_URL_ENV) or None

    bao = start_openbao_dev(work_dir / "openbao.log")
    moto = None
    db = database
    try:
        moto = start_moto_server(enforce_iam=True, log_file=work_dir / "moto.log")
        if db is None:
            db = start_clinical_database(home, patients=patients)
        access = load_access(yaml_file=str(ACCESS_YAML))

        # OpenBao: the access tiers, the CDC password, and the EU plane's AppRole (its own identity)
        root = bao.root_client()
        apply_vault(root, access, kubernetes=False)
        eu_role = access.role("eu-onprem", "engineer")
        password_path = f"{eu_role.plane.secrets_path(Classification.RESTRICTED)}/clinical-db"
        root.secrets.kv.v2.create_or_update_secret(
            path=password_path, secret={"username": CDC_ROLE, "password": password}, mount_point="secret"
        )
        os.environ[EU_ROLE_ID_ENV] = root.auth.approle.read_role_id(eu_role.name)["data"]["role_id"]
        os.environ[EU_SECRET_ID_ENV] = root.auth.approle.generate_secret_id(eu_role.name)["data"]["secret_id"]

        # PostgreSQL: a CDC role that must give its password; the DBA creates the publication
        os.environ[CDC_DSN_ENV] = add_password_role(db.server, DATABASE, CDC_ROLE, password)
        _ensure_publication(db.server.dsn_for(DATABASE))

        # moto: the US plane's partner token, readable with the US cloud engineer tier's IAM keys only
        us_role = access.role("us-cloud", "engineer")
        token_path = f"{us_role.plane.secrets_path(Classification.CONFIDENTIAL)}/claims-partner-api"
        admin = moto.client("secretsmanager")
        if not _exists(admin, token_path):
            admin.create_secret(
                Name=token_path, SecretString=json.dumps({"token": token_source.token_hex(16)})
            )
        keys = moto.user_with_policy(f"{us_role.name}-{token_source.token_hex(3)}", iam_policy(us_role))
        os.environ[US_KEY_ID_ENV], os.environ[US_SECRET_KEY_ENV] = keys.access_key_id, keys.secret_access_key

        eu = _plane(
            EU_ONPREM,
            home,
            SecretsConfig(
                backend="vault",
                address=bao.address,
                auth_method="approle",
                role_id_env=EU_ROLE_ID_ENV,
                secret_id_env=EU_SECRET_ID_ENV,
            ),
        )
        us = _plane(
            US_CLOUD,
            home,
            SecretsConfig(
                backend="aws",
                address=moto.endpoint,
                region="us-east-1",
                access_key_id_env=US_KEY_ID_ENV,
                secret_access_key_env=US_SECRET_KEY_ENV,
            ),
        )
        cdc = cdc_table_assets(
            name="eu_clinical_cdc_vault",
            source=PostgresCdcSource(
                dsn_env=CDC_DSN_ENV,
                password_secret=SecretRef(backend="vault", path=password_path, key="password"),
                slot_name=CDC_SLOT,
                publication_name=CDC_SLOT,
            ),
            plane=eu,
            source_jurisdiction="EU",
            tables=[CdcTable(name, "restricted") for name in CLINICAL_TABLES],
            namespace="clinical",
            # its own asset keys: the example's clinical tables keep their lineage and freshness
            key_prefix=["secrets_demo", "clinical"],
            group_name="secrets_demo",
            owners=["team:clinical-data"],
        )
        token_ref = SecretRef(backend="aws", path=token_path, key="token")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
            result = dg.materialize(
                [cdc, _us_partner_asset(token_ref)],
                resources={"eu_onprem": eu, "us_cloud": us, "residency_policy": POLICY},
                instance=instance or dg.DagsterInstance.ephemeral(),
                raise_on_error=False,
                tags={"hybrid/demo": "secrets"},
            )
        if not result.success:
            raise RuntimeError(
                f"secrets demo run {result.run_id} failed: see the plane logs under {work_dir}"
            )
        log = AuditLog(audit_url)
        reads = [
            r for r in log.records(READ_KIND) if r.run_id == result.run_id and r.details["outcome"] == "ok"
        ]
        log.close()
        return {"secrets": {"backends": ["vault", "aws"], "reads_audited": len(reads)}}
    finally:
        if db is not None and database is None:
            db.server.stop()
        if moto is not None:
            moto.stop()
        bao.stop()


def _ensure_publication(admin_dsn: str) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (CDC_SLOT,))
        if cur.fetchone() is None:
            names = sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in CLINICAL_TABLES)
            cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(CDC_SLOT), names))
    conn.close()


def _exists(client: Any, name: str) -> bool:
    try:
        client.describe_secret(SecretId=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.clinical_ai.demo_secrets")
    parser.add_argument("--home", default=".demo", help="Folder for the database, servers' logs and planes.")
    parser.add_argument("--patients", type=int, default=300, help="Patients in a new database.")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    print(json.dumps(run_demo(Path(args.home), patients=args.patients), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
