"""Trigger-based change capture for databases without log access (SQLite; PostgreSQL without a slot).

``setup()`` creates a change log table and AFTER INSERT/UPDATE/DELETE row triggers on every captured
table; each change writes one log row ``(seq, table_name, op, old_key, row, tx_id, tx_ts)`` with the row
as JSON (the new row for inserts/updates, the old row for deletes; ``old_key`` only when an update
changed the primary key).

Ordering. ``Position(commit, seq)`` where ``seq`` is the log's auto-increment key.

* SQLite has one writer at a time, so ``seq`` order is commit order and ``commit = seq``.
* PostgreSQL allocates ``seq`` at insert time, not at commit: with interleaved transactions a reader
  would see seq 7 committed before seq 5 and, acknowledging 7, lose 5. So a deferred constraint trigger
  stamps each transaction's rows at commit time with ``commit_seq`` taken under a transaction-level
  advisory lock: commits of captured changes are serialized for that instant, and ``commit_seq`` order
  is the order in which transactions become visible. ``commit = commit_seq``. (Do not run
  ``SET CONSTRAINTS ALL IMMEDIATE`` in transactions that write captured tables.)

Acknowledgement. The acknowledged position is one row per consumer in ``_hybrid_cdc_offsets`` (not by
deleting log rows): the ack is a single upsert after the Iceberg commit, a crash before it means the
same rows are read again (the apply skips what it already holds), several consumers can read one log,
and the log stays available for replay. :meth:`SqlTriggerChangeSource.purge` deletes rows every consumer has
acknowledged.

Schema changes. PostgreSQL triggers serialize the whole row (``to_jsonb``), SQLite triggers list the
columns when created: after ``ALTER TABLE`` on SQLite, call ``setup()`` again (it recreates the triggers).
Values are typed with the table's columns reflected at read time. The SQLite triggers record the column
list they were built with; when it differs from the table's columns, ``read`` raises
:class:`TriggerColumnsDrift` instead of returning rows whose missing columns would land as NULL (a value
written to a column the trigger does not list is lost: neither NULL nor the previous value is right).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_READ,
    TX_ID_COL,
    UNCHANGED_COL,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    change_schema,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, ConsistentCopy, SourceTable
from hybrid_dagster.cdc.sources.sql_triggers.convert import (
    Column,
    arrow_converter,
    convert_value,
    decode_object,
    from_micros,
)
from hybrid_dagster.errors import TriggerColumnsDrift as TriggerColumnsDrift

_COLUMNS_MARK = "/* hybrid-cdc columns: "


@dataclass(frozen=True)
class _TableInfo:
    name: str
    columns: list[Column]
    key_columns: list[str]

    @property
    def data_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow) for c in self.columns])


class SqlTriggerChangeSource(ChangeSource):
    """Change capture through triggers and a log table, via SQLAlchemy 2.

    ``tables`` are table names (``"schema.table"`` on PostgreSQL) or :class:`SourceTable`; keys default to
    the reflected primary key. ``consumer`` names this reader's acknowledged position.

    Example:
        >>> src = SqlTriggerChangeSource("sqlite:///app.db", ["patients"])  # doctest: +SKIP
        >>> src.setup()  # doctest: +SKIP
        Position(commit=0, event=0)
        >>> batch = src.read(10_000); ...; src.ack(batch.ack_position)  # doctest: +SKIP
    """

    copies_tables = True

    def __init__(
        self,
        engine: Engine | str,
        tables: Sequence[SourceTable | str],
        *,
        consumer: str = "default",
        log_table: str = "_hybrid_cdc_log",
        offsets_table: str = "_hybrid_cdc_offsets",
    ):
        self.engine = sa.create_engine(engine) if isinstance(engine, str) else engine
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"SqlTriggerChangeSource supports sqlite and postgresql, not {self.dialect}")
        self.kind = "sqlite" if self.dialect == "sqlite" else "postgres"
        self.tables = [t if isinstance(t, SourceTable) else SourceTable(t) for t in tables]
        self.consumer = consumer
        for name in (log_table, offsets_table):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"log/offsets table name must be a plain identifier: {name!r}")
        self.log_table, self.offsets_table = log_table, offsets_table
        self._quote = self.engine.dialect.identifier_preparer.quote

    @property
    def source_id(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{url}#{self.log_table}:{self.consumer}"

    # -- setup ----------------------------------------------------------------------------------------

    def setup(self) -> Position | None:
        """Create the log, the offsets table and the triggers (recreated each time: idempotent).

        Returns ``Position(max commit, max seq)`` of the log when the log or any table's triggers were
        new (the hand-off point for a snapshot), else None.
        """
        with self.engine.begin() as conn:
            created = not sa.inspect(conn).has_table(self.log_table)
            for statement in self._log_ddl():
                conn.exec_driver_sql(statement)
            for table in self.tables:
                schema, name = _split(table.name, self.dialect)
                columns = sa.inspect(conn).get_columns(name, schema=schema)
                if not columns:
                    raise ValueError(f"table {table.name!r} does not exist or has no columns")
                keys = self._key_columns(conn, table)
                created |= not self._has_triggers(conn, table)
                for statement in self._trigger_ddl(table, [c["name"] for c in columns], columns, keys):
                    conn.exec_driver_sql(statement)
            if not created:
                return None
            commit, seq = conn.execute(
                sa.text(f"SELECT MAX({self._commit_expr()}), MAX(seq) FROM {self.log_table}")
            ).one()
            return Position(int(commit or 0), int(seq or 0))

    def _log_ddl(self) -> list[str]:
        log, offsets = self.log_table, self.offsets_table
        offsets_ddl = (
            f"CREATE TABLE IF NOT EXISTS {offsets} (consumer VARCHAR(200) PRIMARY KEY, "
            "commit_pos BIGINT NOT NULL, event_pos BIGINT NOT NULL)"
        )
        if self.dialect == "sqlite":
            return [
                f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "table_name TEXT NOT NULL, op TEXT NOT NULL, old_key TEXT, row TEXT, tx_id INTEGER, "
                "tx_ts INTEGER)",
                offsets_ddl,
            ]
        return [
            f"CREATE SEQUENCE IF NOT EXISTS {log}_commit_seq",
            f"CREATE TABLE IF NOT EXISTS {log} (seq BIGSERIAL PRIMARY KEY, commit_seq BIGINT, "
            "table_name TEXT NOT NULL, op CHAR(1) NOT NULL, old_key JSONB, row JSONB, "
            "tx_id BIGINT NOT NULL DEFAULT txid_current(), tx_ts TIMESTAMPTZ NOT NULL DEFAULT now())",
            f"CREATE INDEX IF NOT EXISTS {log}_commit_idx ON {log} (commit_seq, seq)",
            f"CREATE INDEX IF NOT EXISTS {log}_unstamped_idx ON {log} (tx_id) WHERE commit_seq IS NULL",
            offsets_ddl,
            _PG_CAPTURE.replace("{log}", log),
            _PG_STAMP.replace("{log}", log),
        ]

    def _has_triggers(self, conn: Connection, table: SourceTable) -> bool:
        schema, name = _split(table.name, self.dialect)
        if self.dialect == "sqlite":
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = :n"
            return bool(conn.execute(sa.text(sql), {"n": self._sqlite_trigger(name, "ins")}).scalar())
        sql = (
            "SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE t.tgname = :t AND c.relname = :r AND n.nspname = COALESCE(:s, current_schema())"
        )
        params = {"t": f"{self.log_table}_capture", "r": name, "s": schema}
        return bool(conn.execute(sa.text(sql), params).scalar())

    def _sqlite_trigger(self, table: str, op: str) -> str:
        return f"{self.log_table}_{table}_{op}"

    def _trigger_ddl(
        self, table: SourceTable, names: list[str], columns: Sequence[Any], keys: list[str]
    ) -> list[str]:
        schema, name = _split(table.name, self.dialect)
        target = self._quote(name) if schema is None else f"{self._quote(schema)}.{self._quote(name)}"
        if self.dialect == "postgresql":
            args = ", ".join(_literal(a) for a in [table.name, *keys])
            capture, stamp = f"{self.log_table}_capture", f"{self.log_table}_stamp"
            return [
                f"DROP TRIGGER IF EXISTS {capture} ON {target}",
                f"CREATE TRIGGER {capture} AFTER INSERT OR UPDATE OR DELETE ON {target} "
                f"FOR EACH ROW EXECUTE FUNCTION {capture}({args})",
                f"DROP TRIGGER IF EXISTS {stamp} ON {target}",
                f"CREATE CONSTRAINT TRIGGER {stamp} AFTER INSERT OR UPDATE OR DELETE ON {target} "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {stamp}()",
            ]
        binary = {c["name"] for c in columns if isinstance(c["type"], sa.LargeBinary | sa.types._Binary)}

        def value(alias: str, col: str) -> str:
            ref = f"{alias}.{self._quote(col)}"
            if col in binary:
                return f"CASE WHEN {ref} IS NULL THEN NULL ELSE hex({ref}) END"
            return f"CASE WHEN typeof({ref}) = 'blob' THEN hex({ref}) ELSE {ref} END"

        # The column list, for drift detection at read time (JSON with '/' escaped, so no '*/' inside).
        mark = _COLUMNS_MARK + json.dumps(names).replace("/", "\\/") + " */"

        def as_json(alias: str, cols: list[str]) -> str:
            # json_object takes at most 127 arguments: merge chunks of 50 columns.
            chunks = [cols[i : i + 50] for i in range(0, len(cols), 50)] or [[]]
            parts = [
                "json_object(" + ", ".join(f"{_literal(c)}, {value(alias, c)}" for c in chunk) + ")"
                for chunk in chunks
            ]
            out = parts[0]
            for part in parts[1:]:
                out = f"json_patch({out}, {part})"
            return out

        changed = " OR ".join(f"OLD.{self._quote(k)} IS NOT NEW.{self._quote(k)}" for k in keys)
        old_key = f"CASE WHEN {changed} THEN {as_json('OLD', keys)} ELSE NULL END" if keys else "NULL"
        now_us = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)"
        insert = (
            f"INSERT INTO {self.log_table} (table_name, op, old_key, row, tx_ts) "
            f"VALUES ({_literal(table.name)}, "
        )
        bodies = {
            "ins": ("INSERT", f"{insert}'c', NULL, {as_json('NEW', names)}, {now_us});"),
            "upd": ("UPDATE", f"{insert}'u', {old_key}, {as_json('NEW', names)}, {now_us});"),
            "del": ("DELETE", f"{insert}'d', NULL, {as_json('OLD', names)}, {now_us});"),
        }
        ddl = []
        for suffix, (event, body) in bodies.items():
            trigger = self._quote(self._sqlite_trigger(name, suffix))
            ddl.append(f"DROP TRIGGER IF EXISTS {trigger}")
            ddl.append(f"CREATE TRIGGER {trigger} AFTER {event} ON {target} BEGIN {mark} {body} END")
        return ddl

    def _key_columns(self, conn: Connection, table: SourceTable) -> list[str]:
        if table.key_columns:
            return list(table.key_columns)
        schema, name = _split(table.name, self.dialect)
        return list(sa.inspect(conn).get_pk_constraint(name, schema=schema).get("constrained_columns") or [])

    def _commit_expr(self) -> str:
        return "seq" if self.dialect == "sqlite" else "commit_seq"

    # -- reading ----------------------------------------------------------------------------------------

    def acknowledged(self) -> Position:
        """The acknowledged position of this consumer (``Position(0, 0)`` if none)."""
        with self.engine.connect() as conn:
            return self._acknowledged(conn)

    def _acknowledged(self, conn: Connection) -> Position:
        row = conn.execute(
            sa.text(f"SELECT commit_pos, event_pos FROM {self.offsets_table} WHERE consumer = :c"),
            {"c": self.consumer},
        ).first()
        return Position(int(row[0]), int(row[1])) if row else Position(0, 0)

    def read(self, max_events: int) -> ChangeBatch:
        commit = self._commit_expr()
        as_text = "" if self.dialect == "sqlite" else "::text"
        ts = "tx_ts" if self.dialect == "sqlite" else "(extract(epoch FROM tx_ts) * 1000000)::bigint"
        sql = sa.text(
            f"SELECT {commit}, seq, table_name, op, old_key{as_text}, row{as_text}, tx_id, {ts} "
            f"FROM {self.log_table} WHERE {commit} > :c OR ({commit} = :c AND seq > :s) "
            f"ORDER BY {commit}, seq LIMIT :n"
        )
        batch = ChangeBatch(self.source_id)
        with self.engine.connect() as conn:
            acked = self._acknowledged(conn)
            rows = conn.execute(sql, {"c": acked.commit, "s": acked.event, "n": max(max_events, 1)}).all()
            infos = {t.name: self._table_info(conn, t) for t in self.tables}
            if self.dialect == "sqlite":
                for table_info in infos.values():
                    self._check_trigger_columns(conn, table_info)
            last = conn.execute(sa.text(f"SELECT MAX({commit}), MAX(seq) FROM {self.log_table}")).one()
        by_table: dict[str, list[dict[str, Any]]] = {}
        for commit_pos, seq, table, op, old_key, row, tx_id, tx_ts in rows:
            position = Position(int(commit_pos), int(seq))
            batch.ack_position = position
            info = infos.get(table)
            raw = json.dumps({"table": table, "op": op, "old_key": old_key, "row": row})
            if info is None:
                continue  # a table this consumer does not capture
            try:
                change = self._change(info, position, op, old_key, row, tx_id, tx_ts)
            except (ValueError, TypeError, ArithmeticError) as exc:
                reason = f"{exc} (seq {seq})"
                batch.dead_letters.append(DeadLetter(self.source_id, raw, reason, table, f"seq {seq}"))
                continue
            by_table.setdefault(table, []).append(change)
        for table, changes in by_table.items():
            info = infos[table]
            schema = change_schema(info.data_schema, info.key_columns)
            batch.tables[table] = TableChanges(
                table, info.key_columns, info.data_schema, pa.Table.from_pylist(changes, schema=schema)
            )
        if last[0] is not None:
            batch.source_position = Position(int(last[0]), int(last[1]))
        return batch

    def trigger_columns(self, conn: Connection, table: str) -> list[str] | None:
        """The columns the SQLite capture triggers of ``table`` list (None: no triggers, or unmarked)."""
        _, name = _split(table, self.dialect)
        sql = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :n"),
            {"n": self._sqlite_trigger(name, "ins")},
        ).scalar()
        if not isinstance(sql, str) or (start := sql.find(_COLUMNS_MARK)) < 0:
            return None
        end = sql.find(" */", start)
        columns = json.loads(sql[start + len(_COLUMNS_MARK) : end])
        return [str(c) for c in columns]

    def _check_trigger_columns(self, conn: Connection, info: _TableInfo) -> None:
        built = self.trigger_columns(conn, info.name)
        if built is None:
            return
        now = [c.name for c in info.columns]
        if built == now:
            return
        added = [c for c in now if c not in built]
        gone = [c for c in built if c not in now]
        change = ", ".join(
            part
            for part in (
                f"columns {added} are not captured" if added else "",
                f"columns {gone} no longer exist" if gone else "",
                "" if added or gone else "the column order changed",
            )
            if part
        )
        raise TriggerColumnsDrift(
            f"{self.source_id}: table {info.name!r} changed after its capture triggers were built "
            f"({change}). "
            "Changes logged since the ALTER TABLE lack those columns and would land in Iceberg as NULL. "
            "Run setup() to recreate the triggers; rows changed in between keep NULL in the new columns "
            "until they change again (re-copy the table, by dropping its Iceberg table, if that matters)."
        )

    def close(self) -> None:
        """Release the engine's pooled connections."""
        self.engine.dispose()

    def _table_info(self, conn: Connection, table: SourceTable) -> _TableInfo:
        schema, name = _split(table.name, self.dialect)
        columns = [
            Column(c["name"], *arrow_converter(c["type"]))
            for c in sa.inspect(conn).get_columns(name, schema=schema)
        ]
        return _TableInfo(table.name, columns, self._key_columns(conn, table))

    def _change(
        self,
        info: _TableInfo,
        position: Position,
        op: str,
        old_key: str | None,
        row: str | None,
        tx_id: int | None,
        tx_ts: int | None,
    ) -> dict[str, Any]:
        if op not in ("c", "u", "d"):
            raise ValueError(f"unknown op {op!r} in the change log")
        values = decode_object(row, "row")
        out: dict[str, Any] = {
            OP_COL: op,
            COMMIT_POS_COL: position.commit,
            EVENT_POS_COL: position.event,
            TX_ID_COL: tx_id,
            COMMIT_TS_COL: from_micros(tx_ts),
            OLD_KEY_COL: None,
            UNCHANGED_COL: None,
        }
        by_name = {c.name: c for c in info.columns}
        for column in info.columns:
            out[column.name] = convert_value(column, values.get(column.name))
        if old_key is not None:
            old = decode_object(old_key, "old_key")
            out[OLD_KEY_COL] = {k: convert_value(by_name[k], old.get(k)) for k in info.key_columns}
        return out

    def ack(self, position: Position) -> None:
        """Store ``position`` for this consumer (never moves it backwards)."""
        sql = sa.text(
            f"INSERT INTO {self.offsets_table} (consumer, commit_pos, event_pos) VALUES (:c, :p, :e) "
            "ON CONFLICT (consumer) DO UPDATE SET commit_pos = excluded.commit_pos, "
            "event_pos = excluded.event_pos WHERE excluded.commit_pos > "
            f"{self.offsets_table}.commit_pos OR (excluded.commit_pos = {self.offsets_table}.commit_pos "
            f"AND excluded.event_pos > {self.offsets_table}.event_pos)"
        )
        with self.engine.begin() as conn:
            conn.execute(sql, {"c": self.consumer, "p": position.commit, "e": position.event})

    def purge(self) -> int:
        """Delete log rows that every consumer has acknowledged; returns how many."""
        commit = self._commit_expr()
        sql = sa.text(
            f"DELETE FROM {self.log_table} WHERE EXISTS (SELECT 1 FROM {self.offsets_table}) AND NOT EXISTS "
            f"(SELECT 1 FROM {self.offsets_table} o WHERE {commit} > o.commit_pos "
            f"OR ({commit} = o.commit_pos AND seq > o.event_pos))"
        )
        with self.engine.begin() as conn:
            return int(conn.execute(sql).rowcount or 0)

    def open_copy(self) -> ConsistentCopy:
        """The captured tables' rows and the log's last position, read in one transaction (exact)."""
        return _TriggerCopy(self)

    def _copy_rows(
        self, conn: Connection, table: SourceTable, position: Position, chunk_rows: int
    ) -> Iterator[TableChanges]:
        """The rows of ``table`` visible to ``conn`` as ``r`` changes at ``position``, in chunks."""
        spec = next((t for t in self.tables if t.name == table.name), table)
        schema, name = _split(spec.name, self.dialect)
        info = self._table_info(conn, spec)
        names = [c.name for c in info.columns]
        target = sa.table(name, *[sa.column(n) for n in names], schema=schema)
        result = conn.execution_options(stream_results=True).execute(sa.select(target))
        change_cols = change_schema(info.data_schema, info.key_columns)
        yielded = False
        while (chunk := result.fetchmany(max(chunk_rows, 1))) or not yielded:
            yielded = True
            rows = []
            for values in chunk:
                row: dict[str, Any] = {
                    OP_COL: OP_READ,
                    COMMIT_POS_COL: position.commit,
                    EVENT_POS_COL: position.event,
                }
                for column, value in zip(info.columns, values, strict=True):
                    row[column.name] = convert_value(column, value)
                rows.append(row)
            yield TableChanges(
                spec.name,
                info.key_columns,
                info.data_schema,
                pa.Table.from_pylist(rows, schema=change_cols),
            )


