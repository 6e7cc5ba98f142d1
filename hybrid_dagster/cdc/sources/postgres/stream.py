"""Streaming reader: a logical replication slot read over the replication protocol.

``START_REPLICATION SLOT ... LOGICAL`` through psycopg2's ``LogicalReplicationConnection``, instead of
``pg_logical_slot_peek_*`` calls that decode the WAL again from the slot's restart point on every read and
once more to advance the slot. A receiver *process* (:mod:`.receiver_process`) reads the socket (the COPY
stream itself on an unencrypted connection, through psycopg2's ``read_message`` on an encrypted one) and
writes chunks of messages (positions, starts, sizes and the buffer they lie in) to a pipe; a thread here reads
the pipe into a bounded queue, and the pipeline's thread cuts what it received into batches that go to the
decoders as one joined buffer (:meth:`.pgoutput.PgOutputDecoder.decode_buffer`, :mod:`.wal2json`). The
receiver runs in its own process because psycopg2 releases the interpreter lock around every socket
read: a receiver thread waited for it again behind the apply each time and received 3.4 times slower.

Correctness rules:

* **Acknowledge only committed work.** The flush position of every standby status update is a position
  the pipeline acknowledged (:meth:`ReplicationReceiver.confirm`) after the Iceberg commit that carries
  the watermark; keepalives are answered with that same position (the receiver replies when the server
  requests it, and only moves the flush position past a keepalive's WAL end when everything received
  had been acknowledged, i.e. the WAL in between holds nothing for this slot: psycopg2's rule).
* **Resume exactly.** Every (re)connection starts replication at the last acknowledged position (the slot's
  own ``confirmed_flush_lsn`` when that is later). What was received after it is dropped (a new
  *generation*) and received again; the apply skips what a table already holds (at or below its
  watermark), so a dropped connection or a server restart neither loses nor duplicates a change.
  Reconnects back off exponentially (0.1 s to 5 s) and give up with :class:`ReplicationLost` after
  ``reconnect_timeout_s``. When the source's SQL connection is lost, the replication connection is
  dropped and made again too (:meth:`ReplicationReceiver.reconnect`): a fast shutdown of the server waits
  until the walsender's consumer confirmed everything it was sent, which the pipeline cannot do while
  the server refuses its SQL, so holding on would keep the server from stopping.
* **Bounded memory.** The receiver hands over chunks through a pipe and a bounded queue: when the queue is
  full the pipe fills, then the receiver's own queue of frames (:data:`.receiver_process.OUTBOX_BYTES`),
  and the receiver stops reading the socket (the server waits; status updates keep the connection alive).
  A batch holds whole transactions up to about ``max_events`` messages (as a peek does, the one that
  crosses ``max_events`` is included when it ends within ``2 * max_events``), and the batcher buffers at
  most about ``2 * max_events``: a transaction larger than that is cut into pieces of about ``max_events``
  at an LSN change (never between changes sharing one LSN, whose event positions are numbered in order
  within one decode); each piece starts with the transaction's Begin, so its changes carry their commit
  position and apply like the whole transaction would, and only the piece holding the Commit acknowledges
  it. PostgreSQL keeps a transaction in progress in its reorder buffer (spilled to disk past
  ``logical_decoding_work_mem``) and sends it only after it committed, so an aborted change never reaches
  a batch.
* **No orphan.** The receiver process stops when its stdin ends: when the pipeline closes the receiver
  (it sends the last acknowledged position first) and when the pipeline's process dies (even by
  SIGKILL), so the slot is released as soon as the walsender notices.
* **One consumer per slot.** A slot held by another consumer raises :class:`ReplicationSlotInUse` after
  ``slot_busy_timeout_s`` (a consumer that was just killed holds the slot until its walsender notices, so
  a short wait is normal before that).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

from hybrid_dagster.cdc.sources.postgres import receiver_process as wire
from hybrid_dagster.cdc.sources.postgres.types import WINDOW
from hybrid_dagster.errors import (
    PostgresSetupError,
    ReplicationLost as ReplicationLost,
    ReplicationSlotInUse as ReplicationSlotInUse,
)

log = logging.getLogger(__name__)

BEGIN, COMMIT, RELATION = ord("B"), ord("C"), ord("R")
_WAL2JSON_ACTION_AT = len(b'{"action":"')
_PIPE_BYTES = 1 << 20
_ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The receiver process does no linear algebra: numpy's BLAS need not start a thread per core there (an
idle OpenBLAS thread spins a while after start, next to the walsender)."""
Plugin = Literal["pgoutput", "wal2json"]


