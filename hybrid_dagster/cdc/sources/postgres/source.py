"""PostgreSQL change source: a logical replication slot, streamed or peeked.

Two readers, the same decoders and the same exactness rules:

* ``reader="stream"`` (default): the replication protocol (``START_REPLICATION SLOT ... LOGICAL``, see
  :mod:`hybrid_dagster.cdc.sources.postgres.stream`); ``ack`` becomes the flush position of the next
  standby status update. Reading again without an ``ack`` continues after what was read (a new source,
  or a reconnect, starts again at the acknowledged position).
* ``reader="peek"``: the SQL interface (re-decodes from the slot's restart point on every read).
  ``read`` peeks (``pg_logical_slot_peek_*``, never ``get``, which consumes on read and loses data on a
  crash), so reading again without an ``ack`` returns the same changes; ``ack`` advances the slot with
  ``pg_replication_slot_advance``.

Either way ``ack`` is called only after the Iceberg commit carrying the watermark.

Binary transfer (pgoutput, ``binary=True``, the default): both readers ask for ``binary 'true'`` when the
server is PostgreSQL 14+ (``server_version_num``) and every column of every captured table has a type of
:data:`~hybrid_dagster.cdc.sources.postgres.binary.BINARY_TYPES` (checked in the catalog on the first
read); values then arrive in their types' send format and decode to the same Arrow values as their text
(:mod:`.binary`). A column of another type appearing while streaming (``ALTER TABLE ... ADD COLUMN ...
numeric``) makes the decoder raise :class:`~hybrid_dagster.errors.BinaryFormatUnsupported` before it
decodes a value; the source then switches to text mode for the rest of its life and reads again, in the
same ``read()``, from the acknowledged position (the stream reader closes its receiver and opens a new
one): nothing is lost, and what arrives twice is skipped by the apply (at or below a table's watermark).

Replica identity stays DEFAULT: the apply writes full after-images keyed by primary key, so old values of
non-key columns are not needed, and a primary-key change still carries the old key (pgoutput sends it as
a ``K`` tuple, wal2json as ``identity``). Unchanged TOAST values are reported in ``__unchanged``. A key
other than the primary key (``SourceTable.key_columns``) must be covered by the table's replica identity
(``FULL``, or ``USING INDEX`` on a unique index over it), else deletes and key changes would arrive
without it: ``setup()`` checks this and says which statement to run.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any, Literal
from urllib.parse import quote

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
from psycopg2 import sql

from hybrid_dagster.cdc.changes import ChangeBatch, DeadLetter, Position, TableChanges
from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable
from hybrid_dagster.cdc.sources.postgres.binary import use_binary
from hybrid_dagster.cdc.sources.postgres.copy import PostgresCopy
from hybrid_dagster.cdc.sources.postgres.pgoutput import (
    DecodedStream,
    OnMalformed,
    PgOutputDecoder,
    read_copy_binary,
)
from hybrid_dagster.cdc.sources.postgres.stream import ReplicationReceiver, StreamBatcher
from hybrid_dagster.cdc.sources.postgres.types import (
    NUMERIC,
    SESSION_SETTINGS,
    ConversionError,
    PgColumn,
    build_table_changes,
    text_to_arrow,
)
from hybrid_dagster.cdc.sources.postgres.wal2json import NUMERIC_AS_STRING, WAL2JSON_OPTIONS, Wal2JsonDecoder
from hybrid_dagster.errors import (
    BinaryFormatUnsupported,
    DecoderError,
    PostgresSetupError as PostgresSetupError,
    ReplicationSlotInUse as ReplicationSlotInUse,
)

Decoder = Literal["pgoutput", "wal2json"]
Reader = Literal["stream", "peek"]
_CONNECTION_LOST = (None, "57P01", "57P02", "57P03", "08000", "08003", "08006")
"""SQLSTATEs of a lost connection (None: libpq could not reach the server): retried, not raised."""
log = logging.getLogger(__name__)


def format_lsn(lsn: int) -> str:
    """Integer LSN -> ``'X/Y'`` text.

    Example:
        >>> format_lsn(23803720)
        '0/16B3748'
    """
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def split_table_name(name: str) -> tuple[str, str]:
    """``'sales.orders'`` -> ``('sales', 'orders')``; an unqualified name is in ``public``."""
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def _escape_wal2json(name: str) -> str:
    return "".join("\\" + ch if ch in ",.* \\" else ch for ch in name)


class PostgresChangeSource(ChangeSource):
    """Changes of ``tables`` from one database through a logical slot (pgoutput or wal2json).

    Example:
        >>> source = PostgresChangeSource(
        ...     "host=127.0.0.1 port=5432 dbname=app user=cdc",
        ...     [SourceTable("public.orders")],
        ...     slot_name="orders_cdc",
        ... )  # doctest: +SKIP
        >>> source.setup()  # doctest: +SKIP
        Position(commit=24023128, event=0)
        >>> batch = source.read(10_000)  # doctest: +SKIP
        >>> source.ack(batch.ack_position)  # after the Iceberg commit  # doctest: +SKIP
    """

    kind = "postgres"
    copies_tables = True

    def __init__(
        self,
        dsn: str,
        tables: list[SourceTable],
        *,
        slot_name: str,
        decoder: Decoder = "pgoutput",
        publication_name: str | None = None,
        on_malformed: OnMalformed = "stop",
        reader: Reader = "stream",
        reconnect_timeout_s: float = 60.0,
        slot_busy_timeout_s: float = 10.0,
        binary: bool = True,
    ) -> None:
        if decoder not in ("pgoutput", "wal2json"):
            raise ValueError(f"decoder must be 'pgoutput' or 'wal2json', not {decoder!r}")
        if not tables:
            raise ValueError("PostgresChangeSource needs at least one table")
        if reader not in ("stream", "peek"):
            raise ValueError(f"reader must be 'stream' or 'peek', not {reader!r}")
        self.reader: Reader = reader
        self.binary = binary
        """pgoutput binary transfer where the server (14+) and the captured columns' types allow it."""
        self._binary_active: bool | None = None
        self.reconnect_timeout_s = reconnect_timeout_s
        self.slot_busy_timeout_s = slot_busy_timeout_s
        self._stream: StreamBatcher | None = None
        self._acked = 0
        self.dsn = dsn
        self.tables = list(tables)
        self.slot_name = slot_name
        self.decoder = decoder
        self.publication_name = publication_name or slot_name
        self.on_malformed: OnMalformed = on_malformed
        self._numeric_strings: bool | None = None
        params = psycopg2.extensions.parse_dsn(dsn)
        host = params.get("host") or "localhost"
        self._source_id = (
            f"postgres://{quote(host, safe='') if host.startswith('/') else host}"
            f":{params.get('port') or 5432}"
            f"/{params.get('dbname') or params.get('user') or 'postgres'}#{slot_name}"
        )
        self._conn: Any = None
        self._keys: dict[str, list[str]] = {}

    @property
    def source_id(self) -> str:
        return self._source_id

    # --- connection and catalog ---

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self.dsn)
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in SESSION_SETTINGS:
                    cur.execute(statement)
            self._conn = conn
        return self._conn

    def _query(self, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement; with the stream reader a lost connection (server restart) is retried with
        backoff for ``reconnect_timeout_s``, like the replication connection."""
        started, delay, released = time.monotonic(), 0.1, False
        while True:
            try:
                with self._connection().cursor() as cur:
                    cur.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except (psycopg2.DatabaseError, psycopg2.InterfaceError) as err:
                # a server restart may surface as a plain DatabaseError ("server closed the connection
                # unexpectedly"); an error the server reports always has a SQLSTATE, a lost link none
                lost = getattr(err, "pgcode", None) in _CONNECTION_LOST
                if (
                    not lost
                    or self.reader != "stream"
                    or time.monotonic() - started > self.reconnect_timeout_s
                ):
                    raise
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if self._stream is not None and not released:
                    # the server may be stopping: a fast shutdown waits for the walsender's consumer to
                    # confirm all it was sent, which this pipeline cannot do without SQL; let it go
                    self._stream.receiver.reconnect()
                    released = True
                log.warning(
                    "%s: connection lost (%s); reconnecting in %.1fs",
                    self.source_id,
                    type(err).__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _regclass(self, table: SourceTable) -> str:
        schema, name = split_table_name(table.name)
        ident = sql.Identifier(schema, name).as_string(self._connection())
        if self._query("SELECT to_regclass(%s)", (ident,))[0][0] is None:
            raise PostgresSetupError(f"table {table.name} does not exist in {self.source_id}")
        return ident

    def _columns(self, table: SourceTable) -> list[PgColumn]:
        rows = self._query(
            "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (self._regclass(table),),
        )
        return [PgColumn(name, int(oid), int(typmod) if oid == NUMERIC else -1) for name, oid, typmod in rows]

    def key_columns(self, table: SourceTable) -> list[str]:
        """The table's key: as configured, else its primary key (an error if it has none)."""
        if table.key_columns:
            return list(table.key_columns)
        if table.name not in self._keys:
            rows = self._query(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
                " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = %s::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (self._regclass(table),),
            )
            if not rows:
                raise PostgresSetupError(
                    f"table {table.name} has no primary key, so changes cannot be matched to rows. Add one "
                    f"(ALTER TABLE {table.name} ADD PRIMARY KEY (...)), or name columns that identify a row "
                    "with SourceTable(key_columns=(...)) and make them the replica identity "
                    f"(ALTER TABLE {table.name} REPLICA IDENTITY FULL, or REPLICA IDENTITY USING INDEX on a "
                    "unique index over them)."
                )
            self._keys[table.name] = [r[0] for r in rows]
        return self._keys[table.name]

    # --- setup ---

    def setup(self) -> Position | None:
        """Check ``wal_level``, create the publication (pgoutput) and the slot if missing.

        Returns the slot's consistent point when it was created now, else None.
        """
        level = self._query("SHOW wal_level")[0][0]
        if level != "logical":
            raise PostgresSetupError(
                f"{self.source_id}: wal_level is '{level}', logical decoding needs wal_level = logical. Run "
                "ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL."
            )
        for table in self.tables:
            self._check_replica_identity(table, self.key_columns(table))
        if self.decoder == "pgoutput":
            self._ensure_publication()
        existing = self._query(
            "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = %s", (self.slot_name,)
        )
        if existing:
            plugin, database = existing[0]
            if plugin != self.decoder:
                raise PostgresSetupError(
                    f"slot {self.slot_name} exists with plugin {plugin!r}, not {self.decoder!r}: "
                    "drop it or use another slot_name"
                )
            if database != self._query("SELECT current_database()")[0][0]:
                raise PostgresSetupError(f"slot {self.slot_name} belongs to database {database!r}")
            return None
        try:
            rows = self._query(
                "SELECT (lsn - '0/0'::pg_lsn)::int8 FROM pg_create_logical_replication_slot(%s, %s)",
                (self.slot_name, self.decoder),
            )
        except psycopg2.Error as err:
            message = str(err).strip()
            if self.decoder == "wal2json" and ("wal2json" in message or "output plugin" in message):
                raise PostgresSetupError(
                    f"{self.source_id}: the wal2json output plugin is not usable ({message}). Install it "
                    "(Debian: apt-get install postgresql-15-wal2json) and, on builds that restrict plugins, "
                    "add wal2json to output_plugin_libraries."
                ) from err
            raise
        return Position(int(rows[0][0]), 0)

    def _check_replica_identity(self, table: SourceTable, keys: list[str]) -> None:
        """Refuse a key that deletes and key changes would not carry (not in the replica identity)."""
        regclass = self._regclass(table)
        mode = self._query("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (regclass,))[0][0]
        index_kind = {"d": "i.indisprimary", "i": "i.indisreplident"}
        if mode == "f":
            return
        covered: set[str] = set()
        if mode in index_kind:
            covered = {
                r[0]
                for r in self._query(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
                    " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                    f" WHERE i.indrelid = %s::regclass AND {index_kind[mode]}",
                    (regclass,),
                )
            }
        missing = [k for k in keys if k not in covered]
        if not missing:
            return
        identity = {"d": "DEFAULT (the primary key)", "i": "USING INDEX", "n": "NOTHING"}.get(mode, mode)
        unique = self._query(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indimmediate AND i.indpred IS NULL"
            " AND i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname)"
            "   FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))"
            " = (SELECT array_agg(k ORDER BY k) FROM unnest(%s::text[]) k)"
            " AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid"
            "   AND a.attnum = ANY(i.indkey) AND NOT a.attnotnull)"
            " ORDER BY c.relname LIMIT 1",
            (regclass, keys),
        )
        alter = f"ALTER TABLE {regclass} REPLICA IDENTITY"
        index = (
            sql.Identifier(unique[0][0]).as_string(self._connection())
            if unique
            else f"<a unique index on {keys}, NOT NULL columns>"
        )
        raise PostgresSetupError(
            f"table {table.name}: key {keys} is not covered by its replica identity {identity} (missing "
            f"{missing}), so deletes and key changes would arrive without it. Run {alter} FULL; or "
            f"{alter} USING INDEX {index}; or use the primary key as the key."
        )

    def _ensure_publication(self) -> None:
        wanted = {split_table_name(t.name) for t in self.tables}
        pub = sql.Identifier(self.publication_name)
        if not self._query("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication_name,)):
            tables = sql.SQL(", ").join(sql.Identifier(*t) for t in sorted(wanted))
            self._query(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables))
            return
        present = {
            (s, t)
            for s, t in self._query(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                (self.publication_name,),
            )
        }
        for schema, table in sorted(wanted - present):
            self._query(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(pub, sql.Identifier(schema, table))
            )

    def _wait_slot_released(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                rows = self._query(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot_name,)
                )
                if not rows or not rows[0][0]:
                    return
                time.sleep(0.05)
        except psycopg2.Error:
            return  # the server is gone: nothing holds the slot on our side

    def teardown(self) -> None:
        """Drop the slot and (pgoutput) the publication; for tests and decommissioning."""
        if self._stream is not None:
            receiver = self._stream.receiver
            receiver.close()
            self._stream = None
            if receiver.connections:
                self._wait_slot_released(5.0)
        if self._query("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot_name,)):
            self._query("SELECT pg_drop_replication_slot(%s)", (self.slot_name,))
        if self.decoder == "pgoutput":
            self._query(
                sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.publication_name))
            )

    # --- reading ---

    def read(self, max_events: int) -> ChangeBatch:
        """Up to about ``max_events`` changes after the acknowledged position (see the module docstring)."""
        if self.reader == "stream":
            return self._read_stream(max_events, linger_s=None)
        return self._read_peek(max_events)

    def follow_read(self, max_events: int, max_wait_s: float) -> ChangeBatch:
        """The long-running mode's read: what arrived within about ``max_wait_s`` (possibly nothing)."""
        if self.reader == "stream":
            return self._read_stream(max_events, linger_s=max_wait_s)
        return super().follow_read(max_events, max_wait_s)

    def _names_and_keys(self) -> tuple[dict[tuple[str, str], str], dict[str, list[str]]]:
        table_names = {split_table_name(t.name): t.name for t in self.tables}
        return table_names, {t.name: self.key_columns(t) for t in self.tables}

    def _wal2json_options(self, table_names: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
        add_tables = ",".join(f"{_escape_wal2json(s)}.{_escape_wal2json(t)}" for s, t in table_names)
        extra = (NUMERIC_AS_STRING,) if self._wal2json_has_numeric_strings() else ()
        return [*WAL2JSON_OPTIONS, *extra, ("add-tables", add_tables)]

    def _wal2json_decode(self, lsns: list[int], payloads: list[str]) -> DecodedStream:
        table_names, keys = self._names_and_keys()
        decoder = Wal2JsonDecoder(
            self.source_id,
            table_names,
            keys,
            {t.name: self._columns(t) for t in self.tables},
            on_malformed=self.on_malformed,
            numbers_as_strings=self._wal2json_has_numeric_strings(),
        )
        decoded = decoder.decode(lsns, payloads)
        if decoded.ambiguous_nulls:
            log.warning(
                "%s: this wal2json writes float/numeric NaN, Infinity and NULL alike as null; %s read as "
                "NULL may be NaN or Infinity at the source (upgrade wal2json to 2.4+, or use pgoutput)",
                self.source_id,
                ", ".join(f"{n} value(s) of {c}" for c, n in sorted(decoded.ambiguous_nulls.items())),
            )
        return decoded

    def _read_peek(self, max_events: int) -> ChangeBatch:
        """Peek up to about ``max_events`` messages (whole transactions) after the acknowledged position."""
        table_names, keys = self._names_and_keys()
        if self.decoder == "pgoutput":
            binary = self.binary_active()
            # binary COPY: bytea arrives raw (no hex) and no Python object per row is made
            with self._connection().cursor() as cur:
                peek = cur.mogrify(
                    "COPY (SELECT (lsn - '0/0'::pg_lsn)::int8, data FROM pg_logical_slot_peek_binary_changes("
                    "%s, NULL, %s, 'proto_version', '1', 'publication_names', %s"
                    + (", 'binary', 'true'" if binary else "")
                    + ")) TO STDOUT (FORMAT binary)",
                    (self.slot_name, max_events, self.publication_name),
                )
                sink = io.BytesIO()
                cur.copy_expert(peek.decode(), sink)
            buf, starts, sizes, lsns = read_copy_binary(sink.getvalue())
            messages = len(starts)
            decoder = PgOutputDecoder(
                self.source_id, table_names, keys, on_malformed=self.on_malformed, binary=binary
            )
            try:
                decoded = decoder.decode_buffer(buf, starts, sizes, lsns)
            except BinaryFormatUnsupported as err:
                self._binary_unsupported(err)
                return self._read_peek(max_events)
        else:
            options = [v for pair in self._wal2json_options(table_names) for v in pair]
            placeholders = ", ".join(["%s"] * len(options))
            rows = self._query(
                "SELECT (lsn - '0/0'::pg_lsn)::int8, data FROM pg_logical_slot_peek_changes("
                f"%s, NULL, %s, {placeholders})",
                (self.slot_name, max_events, *options),
            )
            decoded = self._wal2json_decode([r[0] for r in rows], [r[1] for r in rows])
            messages = len(rows)
        return self._finish(decoded, keys, messages)

    def _finish(self, decoded: DecodedStream, keys: dict[str, list[str]], messages: int) -> ChangeBatch:
        if messages and decoded.transactions == 0 and decoded.dead_letters:
            raise DecoderError(
                f"{self.source_id}: none of the {messages} messages from slot {self.slot_name} decode as "
                f"{self.decoder} (first at LSN {decoded.dead_letters[0].position}): is the slot's plugin "
                f"{self.decoder}? Drop the slot or set decoder to the slot's plugin."
            )
        batch = self._batch(decoded, keys)
        batch.source_position = self.current_position()
        return batch

    @property
    def stream(self) -> StreamBatcher | None:
        """The stream reader's state once it started (connections, largest batch), else None."""
        return self._stream

    def binary_active(self) -> bool:
        """Whether pgoutput is read in binary mode (decided on the first read, see the module docstring)."""
        if self._binary_active is None:
            self._binary_active = (
                self.binary
                and self.decoder == "pgoutput"
                and use_binary(
                    int(self._query("SHOW server_version_num")[0][0]),
                    {t.name: self._columns(t) for t in self.tables},
                )
            )
        return self._binary_active

    def _binary_unsupported(self, err: BinaryFormatUnsupported) -> None:
        """Text mode from now on; the stream reader's receiver is closed, to restart at the ack."""
        log.warning("%s; reading again from the acknowledged position in text mode", err)
        self._binary_active = False
        self._close_stream()

    def _open_stream(self) -> StreamBatcher:
        if self._stream is None:
            table_names, _ = self._names_and_keys()
            if self.decoder == "pgoutput":
                options = {"proto_version": "1", "publication_names": self.publication_name}
                if self.binary_active():
                    options["binary"] = "true"
            else:
                options = dict(self._wal2json_options(table_names))
            receiver = ReplicationReceiver(
                self.dsn,
                self.slot_name,
                self.decoder,
                options,
                source_id=self.source_id,
                reconnect_timeout_s=self.reconnect_timeout_s,
                slot_busy_timeout_s=self.slot_busy_timeout_s,
            )
            receiver.start(self._acked)
            self._stream = StreamBatcher(receiver, self.decoder)
        return self._stream

    def _read_stream(self, max_events: int, *, linger_s: float | None) -> ChangeBatch:
        table_names, keys = self._names_and_keys()
        stream = self._open_stream()
        target = self.current_position().commit if linger_s is None else None
        batch = stream.next_batch(max_events, target=target, linger_s=linger_s)
        if self.decoder == "pgoutput":
            decoder = PgOutputDecoder(
                self.source_id, table_names, keys, on_malformed=self.on_malformed, binary=self.binary_active()
            )
            try:
                decoded = decoder.decode_buffer(batch.joined, batch.starts, batch.sizes, batch.lsns)
            except BinaryFormatUnsupported as err:
                self._binary_unsupported(err)
                return self._read_stream(max_events, linger_s=linger_s)
        else:
            decoded = self._wal2json_decode(batch.lsns.tolist(), [p.decode() for p in batch.payloads()])
        return self._finish(decoded, keys, batch.messages)

    def _batch(self, decoded: DecodedStream, keys: dict[str, list[str]]) -> ChangeBatch:
        batch = ChangeBatch(self.source_id, dead_letters=list(decoded.dead_letters))
        for table, segments in decoded.segments.items():
            data_schema, rows, rejected = build_table_changes(table, keys[table], segments)
            defaults = self._missing_values(table, segments[-1].columns)
            batch.tables[table] = TableChanges(table, keys[table], data_schema, rows, defaults)
            batch.dead_letters.extend(
                DeadLetter(self.source_id, r.raw, r.reason, table, r.position) for r in rejected
            )
        if decoded.last_end_lsn is not None:
            batch.ack_position = Position(decoded.last_end_lsn, 0)
        return batch

    def _wal2json_has_numeric_strings(self) -> bool:
        """Whether the server's wal2json accepts ``numeric-data-types-as-string`` (asked once)."""
        busy_since = time.monotonic()
        while self._numeric_strings is None:
            try:
                self._query(
                    "SELECT count(*) FROM pg_logical_slot_peek_changes(%s, '0/1'::pg_lsn, NULL, %s, %s)",
                    (self.slot_name, *NUMERIC_AS_STRING),
                )
                self._numeric_strings = True
            except psycopg2.errors.InvalidParameterValue:
                self._numeric_strings = False
            except psycopg2.errors.ObjectInUse:
                # a consumer killed a moment ago still holds the slot until its walsender notices
                if time.monotonic() - busy_since >= self.slot_busy_timeout_s:
                    raise ReplicationSlotInUse(
                        f"{self.source_id}: replication slot {self.slot_name} is in use by another consumer "
                        f"(still after {self.slot_busy_timeout_s:.0f}s). A slot serves one consumer at a "
                        "time: stop the other worker or run that reads it (SELECT pg_terminate_backend("
                        f"active_pid) FROM pg_replication_slots WHERE slot_name = '{self.slot_name}' ends "
                        "it), or give this source its own slot_name."
                    ) from None
                time.sleep(0.2)
        return self._numeric_strings

    def _missing_values(self, table: str, columns: list[PgColumn]) -> dict[str, Any]:
        """Values rows hold for columns added after them (``ADD COLUMN ... DEFAULT``, PostgreSQL 11+).

        PostgreSQL keeps that value in ``pg_attribute.attmissingval`` instead of rewriting the rows, and no
        change event carries it. It becomes the Iceberg column's initial default. (A volatile default,
        e.g. ``now()``, rewrites the table without change events: copy the table again in that case.)
        """
        rows = self._query(
            "SELECT attname, (attmissingval::text::text[])[1] FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND atthasmissing AND NOT attisdropped",
            (self._regclass(SourceTable(table)),),
        )
        by_name = {c.name: c for c in columns}
        out: dict[str, Any] = {}
        for name, text in rows:
            if name in by_name and text is not None:
                try:
                    out[name] = text_to_arrow(pa.array([text], pa.string()), by_name[name])[0].as_py()
                except ConversionError:
                    continue  # not representable (e.g. 'infinity'): rows before the column read NULL
        return out

    def ack(self, position: Position) -> None:
        """Advance the slot to ``position.commit`` (an end LSN); never moves it backwards.

        The stream reader sends it as the flush position of its next standby status update; the peek
        reader advances the slot with ``pg_replication_slot_advance``.
        """
        self._acked = max(self._acked, position.commit)
        if self._stream is not None:
            self._stream.receiver.confirm(position.commit)
            return
        rows = self._query(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (self.slot_name,),
        )
        if not rows:
            raise PostgresSetupError(f"slot {self.slot_name} does not exist in {self.source_id}: run setup()")
        if rows[0][0] is not None and position.commit <= rows[0][0]:
            return
        self._query(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
            (self.slot_name, format_lsn(position.commit)),
        )

    def current_position(self) -> Position:
        """The server's current WAL write position."""
        return Position(int(self._query("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")[0][0]), 0)

    # --- initial copy ---

    def open_copy(self) -> PostgresCopy:
        """Read the captured tables at a temporary slot's consistent point: an exact hand-off to the stream
        whether the capture slot is new, left by a killed run or made by hand (see
        :mod:`hybrid_dagster.cdc.sources.postgres.copy`)."""
        return PostgresCopy(
            self.dsn,
            plugin=self.decoder,
            source_id=self.source_id,
            describe=lambda table: (self.key_columns(table), self._columns(table)),
        )

    def _close_stream(self) -> None:
        if self._stream is not None:
            receiver = self._stream.receiver
            receiver.close()  # sends the last acknowledged position first
            self._stream = None
            if receiver.connections:
                self._wait_slot_released(5.0)

    def close(self) -> None:
        """Release the connections; the stream reader first sends the last acknowledged position and
        waits (up to 5 s) until the server has released the slot, so the next consumer finds it free."""
        self._close_stream()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