class _TriggerCopy(ConsistentCopy):
    """One read transaction: the log's last position and the tables' rows come from the same snapshot.

    PostgreSQL: ``REPEATABLE READ``; ``commit_seq`` values become visible in order (they are taken under a
    lock held to commit), so every log row at or below the position is in the copy and none after it.
    SQLite: an explicit ``BEGIN``; the first read fixes the snapshot until the transaction ends.
    """

    def __init__(self, source: SqlTriggerChangeSource) -> None:
        self._source = source
        conn = source.engine.connect()
        try:
            if source.dialect == "sqlite":
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("BEGIN")
            else:
                conn.execution_options(isolation_level="REPEATABLE READ")
            commit, seq = conn.execute(
                sa.text(f"SELECT MAX({source._commit_expr()}), MAX(seq) FROM {source.log_table}")
            ).one()
        except BaseException:
            conn.close()
            raise
        self._conn: Connection | None = conn
        self.position = Position(int(commit or 0), int(seq or 0))

    def rows(self, table: SourceTable, chunk_rows: int) -> Iterator[TableChanges]:
        if self._conn is None:
            raise RuntimeError("the copy is closed")
        return self._source._copy_rows(self._conn, table, self.position, chunk_rows)

    def close(self) -> None:
        if self._conn is not None:
            if self._source.dialect == "sqlite":
                self._conn.exec_driver_sql("ROLLBACK")
            self._conn.close()
            self._conn = None


