"""Streaming reader: a logical replication slot read over the replication protocol.

``START_REPLICATION SLOT ... LOGICAL`` through psycopg2's ``LogicalReplicationConnection``, instead of
``pg_logical_slot_peek_*`` calls that decode the WAL again from the slot's restart point on every read and
once more to advance the slot. A receiver thread reads the socket; the pipeline's thread cuts what it
received into batches for the same decoders (:mod:`.pgoutput`, :mod:`.wal2json`).

Correctness rules:

* **Acknowledge only committed work.** The flush position of every standby status update is a position
  the pipeline acknowledged (:meth:`ReplicationReceiver.confirm`) after the Iceberg commit that carries
  the watermark; keepalives are answered with that same position (psycopg2 replies when the server
  requests it, and only moves the flush position past a keepalive's WAL end when everything received
  had been acknowledged, i.e. the WAL in between holds nothing for this slot).
* **Resume exactly.** Every (re)connection starts replication at the last acknowledged position (the slot's
  own ``confirmed_flush_lsn`` when that is later). What was received after it is dropped (a new
  *generation*) and received again; the apply skips what a table already holds (at or below its
  watermark), so a dropped connection or a server restart neither loses nor duplicates a change.
  Reconnects back off exponentially (0.1 s to 5 s) and give up with :class:`ReplicationLost` after
  ``reconnect_timeout_s``.
* **Bounded memory.** The receiver hands over chunks through a bounded queue: when it is full the
  receiver stops reading the socket (the server waits; status updates keep the connection alive). A batch
  holds at most about ``max_events`` messages: a transaction larger than that is cut into pieces at an
  LSN change (never between changes sharing one LSN, whose event positions are numbered in order within
  one decode); each piece starts with the transaction's Begin, so its changes carry their commit position
  and apply like the whole transaction would, and only the piece holding the Commit acknowledges it.
  PostgreSQL keeps a transaction in progress in its reorder buffer (spilled to disk past
  ``logical_decoding_work_mem``) and sends it only after it committed, so an aborted change never reaches
  a batch.
* **One consumer per slot.** A slot held by another consumer raises :class:`ReplicationSlotInUse` after
  ``slot_busy_timeout_s`` (a consumer that was just killed holds the slot until its walsender notices, so
  a short wait is normal before that).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg2
import psycopg2.errors
from psycopg2.extras import LogicalReplicationConnection

from hybrid_dagster.errors import (
    PostgresSetupError,
    ReplicationLost as ReplicationLost,
    ReplicationSlotInUse as ReplicationSlotInUse,
)

log = logging.getLogger(__name__)

BEGIN, COMMIT, RELATION = ord("B"), ord("C"), ord("R")
_WAL2JSON_ACTION_AT = len(b'{"action":"')
Plugin = Literal["pgoutput", "wal2json"]


def message_type(plugin: Plugin, payload: bytes) -> int:
    """The message's kind as one byte: pgoutput's type, or wal2json's ``action`` (``B``, ``C``, ``I``...)."""
    if plugin == "pgoutput":
        return payload[0] if payload else 0
    return payload[_WAL2JSON_ACTION_AT] if len(payload) > _WAL2JSON_ACTION_AT else 0


@dataclass
class Chunk:
    """Messages received in a row on one connection (``generation``)."""

    generation: int
    lsns: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    types: bytearray = field(default_factory=bytearray)


class ReplicationReceiver:
    """A thread that streams one slot and hands over chunks of messages; reconnects by itself.

    Example:
        >>> receiver = ReplicationReceiver(dsn, "orders", "pgoutput", opts, source_id=sid)  # doctest: +SKIP
        >>> receiver.start(start_lsn=0)  # doctest: +SKIP
        >>> item = receiver.take(0.1)  # a Chunk, a new generation (int) or None  # doctest: +SKIP
        >>> receiver.confirm(end_lsn)  # after the Iceberg commit  # doctest: +SKIP
    """

    def __init__(
        self,
        dsn: str,
        slot_name: str,
        plugin: Plugin,
        options: dict[str, str],
        *,
        source_id: str,
        status_interval_s: float = 1.0,
        reconnect_timeout_s: float = 60.0,
        slot_busy_timeout_s: float = 10.0,
        queue_chunks: int = 64,
        chunk_messages: int = 4096,
    ) -> None:
        self.dsn = dsn
        self.slot_name = slot_name
        self.plugin: Plugin = plugin
        self.options = options
        self.source_id = source_id
        self.status_interval_s = status_interval_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.slot_busy_timeout_s = slot_busy_timeout_s
        self.chunk_messages = chunk_messages
        self.wal_end = 0
        """Highest WAL position the server said it has sent (keepalives and messages), read when idle."""
        self.generation = 0
        self.connections = 0
        self.connected = False
        """Streaming now (False while reconnecting): a silent server only means "caught up" when True."""
        self._queue: queue.Queue[Chunk | int | BaseException] = queue.Queue(maxsize=queue_chunks)
        self._confirmed = 0
        self._sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the pipeline's side ---

    def start(self, start_lsn: int = 0) -> None:
        self._confirmed = max(self._confirmed, start_lsn)
        self._thread = threading.Thread(target=self._run, name=f"replication-{self.slot_name}", daemon=True)
        self._thread.start()

    def confirm(self, lsn: int) -> None:
        """Let the next status update report ``lsn`` as flushed (never moves backwards)."""
        self._confirmed = max(self._confirmed, lsn)

    @property
    def confirmed(self) -> int:
        return self._confirmed

    def take(self, timeout: float) -> Chunk | int | None:
        """The next chunk, a new generation number (everything before it is void), or None on timeout."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._queue.put(item)  # every later take raises it too
            raise item
        return item

    def idle(self) -> bool:
        return self._queue.empty()

    def close(self) -> None:
        """Send the last acknowledged position and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # --- the receiver thread ---

    def _put(self, item: Chunk | int | BaseException, cur: Any = None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.status_interval_s)
                return True
            except queue.Full:
                if cur is not None:  # backpressure: keep the walsender's timeout from firing
                    self._feedback(cur, force=True)
        return False

    def _feedback(self, cur: Any, *, force: bool = False) -> None:
        confirmed = self._confirmed
        if confirmed > self._sent or force:
            cur.send_feedback(write_lsn=confirmed, flush_lsn=confirmed, force=True)
            self._sent = confirmed

    def _fail(self, error: BaseException) -> None:
        while True:  # make room: the error must reach the pipeline
            try:
                self._queue.put_nowait(error)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _run(self) -> None:
        down_since: float | None = None
        busy_since: float | None = None
        delay = 0.1
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = psycopg2.connect(self.dsn, connection_factory=LogicalReplicationConnection)
                cur = conn.cursor()
                cur.start_replication(
                    slot_name=self.slot_name,
                    decode=False,
                    start_lsn=self._confirmed,
                    options=self.options,
                    status_interval=self.status_interval_s,
                )
                self.connections += 1
                self.generation += 1
                self.connected = True
                self._sent = 0
                if not self._put(self.generation):
                    return
                down_since, busy_since, delay = None, None, 0.1
                self._stream(conn, cur)
            except psycopg2.errors.ObjectInUse:
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since >= self.slot_busy_timeout_s:
                    self._fail(
                        ReplicationSlotInUse(
                            f"{self.source_id}: replication slot {self.slot_name} is in use by another "
                            f"consumer (still after {self.slot_busy_timeout_s:.0f}s). A slot serves one "
                            "consumer at a time: stop the other worker or run that streams it ("
                            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                            f"WHERE slot_name = '{self.slot_name}' ends it), or give this source its own "
                            "slot_name."
                        )
                    )
                    return
            except psycopg2.errors.UndefinedObject:
                self._fail(
                    PostgresSetupError(
                        f"replication slot {self.slot_name} does not exist in {self.source_id}: run setup() "
                        "(or the CDC job, which creates it) first"
                    )
                )
                return
            except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError) as err:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since >= self.reconnect_timeout_s:
                    self._fail(
                        ReplicationLost(
                            f"{self.source_id}: replication of slot {self.slot_name} lost and not "
                            f"re-established within {self.reconnect_timeout_s:.0f}s ({type(err).__name__}). "
                            "Check that the "
                            "server is up and accepts replication connections (pg_hba.conf), then run again: "
                            "it resumes from the last committed watermark."
                        )
                    )
                    return
                # no message text: it may quote a value; the class and SQLSTATE say what happened
                log.warning(
                    "%s: replication connection lost (%s %s); reconnecting in %.1fs",
                    self.source_id,
                    type(err).__name__,
                    getattr(err, "pgcode", None) or "",
                    delay,
                )
            except BaseException as err:
                self._fail(err)
                return
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _stream(self, conn: Any, cur: Any) -> None:
        chunk = Chunk(self.generation)
        plugin, limit = self.plugin, self.chunk_messages
        read = cur.read_message
        while True:
            if self._stop.is_set():
                self._feedback(cur, force=True)
                return
            self._feedback(cur)
            msg = read()
            if msg is None:
                if chunk.lsns:
                    if not self._put(chunk, cur):
                        return
                    chunk = Chunk(self.generation)
                self.wal_end = max(self.wal_end, int(cur.wal_end))
                select.select([conn], [], [], 0.05)
                continue
            payload = msg.payload
            chunk.lsns.append(msg.data_start)
            chunk.payloads.append(payload)
            chunk.types.append(message_type(plugin, payload))
            if len(chunk.lsns) >= limit:
                if not self._put(chunk, cur):
                    return
                chunk = Chunk(self.generation)


class StreamBatcher:
    """Cuts the received messages into batches of whole transactions, or pieces of a large one.

    Example:
        >>> batcher = StreamBatcher(receiver, "pgoutput")  # doctest: +SKIP
        >>> lsns, payloads, messages = batcher.next_batch(50_000, target=current_lsn)  # doctest: +SKIP
    """

    def __init__(self, receiver: ReplicationReceiver, plugin: Plugin, *, idle_s: float = 2.0) -> None:
        self.receiver = receiver
        self.plugin: Plugin = plugin
        self.idle_s = idle_s
        self._generation = 0
        self._lsns: list[int] = []
        self._payloads: list[bytes] = []
        self._types = bytearray()
        self._first_at = 0.0
        self._relations: dict[bytes, tuple[int, bytes]] = {}
        self.largest_batch = 0
        """Most messages handed to the decoder at once (the memory bound, for tests and benchmarks)."""

    def _reset(self, generation: int) -> None:
        self._generation = generation
        self._lsns, self._payloads, self._types = [], [], bytearray()
        self._relations.clear()

    def _add(self, chunk: Chunk) -> None:
        if chunk.generation != self._generation:
            return  # received on a connection that has since been replaced
        if not self._lsns:
            self._first_at = time.monotonic()
        self._lsns.extend(chunk.lsns)
        self._payloads.extend(chunk.payloads)
        self._types.extend(chunk.types)

    def _last_commit_end(self) -> int:
        """Index just after the last Commit in the buffer (0 if none)."""
        return self._types.rfind(COMMIT) + 1

    def _cut_index(self, max_events: int) -> int | None:
        """Where to cut a full buffer: after the last Commit within ``max_events``, else at an LSN change."""
        if len(self._lsns) <= max_events:
            return None
        whole = self._types.rfind(COMMIT, 0, max_events) + 1
        if whole:
            return whole
        lsns = self._lsns
        cut = max_events
        while cut < len(lsns) and lsns[cut] == lsns[cut - 1]:
            cut += 1
        return cut if cut < len(lsns) else None

    def _take(self, cut: int) -> tuple[list[int], list[bytes], int]:
        lsns, payloads, types = self._lsns[:cut], self._payloads[:cut], self._types[:cut]
        rest_lsns, rest_payloads, rest_types = self._lsns[cut:], self._payloads[cut:], self._types[cut:]
        begin = types.rfind(BEGIN)
        if begin >= 0 and types.find(COMMIT, begin) < 0 and rest_lsns:
            # cut inside a transaction: the rest starts with its Begin again (commit position, xid, time)
            rest_lsns.insert(0, lsns[begin])
            rest_payloads.insert(0, payloads[begin])
            rest_types.insert(0, BEGIN)
        self._lsns, self._payloads, self._types = rest_lsns, rest_payloads, rest_types
        self._first_at = time.monotonic()
        messages = len(lsns)
        if self.plugin == "pgoutput" and lsns:
            # pgoutput sends a Relation once per connection: every batch starts with the ones known so far
            known = list(self._relations.values())
            for i in (i for i, t in enumerate(types) if t == RELATION):
                self._relations[payloads[i][1:5]] = (lsns[i], payloads[i])
            if known:
                lsns = [lsn for lsn, _ in known] + lsns
                payloads = [p for _, p in known] + payloads
        self.largest_batch = max(self.largest_batch, messages)
        return lsns, payloads, messages

    def next_batch(
        self, max_events: int, *, target: int | None = None, linger_s: float | None = None
    ) -> tuple[list[int], list[bytes], int]:
        """Messages to decode (Relations first), and how many of them were received for this batch.

        Without ``linger_s`` (drain): returns once about ``max_events`` messages are in, or, at a
        transaction boundary, once the server has sent everything up to ``target`` (or sent nothing for
        ``idle_s`` while connected: a reconnect is waited for). With ``linger_s`` (follow): returns the
        complete transactions received once the first of them waited ``linger_s``, or nothing after it.
        """
        started = last_item = time.monotonic()
        while True:
            cut = self._cut_index(max_events)
            if cut is not None:
                return self._take(cut)
            now = time.monotonic()
            whole = self._last_commit_end()
            if linger_s is not None:
                if whole and now - self._first_at >= linger_s:
                    return self._take(whole)
                if not self._lsns and now - started >= linger_s:
                    return self._take(0)
            else:
                at_boundary = whole == len(self._lsns)
                caught_up = target is not None and self.receiver.wal_end >= target and self.receiver.idle()
                if at_boundary and caught_up:
                    return self._take(whole)
                connected = self.receiver.connected and self.receiver.generation == self._generation
                if connected and now - last_item >= self.idle_s and (at_boundary or whole):
                    return self._take(whole)
            item = self.receiver.take(0.02)
            if item is None:
                continue
            last_item = time.monotonic()
            if isinstance(item, int):
                self._reset(item)
            else:
                self._add(item)
