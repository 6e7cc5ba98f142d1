"""A tamper-evident, append-only audit log: hash-chained records in a SQL store through SQLAlchemy.

Correctness rules:

- Records are never updated or deleted by this module. Each record holds ``seq`` (1, 2, 3, ... without
  gaps), ``time`` (ISO-8601 UTC), ``kind``, ``actor``, ``plane``, ``run_id``, ``details`` (plain JSON),
  ``prev_hash`` (the previous record's hash, :data:`GENESIS_HASH` for the first) and ``hash`` =
  SHA-256 of the canonical JSON of all other fields (:mod:`hybrid_dagster.audit.canonical`).
- Appends are serialized, so concurrent writers (threads or processes) still give one chain: SQLite
  takes its write lock first (``BEGIN IMMEDIATE``), PostgreSQL a transaction-scoped advisory lock; the
  head is read and the new record inserted inside that transaction, and ``seq`` is the primary key, so
  a writer that somehow raced would fail instead of forking the chain.
- :meth:`AuditLog.verify` recomputes every hash and link: an edited, deleted, inserted or reordered
  record breaks the chain at the first record affected. Truncating the tail leaves a valid chain, so
  verify also compares against a checkpoint (``count``, ``head_hash``) kept elsewhere - the Dagster
  event log (:mod:`hybrid_dagster.audit.checkpoint`).
- Never store secret values or row values: details describe what happened (a secret's path, a table,
  row counts, content hashes). :meth:`AuditLog.append` refuses bytes, non-JSON objects, over-long strings
  and secret-like keys.

Example:
    .. code-block:: python

        from hybrid_dagster.audit import AuditLog

        log = AuditLog("sqlite:////var/dagster/hybrid_audit.db")  # or postgresql://... in production
        log.append("residency.refused", actor="dagster", plane="us-cloud", details={"asset": "cohort"})
        assert log.verify().ok
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hybrid_dagster.audit.canonical import GENESIS_HASH, JSON, canonical_json, check_plain_json, record_hash
from hybrid_dagster.audit.errors import AuditConfigError, AuditInputError

AUDIT_URL_ENV = "HYBRID_DAGSTER_AUDIT_URL"
"""Environment variable naming the audit store when no URL is given."""

DEFAULT_FILE_NAME = "hybrid_audit.db"
"""File name of the default SQLite store inside ``DAGSTER_HOME``."""

_ADVISORY_LOCK_KEY = 0x48594244  # "HYBD": one lock per database for all audit appends
_KIND_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.-")

_metadata = sa.MetaData()
records_table = sa.Table(
    "hybrid_audit_records",
    _metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
    ),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("plane", sa.String(200), nullable=True),
    sa.Column("run_id", sa.String(100), nullable=True),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


@dataclass(frozen=True)
class AuditRecord:
    """One record of the chain.

    Example:
        >>> record = log.append("transfer", actor="plane:us-cloud", details={"rows": 10})
        >>> record.seq, record.hash == record.computed_hash()
        (1, True)
    """

    seq: int
    time: str
    kind: str
    actor: str
    plane: str | None
    run_id: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field except ``hash``: what the hash covers."""
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "actor": self.actor,
            "plane": self.plane,
            "run_id": self.run_id,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
        }

    def computed_hash(self) -> str:
        return record_hash(self.body())

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :meth:`AuditLog.verify`.

    Example:
        >>> result = log.verify()
        >>> result.ok, result.count, result.first_broken_seq
        (True, 42, None)
    """

    ok: bool
    count: int
    head_hash: str
    first_broken_seq: int | None
    reason: str

    def describe(self) -> str:
        """One line for people: ``audit ok: ...`` or ``audit broken at record N: ...``."""
        if self.ok:
            return f"audit ok: {self.count} records, head {self.head_hash}"
        return f"audit broken at record {self.first_broken_seq}: {self.reason}"


def default_url() -> str:
    """``HYBRID_DAGSTER_AUDIT_URL``, else a SQLite file inside ``DAGSTER_HOME``.

    Example:
        >>> os.environ["DAGSTER_HOME"] = "/var/dagster"
        >>> default_url()
        'sqlite:////var/dagster/hybrid_audit.db'
    """
    if os.environ.get(AUDIT_URL_ENV):
        return os.environ[AUDIT_URL_ENV]
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise AuditConfigError(
            f"no audit store: give a URL, set {AUDIT_URL_ENV}, or set DAGSTER_HOME (the log then lives in "
            f"$DAGSTER_HOME/{DEFAULT_FILE_NAME})"
        )
    return f"sqlite:///{Path(home).expanduser().resolve() / DEFAULT_FILE_NAME}"


def safe_url(url: str) -> str:
    """``url`` with any password masked, fit for logs, metadata and reports.

    Example:
        >>> safe_url("postgresql://audit:s3cret@db:5432/audit")
        'postgresql://audit:***@db:5432/audit'
    """
    return sa.make_url(url).render_as_string(hide_password=True)


class AuditLog:
    """Append-only, hash-chained audit records in SQLite (default) or PostgreSQL.

    ``url`` is a SQLAlchemy URL (``sqlite:///path``, ``postgresql://user@host/db``); without one the log
    uses :func:`default_url`. Never put secret values or row values into a record: details say what
    happened (a secret's path, a table, counts, hashes), and :meth:`append` refuses bytes, objects,
    over-long strings and secret-like keys.

    Example:
        .. code-block:: python

            log = AuditLog()  # $DAGSTER_HOME/hybrid_audit.db
            log.append("secret.read", actor="plane:eu-onprem", plane="eu-onprem",
                       details={"path": "kv/clinical/db", "backend": "vault"})
            result = log.verify()
            print(result.describe())
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        parsed = sa.make_url(self.url)
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 defaults to psycopg 3; psycopg2 is what this package depends on.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        backend = parsed.get_backend_name()
        self.dialect = backend
        if backend == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(parsed, connect_args={"timeout": 60})
            sa.event.listen(self._engine, "connect", _sqlite_connect)
            sa.event.listen(self._engine, "begin", _sqlite_begin_immediate)
            # Reads run in autocommit: one SELECT is one consistent snapshot and takes no write lock.
            self._read_engine = self._engine
            if database and database != ":memory:":
                self._read_engine = sa.create_engine(parsed, connect_args={"timeout": 60})
                sa.event.listen(self._read_engine, "connect", _sqlite_connect)
        else:
            self._engine = sa.create_engine(parsed, pool_pre_ping=True)
            self._read_engine = self._engine
        with self._write() as conn:
            _metadata.create_all(conn)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def safe_url(self) -> str:
        """The URL with any password masked."""
        return safe_url(self.url)

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()
        self._read_engine.dispose()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> Any:
        """A transaction holding the append lock (SQLite write lock / PostgreSQL advisory lock)."""
        return _LockedTransaction(self._engine, self.dialect)

    def append(
        self,
        kind: str,
        *,
        actor: str,
        plane: str | None = None,
        run_id: str | None = None,
        details: Mapping[str, JSON] | None = None,
    ) -> AuditRecord:
        """Append one record at the head of the chain and return it.

        ``kind`` is a lower-case dotted name (``transfer``, ``residency.refused``, ``secret.read``,
        ``cdc.commit``, ``teardown``, ``dr.drill``). Raises :class:`AuditInputError` for anything that is not
        plain JSON metadata - the message names the key, never the value.

        Example:
            >>> log.append("residency.allowed", actor="dagster", plane="eu-cloud", run_id=run_id,
            ...            details={"asset": "cohort", "classification": "restricted"}).seq
            7
        """
        if not kind or set(kind) - _KIND_CHARS or not kind[0].isalpha():
            raise AuditInputError(f"audit kind {kind!r} must be a lower-case dotted name like 'secret.read'")
        for name, text, required in (
            ("actor", actor, True),
            ("plane", plane, False),
            ("run_id", run_id, False),
        ):
            if (text is None and required) or (text is not None and (not isinstance(text, str) or not text)):
                raise AuditInputError(f"audit {name} must be a non-empty string (kind {kind!r})")
        try:
            plain = check_plain_json(dict(details or {}), "details")
        except (ValueError, TypeError) as refused:
            raise AuditInputError(f"audit record of kind {kind!r} refused: {refused}") from None
        time = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        with self._write() as conn:
            head = conn.execute(
                sa.select(records_table.c.seq, records_table.c.hash)
                .order_by(records_table.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
            body = {
                "seq": seq,
                "time": time,
                "kind": kind,
                "actor": actor,
                "plane": plane,
                "run_id": run_id,
                "details": plain,
                "prev_hash": prev_hash,
            }
            record = AuditRecord(**body, hash=record_hash(body))
            conn.execute(records_table.insert().values(**_row(record)))
        return record

    def head(self) -> tuple[int, str]:
        """``(count, head_hash)``: the number of records and the last record's hash.

        Example:
            >>> AuditLog("sqlite:///:memory:").head()
            (0, '0000000000000000000000000000000000000000000000000000000000000000')
        """
        with self._read_engine.connect() as conn:
            row = conn.execute(
                sa.select(records_table.c.seq, records_table.c.hash)
                .order_by(records_table.c.seq.desc())
                .limit(1)
            ).first()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def records(self, kind: str | None = None) -> Iterator[AuditRecord]:
        """Records in chain order, optionally only one ``kind``.

        Example:
            >>> [r.details["rows"] for r in log.records(kind="transfer")]
            [120, 98]
        """
        query = sa.select(records_table).order_by(records_table.c.seq)
        if kind is not None:
            query = query.where(records_table.c.kind == kind)
        with self._read_engine.connect() as conn:
            for row in conn.execute(query.execution_options(yield_per=1000)):
                yield _record(row._mapping)

    def verify(self, checkpoint: tuple[int, str] | None = None) -> VerifyResult:
        """Check every hash and link; with ``checkpoint`` (count, head hash) also detect a cut tail.

        The chain is read in ``seq`` order: each record's ``seq`` must be the previous one plus one, its
        ``prev_hash`` the previous record's hash and its ``hash`` the hash of its own body. The first
        record that fails is named. A checkpoint taken earlier must still be inside the chain.

        Example:
            >>> log.verify().describe()
            'audit ok: 42 records, head 9f2c...'
        """
        count, prev = 0, GENESIS_HASH
        hashes_at: dict[int, str] = {}
        with self._read_engine.connect() as conn:
            rows = conn.execute(
                sa.select(records_table).order_by(records_table.c.seq).execution_options(yield_per=1000)
            )
            for row in rows:
                try:
                    record = _record(row._mapping)
                except ValueError:
                    return VerifyResult(False, count, prev, int(row.seq), "details are not valid JSON")
                expected_seq = count + 1
                if record.seq != expected_seq:
                    reason = (
                        f"sequence jumps from {count} to {record.seq} (record {expected_seq} is missing)"
                        if record.seq > expected_seq
                        else f"sequence {record.seq} repeats"
                    )
                    return VerifyResult(False, count, prev, expected_seq, reason)
                if record.prev_hash != prev:
                    return VerifyResult(
                        False, count, prev, record.seq, "prev_hash does not match the previous record's hash"
                    )
                if record.computed_hash() != record.hash:
                    return VerifyResult(
                        False, count, prev, record.seq, "hash does not match the record's content"
                    )
                count, prev = record.seq, record.hash
                if checkpoint is not None and record.seq == checkpoint[0]:
                    hashes_at[record.seq] = record.hash
        if checkpoint is not None:
            cp_count, cp_hash = checkpoint
            if cp_count > count:
                return VerifyResult(
                    False,
                    count,
                    prev,
                    count + 1,
                    f"the chain ends at record {count} but a checkpoint recorded {cp_count} records with "
                    f"head {cp_hash}: the tail was truncated",
                )
            if cp_count > 0 and hashes_at.get(cp_count) != cp_hash:
                return VerifyResult(
                    False,
                    count,
                    prev,
                    cp_count,
                    f"record {cp_count} does not have the hash the checkpoint recorded ({cp_hash})",
                )
        return VerifyResult(True, count, prev, None, "intact")


class _LockedTransaction:
    def __init__(self, engine: Engine, dialect: str) -> None:
        self._engine = engine
        self._dialect = dialect
        self._cm: Any = None

    def __enter__(self) -> Connection:
        self._cm = self._engine.begin()
        conn: Connection = self._cm.__enter__()
        if self._dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
        return conn

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's deferred BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _row(record: AuditRecord) -> dict[str, Any]:
    return {**record.body(), "details": canonical_json(record.details).decode("utf-8"), "hash": record.hash}


def _record(row: Mapping[Any, Any]) -> AuditRecord:
    details = json.loads(row["details"])
    if not isinstance(details, dict):
        raise ValueError("details must be a JSON object")
    return AuditRecord(
        seq=int(row["seq"]),
        time=str(row["time"]),
        kind=str(row["kind"]),
        actor=str(row["actor"]),
        plane=row["plane"],
        run_id=row["run_id"],
        details=details,
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
    )