# -- helpers ----------------------------------------------------------------------------------------------


def _split(name: str, dialect: str) -> tuple[str | None, str]:
    if dialect == "postgresql" and "." in name:
        schema, _, table = name.partition(".")
        return schema, table
    return None, name


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_PG_CAPTURE = """
CREATE OR REPLACE FUNCTION {log}_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    old_key jsonb := NULL;
    key_changed boolean := false;
    k text;
BEGIN
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
    IF TG_OP = 'UPDATE' THEN
        old_key := '{}'::jsonb;
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            k := TG_ARGV[i];
            old_key := old_key || jsonb_build_object(k, old_row -> k);
            IF (old_row -> k) IS DISTINCT FROM (new_row -> k) THEN key_changed := true; END IF;
        END LOOP;
        IF NOT key_changed THEN old_key := NULL; END IF;
    END IF;
    INSERT INTO {log} (table_name, op, old_key, row) VALUES (
        TG_ARGV[0],
        CASE TG_OP WHEN 'INSERT' THEN 'c' WHEN 'UPDATE' THEN 'u' ELSE 'd' END,
        old_key,
        COALESCE(new_row, old_row));
    RETURN NULL;
END $$
"""

_PG_STAMP = """
CREATE OR REPLACE FUNCTION {log}_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c bigint;
BEGIN
    -- Runs at commit (deferred): serialize committers so commit_seq order is visibility order.
    PERFORM pg_advisory_xact_lock(hashtext('{log}'));
    c := nullif(current_setting('hybrid_cdc.{log}', true), '')::bigint;
    IF c IS NULL THEN
        c := nextval('{log}_commit_seq');
        PERFORM set_config('hybrid_cdc.{log}', c::text, true);
    END IF;
    UPDATE {log} SET commit_seq = c WHERE tx_id = txid_current() AND commit_seq IS NULL;
    RETURN NULL;
END $$
"""