def message_types(plugin: Plugin, data: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> bytes:
    """Each message's kind as one byte: pgoutput's type, or wal2json's ``action`` (``B``, ``C``, ``I``...).

    Example:
        >>> buf = np.frombuffer(b"Bxxx" b"Cyy", np.uint8)
        >>> message_types("pgoutput", buf, np.array([0, 4]), np.array([4, 3]))
        b'BC'
    """
    at = 0 if plugin == "pgoutput" else _WAL2JSON_ACTION_AT
    present = sizes > at
    out = np.zeros(len(starts), np.uint8)
    out[present] = data[starts[present] + at]
    return out.tobytes()


@dataclass
class Chunk:
    """Messages received in a row on one connection (``generation``): message ``i`` is
    ``data[starts[i] : starts[i] + sizes[i]]`` (the buffer may hold protocol headers between them)."""

    generation: int
    lsns: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    data: bytes | memoryview
    types: bytes

    @classmethod
    def parse(cls, plugin: Plugin, body: bytes) -> Chunk:
        """A chunk from the body of a receiver process's ``M`` frame."""
        generation, _, count = wire.CHUNK_HEAD.unpack_from(body)
        at = wire.CHUNK_HEAD.size
        lsns = np.frombuffer(body, "<i8", count, at)
        starts = np.frombuffer(body, "<i8", count, at + 8 * count)
        sizes = np.frombuffer(body, "<i8", count, at + 16 * count)
        data_at = at + 24 * count
        data = np.frombuffer(body, np.uint8, offset=data_at)
        if count and (starts.min() < 0 or int((starts + sizes).max()) > len(data) or sizes.min() < 0):
            raise ValueError("a chunk whose messages lie outside its buffer")
        types = message_types(plugin, data, starts, sizes)
        return cls(generation, lsns, starts, sizes, memoryview(body)[data_at:], types)


@dataclass
class StreamBatch:
    """Messages for the decoder: ``joined[starts[i] : starts[i] + sizes[i]]`` (``joined`` ends with
    :data:`~hybrid_dagster.cdc.sources.postgres.types.WINDOW` zero bytes), and how many of them were
    received for this batch (the Relations put first are not counted)."""

    joined: bytes
    starts: np.ndarray
    sizes: np.ndarray
    lsns: np.ndarray
    messages: int

    def payloads(self) -> list[bytes]:
        joined = self.joined
        return [joined[s : s + n] for s, n in zip(self.starts.tolist(), self.sizes.tolist(), strict=True)]


def _empty_batch() -> StreamBatch:
    none = np.zeros(0, np.int64)
    return StreamBatch(bytes(WINDOW), none, none, none, 0)


class ReplicationReceiver:
    """A receiver process that streams one slot (and reconnects by itself), and a thread that hands over
    its chunks of messages.

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
        chunk_bytes: int = 1 << 20,
        raw_socket: bool = True,
    ) -> None:
        self.dsn = dsn
        self.slot_name = slot_name
        self.plugin: Plugin = plugin
        self.options = options
        self.source_id = source_id
        self.status_interval_s = status_interval_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.slot_busy_timeout_s = slot_busy_timeout_s
        self.chunk_bytes = chunk_bytes
        self.raw_socket = raw_socket
        """Read the COPY stream from the socket (unencrypted connections); False: psycopg2 reads it."""
        self.wal_end = 0
        """Highest WAL position the server said it has sent on the current connection (keepalives and
        messages), read when idle."""
        self.generation = 0
        self.connections = 0
        self.connected = False
        """Streaming now (False while reconnecting): a silent server only means "caught up" when True."""
        self.reads_socket = False
        """Whether the receiver process reads the current connection's socket itself (else psycopg2 does)."""
        self._queue: queue.Queue[Chunk | int | BaseException] = queue.Queue(maxsize=queue_chunks)
        self._confirmed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stdin_lock = threading.Lock()

    # --- the pipeline's side ---

    def start(self, start_lsn: int = 0) -> None:
        self._confirmed = max(self._confirmed, start_lsn)
        process = subprocess.Popen(
            [sys.executable, "-P", str(Path(wire.__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **_ONE_BLAS_THREAD},
        )
        assert process.stdout is not None
        with contextlib.suppress(OSError, AttributeError):  # a larger pipe: fewer wake-ups per chunk
            fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._process = process
        config = {
            "dsn": self.dsn,  # on stdin, never in argv (it may hold a password)
            "slot_name": self.slot_name,
            "options": self.options,
            "start_lsn": self._confirmed,
            "status_interval_s": self.status_interval_s,
            "reconnect_timeout_s": self.reconnect_timeout_s,
            "slot_busy_timeout_s": self.slot_busy_timeout_s,
            "chunk_bytes": self.chunk_bytes,
            "raw_socket": self.raw_socket,
        }
        self._write(json.dumps(config) + "\n")
        self._thread = threading.Thread(
            target=self._run, args=(process.stdout,), name=f"replication-{self.slot_name}", daemon=True
        )
        self._thread.start()

    def confirm(self, lsn: int) -> None:
        """Let the next status update report ``lsn`` as flushed (never moves backwards)."""
        if lsn > self._confirmed:
            self._confirmed = lsn
            self._write(f"{lsn}\n")

    def reconnect(self) -> None:
        """Drop the replication connection and make a new one (a new generation); nothing is lost: what
        was not acknowledged is sent again. For a lost SQL connection: the server may be stopping, and a
        fast shutdown waits until this connection confirmed everything it was sent."""
        self._write(wire.RECONNECT.decode() + "\n")

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
        """Send the last acknowledged position and stop (the receiver process stops when its stdin ends)."""
        self._stop.set()
        process, self._process = self._process, None
        if process is not None:
            with self._stdin_lock, contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # --- the reader thread ---

    def _write(self, line: str) -> None:
        with self._stdin_lock:
            process = self._process
            if process is None or process.stdin is None:
                return
            with contextlib.suppress(OSError, ValueError):  # gone: its error or exit reaches take()
                process.stdin.write(line.encode())
                process.stdin.flush()

    def _put(self, item: Chunk | int) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self.status_interval_s)
                return True
            except queue.Full:
                continue  # backpressure: the pipe fills and the receiver process waits (and keeps alive)
        return False

    def _fail(self, error: BaseException) -> None:
        while True:  # make room: the error must reach the pipeline
            try:
                self._queue.put_nowait(error)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _error(self, body: bytes) -> BaseException:
        kind, detail = body[:1], body[1:].decode(errors="replace")
        if kind == wire.ERROR_IN_USE:
            return ReplicationSlotInUse(
                f"{self.source_id}: replication slot {self.slot_name} is in use by another "
                f"consumer (still after {self.slot_busy_timeout_s:.0f}s). A slot serves one "
                "consumer at a time: stop the other worker or run that streams it ("
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                f"WHERE slot_name = '{self.slot_name}' ends it), or give this source its own "
                "slot_name."
            )
        if kind == wire.ERROR_NO_SLOT:
            return PostgresSetupError(
                f"replication slot {self.slot_name} does not exist in {self.source_id}: run setup() "
                "(or the CDC job, which creates it) first"
            )
        if kind == wire.ERROR_LOST:
            return ReplicationLost(
                f"{self.source_id}: replication of slot {self.slot_name} lost and not "
                f"re-established within {self.reconnect_timeout_s:.0f}s ({detail}). Check that the "
                "server is up and accepts replication connections (pg_hba.conf), then run again: "
                "it resumes from the last committed watermark."
            )
        return ReplicationLost(
            f"{self.source_id}: the replication receiver of slot {self.slot_name} failed ({detail}; its "
            "traceback is on stderr). Run again: it resumes from the last committed watermark."
        )

    def _run(self, out: IO[bytes]) -> None:
        try:
            while True:
                head = out.read(wire.HEADER.size)
                if len(head) < wire.HEADER.size:
                    break
                kind, length = wire.HEADER.unpack(head)
                body = out.read(length) if length else b""
                if len(body) < length:
                    break
                if kind == b"M":
                    if not self._put(Chunk.parse(self.plugin, body)):
                        return
                elif kind == b"G":
                    generation, connections, self.reads_socket = wire.GENERATION.unpack(body)
                    # what the server said it sent counts per connection: the batcher drops what it holds
                    # of the old one, so an old wal_end would make it think it has caught up
                    self.wal_end = 0
                    self.generation, self.connections, self.connected = generation, connections, True
                    if not self._put(generation):
                        return
                elif kind == b"W":
                    self.wal_end = max(self.wal_end, wire.WAL_END.unpack(body)[0])
                elif kind == b"D":
                    self.connected = False
                    log.warning("%s: replication connection lost (%s)", self.source_id, body.decode())
                elif kind == b"E":
                    self.connected = False
                    self._fail(self._error(body))
                    return
        except (OSError, ValueError) as err:
            if not self._stop.is_set():
                self._fail(err)
            return
        finally:
            self.connected = False
        if not self._stop.is_set():
            process = self._process
            code = process.wait() if process is not None else None
            self._fail(
                ReplicationLost(
                    f"{self.source_id}: the replication receiver of slot {self.slot_name} exited (code "
                    f"{code}). Run again: it resumes from the last committed watermark."
                )
            )


class StreamBatcher:
    """Cuts the received messages into batches of whole transactions, or pieces of a large one.

    Example:
        >>> batcher = StreamBatcher(receiver, "pgoutput")  # doctest: +SKIP
        >>> batch = batcher.next_batch(50_000, target=current_lsn)  # doctest: +SKIP
    """

    def __init__(self, receiver: ReplicationReceiver, plugin: Plugin, *, idle_s: float = 2.0) -> None:
        self.receiver = receiver
        self.plugin: Plugin = plugin
        self.idle_s = idle_s
        self._generation = 0
        self._lsns: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self._data: list[bytes | memoryview] = []
        self._data_bytes = 0
        self._types = bytearray()
        self._first_at = 0.0
        self._relations: dict[bytes, tuple[int, bytes]] = {}
        self.largest_batch = 0
        """Most messages handed to the decoder at once (the memory bound, for tests and benchmarks)."""

    def _reset(self, generation: int) -> None:
        self._generation = generation
        self._lsns, self._starts, self._sizes, self._data, self._types = [], [], [], [], bytearray()
        self._data_bytes = 0
        self._relations.clear()

    def _add(self, chunk: Chunk) -> None:
        if chunk.generation != self._generation:
            return  # received on a connection that has since been replaced
        if not self._types:
            self._first_at = time.monotonic()
        self._lsns.append(chunk.lsns)
        self._starts.append(chunk.starts + self._data_bytes)
        self._sizes.append(chunk.sizes)
        self._data.append(chunk.data)
        self._data_bytes += len(chunk.data)
        self._types.extend(chunk.types)

    def _joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes | memoryview]:
        """The buffer as one array of positions, one of starts, one of sizes and one of bytes."""
        if len(self._lsns) != 1:
            none = np.zeros(0, np.int64)
            self._lsns = [np.concatenate(self._lsns) if self._lsns else none]
            self._starts = [np.concatenate(self._starts) if self._starts else none]
            self._sizes = [np.concatenate(self._sizes) if self._sizes else none]
            self._data = [b"".join(self._data)]
        return self._lsns[0], self._starts[0], self._sizes[0], self._data[0]

    def _last_commit_end(self) -> int:
        """Index just after the last Commit in the buffer (0 if none)."""
        return self._types.rfind(COMMIT) + 1

    def _cut_index(self, max_events: int) -> int | None:
        """Where to cut a full buffer: after the transaction that holds message ``max_events`` if it ends
        within ``2 * max_events`` messages (whole transactions, as a peek), else after the last Commit
        within ``max_events``, else at an LSN change past ``max_events``."""
        count = len(self._types)
        if count < max_events:
            return None
        crossing = self._types.find(COMMIT, max_events - 1, 2 * max_events) + 1
        if crossing:
            return crossing
        if count < 2 * max_events:
            return None  # the crossing transaction may still end within the bound
        whole = self._types.rfind(COMMIT, 0, max_events) + 1
        if whole:
            return whole
        lsns, _, _, _ = self._joined()
        changes = np.nonzero(lsns[max_events:] != lsns[max_events - 1 : -1])[0]
        return max_events + int(changes[0]) if len(changes) else None

    def _take(self, cut: int) -> StreamBatch:
        self._first_at = time.monotonic()
        if cut == 0:
            return _empty_batch()
        lsns, starts, sizes, data = self._joined()
        types = self._types
        end = int(starts[cut]) if cut < len(sizes) else len(data)
        rest_lsns, rest_sizes, rest_types = lsns[cut:], sizes[cut:], types[cut:]
        rest_data, rest_starts = data[end:], starts[cut:] - end
        begin = types.rfind(BEGIN, 0, cut)
        if begin >= 0 and types.find(COMMIT, begin, cut) < 0 and len(rest_lsns):
            # cut inside a transaction: the rest starts with its Begin again (commit position, xid, time)
            at, size = int(starts[begin]), int(sizes[begin])
            rest_lsns = np.concatenate([lsns[begin : begin + 1], rest_lsns])
            rest_sizes = np.concatenate([sizes[begin : begin + 1], rest_sizes])
            rest_starts = np.concatenate([np.zeros(1, np.int64), rest_starts + size])
            rest_data = b"".join([data[at : at + size], rest_data])
            rest_types = bytearray([BEGIN]) + rest_types
        self._lsns, self._starts, self._sizes, self._data = (
            [rest_lsns],
            [rest_starts],
            [rest_sizes],
            [rest_data],
        )
        self._data_bytes = len(rest_data)
        self._types = rest_types
        known: list[tuple[int, bytes]] = []
        if self.plugin == "pgoutput":
            # pgoutput sends a Relation once per connection: every batch starts with the ones known so far
            known = list(self._relations.values())
            i = types.find(RELATION, 0, cut)
            while i >= 0:
                at = int(starts[i])
                payload = bytes(data[at : at + int(sizes[i])])
                self._relations[payload[1:5]] = (int(lsns[i]), payload)
                i = types.find(RELATION, i + 1, cut)
        self.largest_batch = max(self.largest_batch, cut)
        known_sizes = np.array([len(p) for _, p in known], np.int64)
        known_bytes = int(known_sizes.sum())
        out_starts = np.concatenate([np.cumsum(known_sizes) - known_sizes, starts[:cut] + known_bytes])
        out_sizes = np.concatenate([known_sizes, sizes[:cut]])
        out_lsns = np.concatenate([np.array([lsn for lsn, _ in known], np.int64), lsns[:cut]])
        joined = b"".join([*(p for _, p in known), data[:end], bytes(WINDOW)])
        return StreamBatch(joined, out_starts, out_sizes, out_lsns, cut)

    def next_batch(
        self, max_events: int, *, target: int | None = None, linger_s: float | None = None
    ) -> StreamBatch:
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
                if not self._types and now - started >= linger_s:
                    return self._take(0)
            else:
                at_boundary = whole == len(self._types)
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
