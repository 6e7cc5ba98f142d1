"""The secrets demo step end to end, with a known password: the CDC logs in with it (resolved inside the
plane from OpenBao), the US plane reads its token from moto, and the known value appears in no file the
demo leaves behind - Dagster's event log storage and compute logs, the planes' logs, the audit log and
the OpenLineage events of its runs - nor in its output."""

from tests.examples.conftest import DEMO_DB_PASSWORD, Demo


def test_demo_secrets_resolves_inside_the_planes_and_leaks_nothing(demo: Demo) -> None:
    summary = demo.summary["secrets"]
    assert summary["backends"] == ["vault", "aws"]
    # audited reads: the CDC password (vault, the CDC step fails without it), the partner token (aws)
    assert summary["reads_audited"] >= 2
    assert DEMO_DB_PASSWORD not in demo.stdout + demo.stderr
    assert (demo.home / "dagster" / "hybrid_audit.db").is_file()  # the default audit log under DAGSTER_HOME
    assert (demo.home / "lineage.jsonl").stat().st_size > 0
    secret = DEMO_DB_PASSWORD.encode()
    leaked = [p for p in demo.home.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []
