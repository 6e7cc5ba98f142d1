"""The replication receiver's own process: streams one slot and writes framed chunks of messages to stdout.

Started by :class:`hybrid_dagster.cdc.sources.postgres.stream.ReplicationReceiver` as
``python -P <this file>`` (no package import: it starts in a fraction of a second and needs only psycopg2
and numpy). Reading the socket in its own process keeps it off the pipeline's interpreter lock: psycopg2
releases the lock around every socket read, and a thread that releases it hundreds of times a second
waits for it again behind a busy apply each time (measured: the receive ran 3.4 times slower next to a
busy thread).

**How the socket is read.** psycopg2 connects and authenticates; on an unencrypted connection (a unix
socket, or TCP without SSL or GSS encryption, as the server reports it) this process then sends
``START_REPLICATION`` and reads the COPY stream from the socket itself: it receives whatever piled up,
splits the protocol messages of a whole buffer at once with numpy (:func:`split_messages`) and hands
the buffer over as is, with each payload's start and size. psycopg2's ``read_message`` makes a Python
object per message and the walsender writes one message per ``send()``: at 300,000 messages a second
that cost about as much CPU as the walsender itself (measured: a 2,000,000-change backlog streamed in
6.7 s either way, with 4.2 CPU-s for psycopg2's loop). On an encrypted connection the bytes on the socket
are not the protocol's, and psycopg2's ``read_message`` reads them.

Correctness rules (the same as the module :mod:`.stream` states):

* The configuration (DSN included, so never in argv) is the first line on stdin, as JSON. Every later
  line is an acknowledged position; the flush position of a status update is never anything else, except
  that a keepalive's WAL end becomes the flush position when everything received had been acknowledged
  (the WAL in between holds nothing for this slot: psycopg2's rule, kept on both paths).
  End of stdin (the pipeline closed it, or died) means stop: send the last acknowledged position, exit.
  A ``reconnect`` line drops the connection and makes a new one (the pipeline lost its SQL connection: a
  fast shutdown of the server waits for this connection to confirm all it was sent, which the pipeline
  cannot do without SQL, so letting go is what lets the server stop).
* Every (re)connection starts at the last acknowledged position and is announced (``G`` frame, a new
  generation) before its first chunk, so the pipeline drops what an earlier connection sent.
* A message is handed over only whole. :func:`split_messages` returns exactly the messages a sequential
  walk of the length prefixes returns: a run found by searching the buffer is kept only where each
  message ends where the next begins, and anything else is walked one message at a time. A length that
  cannot be a message stops the connection (it is made again), it is never skipped.
* Writes to stdout wait for room (the pipeline's queue is full: backpressure); while waiting, a status
  update goes out every ``status_interval`` so the walsender's timeout does not fire.
* Errors go out as an ``E`` frame with a kind the pipeline turns into its error class; messages carry
  names, classes and SQLSTATEs, never a message text from the server (it may quote a value).

Frames: one kind byte and a little-endian uint64 length, then the body. A chunk (``M``) is
:data:`CHUNK_HEAD`, then the messages' positions, starts and sizes (int64 each) and the buffer they lie in.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

import numpy as np
import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import LogicalReplicationConnection

HEADER = struct.Struct("<cQ")
CHUNK_HEAD = struct.Struct("<QQQ")
"""generation, wal_end, messages; then the positions, the starts and the sizes (int64) and the buffer."""
GENERATION = struct.Struct("<QQ?")  # generation, connections, whether this process reads the socket
WAL_END = struct.Struct("<Q")
FILL_S = 0.05
"""A chunk goes out once it holds ``chunk_bytes``, or once this long after the last one went out."""
POLL_S = 0.0002
"""While messages arrive, wait this long between reads: the walsender writes one message per ``send()``
and a socket holds only a few hundred of them, so waiting for each one costs a wake-up per handful of
messages, and waiting much longer than this lets the socket fill and the walsender stall."""
RECV_BYTES = 1 << 20
OUTBOX_BYTES = 16 << 20
"""Frames queued for stdout beyond which :meth:`Receiver.send` waits (and the socket is not read)."""
ERROR_IN_USE, ERROR_NO_SLOT, ERROR_LOST, ERROR_OTHER = b"u", b"s", b"l", b"o"
RECONNECT = b"reconnect"
PG_EPOCH_S = 946_684_800
UNDEFINED_OBJECT, OBJECT_IN_USE = "42704", "55006"

# --- the protocol (PostgreSQL manual, "Frontend/Backend Protocol" and "Streaming Replication Protocol") ---

COPY_DATA, XLOG_DATA, KEEPALIVE = ord("d"), ord("w"), ord("k")
MESSAGE_HEAD = struct.Struct(">cI")  # type, length (counting itself, not the type byte)
XLOG_HEAD = struct.Struct(">cIcQQq")  # 'd', length, 'w', data start, WAL end, send time
KEEPALIVE_MESSAGE = struct.Struct(">cIcQqB")  # 'd', length, 'k', WAL end, send time, reply requested
STATUS_UPDATE = struct.Struct(">cIcQQQqB")  # 'd', length, 'r', written, flushed, applied, clock, reply
_MIN_LENGTH = {XLOG_DATA: XLOG_HEAD.size - 1, KEEPALIVE: KEEPALIVE_MESSAGE.size - 1}
"""Length fields of CopyData messages of each kind (at least, for XLogData)."""


class Stop(Exception):
    """stdin ended: the pipeline closed the receiver (or is gone)."""


class Reconnect(Exception):
    """The pipeline asked for a new connection (its SQL connection was lost: the server may be stopping)."""


class ConnectionLost(Exception):
    """The server closed the stream, ended it, or sent what is not the protocol: connect again."""


class ServerError(Exception):
    """An ErrorResponse; only its SQLSTATE is kept (the message text may quote a value)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _be(view: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The big-endian unsigned integers of ``width`` bytes (2, 4 or 8) at byte offsets ``at`` (each with
    ``width`` bytes in ``view``), as int64: :func:`..types.values_at`'s gather, written again because this
    process imports no module of the package."""
    every_byte = np.ndarray((len(view) - width + 1,), dtype=f">u{width}", buffer=view, strides=(1,))
    return every_byte[at].astype(np.int64)


def split_messages(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the complete protocol messages at the front of ``view`` (a uint8 array that
    begins at a message boundary), in order; the bytes after the last end are an incomplete message.

    Candidates are searched all at once: a ``d`` whose CopyData payload starts with ``w`` or ``k`` and
    whose length fits that kind. A run of candidates is kept where every message ends where the next
    begins (so every kept start is a true boundary, whatever the payloads hold); where it breaks (a
    candidate inside a payload, a message of another type), one message is walked from its length and the
    search goes on from there.

    Example:
        >>> msg = b"d" + struct.pack(">I", 22) + b"k" + bytes(17)
        >>> split_messages(np.frombuffer(msg * 2 + msg[:9], np.uint8))
        (array([ 0, 23]), array([23, 46]))
    """
    n = len(view)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    chain = chain_end = breaks = np.zeros(0, np.int64)
    if n >= 6:
        cand = np.flatnonzero(view[: n - 5] == COPY_DATA)
        sub = view[cand + 5]
        kind_fits = (sub == XLOG_DATA) | (sub == KEEPALIVE)
        cand, sub = cand[kind_fits], sub[kind_fits]
        length = _be(view, cand + 1, 4)
        fits = np.where(sub == XLOG_DATA, length >= _MIN_LENGTH[XLOG_DATA], length == _MIN_LENGTH[KEEPALIVE])
        cand, length = cand[fits], length[fits]
        nxt = cand + 1 + length
        at = np.searchsorted(cand, nxt)
        hit = at < len(cand)
        hit[hit] = cand[at[hit]] == nxt[hit]
        pointed = np.zeros(len(cand), bool)
        pointed[at[hit]] = True
        chain, chain_end = cand[pointed], nxt[pointed]
        breaks = np.flatnonzero(chain_end[:-1] != chain[1:])
    pos = 0
    while pos + MESSAGE_HEAD.size <= n:
        i = int(np.searchsorted(chain, pos))
        if i < len(chain) and chain[i] == pos:
            k = int(np.searchsorted(breaks, i))
            last = int(breaks[k]) if k < len(breaks) else len(chain) - 1
            run_end = chain_end[i : last + 1]
            whole = int(np.searchsorted(run_end, n, side="right"))  # ends grow along a verified run
            starts.append(chain[i : i + whole])
            ends.append(run_end[:whole])
            if whole <= last - i:
                break  # the run's next message is incomplete
            pos = int(run_end[-1])
            continue
        _, length = MESSAGE_HEAD.unpack_from(view.data, pos)
        if length < 4:
            raise ConnectionLost(f"a message of length {length} at byte {pos} of the stream")
        if pos + 1 + length > n:
            break
        starts.append(np.array([pos], np.int64))
        ends.append(np.array([pos + 1 + length], np.int64))
        pos += 1 + length
    if not starts:
        none = np.zeros(0, np.int64)
        return none, none
    return np.concatenate(starts), np.concatenate(ends)


def _sqlstate(body: bytes) -> str:
    """The SQLSTATE (field ``C``) of an ErrorResponse body."""
    for field in body.split(b"\0"):
        if field[:1] == b"C":
            return field[1:].decode("ascii", "replace")
    return ""


class Receiver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.confirmed = int(config["start_lsn"])
        self.sent = 0
        self.status_interval = float(config["status_interval_s"])
        self.chunk_bytes = int(config["chunk_bytes"])
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self._pending = b""
        self.cur: Any = None
        self.sock: socket.socket | None = None
        self.reconnect = False
        self.last_data_start = 0
        """Start of the last XLogData received on this connection (psycopg2's keepalive rule)."""
        self.flushed = 0
        """The flush position last reported on this connection (the raw path)."""
        self.status_at = 0.0
        self._outbox: collections.deque[memoryview] = collections.deque()
        self._outbox_bytes = 0
        self._raw_rest = b""
        """What was read past the reply to ``START_REPLICATION`` (the stream's first bytes)."""

    # --- the pipeline's side ---

    def poll_stdin(self) -> None:
        """Read the acknowledged positions that arrived (raises :class:`Stop` at end of input)."""
        while True:
            try:
                data = os.read(self.stdin, 65536)
            except BlockingIOError:
                return
            if not data:
                raise Stop
            *lines, self._pending = (self._pending + data).split(b"\n")
            for line in lines:
                if line.strip() == RECONNECT:
                    self.reconnect = True
                elif line.strip():
                    self.confirmed = max(self.confirmed, int(line))

    def send(self, kind: bytes, *parts: bytes | memoryview) -> None:
        """Queue a frame for stdout and write what the pipe takes now. Waits only while more than
        :data:`OUTBOX_BYTES` are queued (backpressure): below that the socket keeps being read while the
        pipeline is busy, so a pipeline that is late by a moment does not stall the walsender."""
        views = [memoryview(bytes(p)) for p in parts]  # copies: a part may lie in the receive buffer
        size = sum(len(v) for v in views)
        self._outbox.append(memoryview(HEADER.pack(kind, size)))
        self._outbox.extend(views)
        self._outbox_bytes += HEADER.size + size
        self.write_out()
        while self._outbox_bytes > OUTBOX_BYTES:
            readable, writable, _ = select.select([self.stdin], [self.stdout], [], self.status_interval)
            if readable:
                self.poll_stdin()
            if not writable:  # backpressure: keep the walsender's timeout away
                self.feedback(force=True)
            self.write_out()

    def write_out(self) -> None:
        """Write queued frames while the pipe takes them (never waits)."""
        outbox = self._outbox
        while outbox:
            try:
                written = os.writev(self.stdout, list(itertools.islice(outbox, 64)))
            except BlockingIOError:
                return
            self._outbox_bytes -= written
            while outbox and written >= len(outbox[0]):
                written -= len(outbox.popleft())
            if written:
                outbox[0] = outbox[0][written:]

    def drain_out(self, timeout_s: float) -> None:
        """Write every queued frame, waiting up to ``timeout_s`` (before the process exits)."""
        deadline = time.monotonic() + timeout_s
        while self._outbox and time.monotonic() < deadline:
            select.select([], [self.stdout], [], max(deadline - time.monotonic(), 0))
            self.write_out()

    def send_chunk(
        self,
        generation: int,
        wal_end: int,
        lsns: np.ndarray,
        starts: np.ndarray,
        sizes: np.ndarray,
        data: Any,
    ) -> None:
        head = CHUNK_HEAD.pack(generation, wal_end, len(lsns))
        arrays = [a.astype("<i8").tobytes() for a in (lsns, starts, sizes)]
        self.send(b"M", head, *arrays, data)

    def feedback(self, *, force: bool = False) -> None:
        """Report the acknowledged position (now when ``force``, else when it moved or is due)."""
        if self.sock is not None:
            due = time.monotonic() - self.status_at >= self.status_interval
            if self.confirmed > self.flushed or force or due:
                self._status_update(max(self.confirmed, self.flushed))
        elif self.cur is not None:
            confirmed = self.confirmed
            if confirmed > self.sent or force:
                self.cur.send_feedback(write_lsn=confirmed, flush_lsn=confirmed, force=True)
                self.sent = confirmed

    def _status_update(self, flush: int) -> None:
        assert self.sock is not None
        clock = int((time.time() - PG_EPOCH_S) * 1_000_000)
        message = STATUS_UPDATE.pack(b"d", STATUS_UPDATE.size - 1, b"r", flush, flush, flush, clock, 0)
        view = memoryview(message)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                select.select([], [self.sock], [], self.status_interval)
            except OSError as err:
                raise ConnectionLost(type(err).__name__) from None
        self.flushed, self.status_at = flush, time.monotonic()

    # --- the replication side ---

    def run(self) -> None:
        cfg = self.config
        down_since: float | None = None
        busy_since: float | None = None
        delay, generation, connections = 0.1, 0, 0
        while True:
            conn: Any = None
            self.cur, self.sock = None, None
            try:
                self.poll_stdin()
                conn = psycopg2.connect(cfg["dsn"], connection_factory=LogicalReplicationConnection)
                raw = cfg.get("raw_socket", True) and not self._encrypted(conn)
                if raw:
                    self._start_raw(conn)
                else:
                    self._start_libpq(conn)
                generation += 1
                connections += 1
                self.send(b"G", GENERATION.pack(generation, connections, raw))
                down_since, busy_since, delay = None, None, 0.1
                if raw:
                    self.stream_raw(generation)
                else:
                    self.stream_libpq(conn, generation)
            except (psycopg2.errors.ObjectInUse, psycopg2.errors.UndefinedObject, ServerError) as err:
                code = err.sqlstate if isinstance(err, ServerError) else err.pgcode
                if code == UNDEFINED_OBJECT:
                    self.send(b"E", ERROR_NO_SLOT)
                    return
                if code == OBJECT_IN_USE:
                    busy_since = busy_since or time.monotonic()
                    if time.monotonic() - busy_since >= cfg["slot_busy_timeout_s"]:
                        self.send(b"E", ERROR_IN_USE)
                        return
                else:
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since >= cfg["reconnect_timeout_s"]:
                        self.send(b"E", ERROR_LOST + f"server error {code}".encode())
                        return
                    self.send(b"D", f"server error {code}; reconnecting in {delay:.1f}s".encode())
            except Reconnect:
                # a fast shutdown waits until this connection confirmed all it was sent, which the pipeline
                # cannot do while the server refuses its SQL: let go (what was not acknowledged comes again)
                down_since = down_since or time.monotonic()
                self.send(b"D", f"the server is going away; reconnecting in {delay:.1f}s".encode())
            except (
                psycopg2.OperationalError,
                psycopg2.InterfaceError,
                psycopg2.DatabaseError,
                ConnectionLost,
            ) as err:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since >= cfg["reconnect_timeout_s"]:
                    self.send(b"E", ERROR_LOST + type(err).__name__.encode())
                    return
                # no message text: it may quote a value; the class and SQLSTATE say what happened
                code = getattr(err, "pgcode", None) or ""
                note = f"{type(err).__name__} {code}; reconnecting in {delay:.1f}s"
                self.send(b"D", note.encode())
            finally:
                self._let_go(conn)
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                if select.select([self.stdin], [], [], left)[0]:
                    self.poll_stdin()
            self.reconnect = False  # asked while not connected: the next connection is new anyway
            delay = min(delay * 2, 5.0)

    def _let_go(self, conn: Any) -> None:
        """Report the last acknowledged position and close the connection."""
        if conn is None:
            return
        with contextlib.suppress(psycopg2.Error, ConnectionLost, OSError):
            if self.sock is not None or self.cur is not None:
                self.feedback(force=True)
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()  # a duplicate of the connection's descriptor
        with contextlib.suppress(psycopg2.Error):
            conn.close()

    @staticmethod
    def _encrypted(conn: Any) -> bool:
        """Whether the connection is encrypted (SSL or GSS), as the server sees it; True when unknown."""
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), true)"
                    " OR coalesce((SELECT encrypted FROM pg_stat_gssapi WHERE pid = pg_backend_pid()), true)"
                )
                row = cur.fetchone()
        except psycopg2.ProgrammingError:  # a server before 12 (no pg_stat_gssapi): let psycopg2 read
            return True
        return bool(row[0]) if row else True

    def _start_libpq(self, conn: Any) -> None:
        cur = conn.cursor()
        cur.start_replication(
            slot_name=self.config["slot_name"],
            decode=False,
            start_lsn=self.confirmed,
            options=self.config["options"],
            status_interval=self.status_interval,
        )
        self.cur, self.sent = cur, 0

    def _start_raw(self, conn: Any) -> None:
        """Send ``START_REPLICATION`` on the connection's socket and wait for the COPY stream to begin."""
        options = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(str(v)))
            for k, v in self.config["options"].items()
        )
        lsn = f"{self.confirmed >> 32:X}/{self.confirmed & 0xFFFFFFFF:X}"
        command = sql.SQL("START_REPLICATION SLOT {} LOGICAL {}").format(
            sql.Identifier(self.config["slot_name"]), sql.SQL(lsn)
        )
        if self.config["options"]:
            command = sql.SQL("{} ({})").format(command, options)
        text = command.as_string(conn).encode() + b"\0"
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))
        self.sock.settimeout(None)
        self.sock.sendall(b"Q" + struct.pack(">I", len(text) + 4) + text)
        self.last_data_start, self.flushed, self.status_at = 0, 0, time.monotonic()
        self._raw_rest = b""
        while True:  # the reply: CopyBothResponse, or an ErrorResponse (notices may come first)
            kind, body = self._read_message()
            if kind == b"W":
                break
            if kind == b"E":
                raise ServerError(_sqlstate(body))
        self.sock.setblocking(False)

    def _read_message(self) -> tuple[bytes, bytes]:
        """One whole message, blocking (only before the stream starts)."""
        assert self.sock is not None
        data = self._raw_rest
        while True:
            if len(data) >= MESSAGE_HEAD.size:
                kind, length = MESSAGE_HEAD.unpack_from(data)
                if length < 4:
                    raise ConnectionLost(f"a message of length {length}")
                if len(data) >= 1 + length:
                    self._raw_rest = data[1 + length :]
                    return kind, data[MESSAGE_HEAD.size : 1 + length]
            more = self.sock.recv(RECV_BYTES)
            if not more:
                raise ConnectionLost("the server closed the connection")
            data += more

    def stream_raw(self, generation: int) -> None:
        """Receive until the connection ends (raises) or stdin ends (:class:`Stop`)."""
        assert self.sock is not None
        sock = self.sock
        buf = bytearray(max(4 * RECV_BYTES, 2 * self.chunk_bytes))
        have = len(self._raw_rest)
        buf[:have] = self._raw_rest
        wal_end = reported = 0
        flushed_at = time.monotonic()
        while True:
            if len(buf) - have < RECV_BYTES:
                buf.extend(bytes(len(buf)))  # one message larger than the buffer: grow
            try:
                got = sock.recv_into(memoryview(buf)[have:])
            except BlockingIOError:
                got = -1
            except OSError as err:
                raise ConnectionLost(type(err).__name__) from None
            if got == 0:
                raise ConnectionLost("the server closed the connection")
            have += max(got, 0)
            now = time.monotonic()
            if have and (got < 0 or have >= self.chunk_bytes or now - flushed_at >= FILL_S):
                have, wal_end = self._hand_over(generation, buf, have, wal_end)
                flushed_at = now
                self.poll_stdin()
                if self.reconnect:
                    self.reconnect = False
                    raise Reconnect
                self.feedback()
            self.write_out()
            if got > 0:
                time.sleep(POLL_S)  # let messages pile up (see POLL_S)
                continue
            self.poll_stdin()
            if self.reconnect:
                self.reconnect = False
                raise Reconnect
            self.feedback()
            if wal_end > reported:
                reported = wal_end
                self.send(b"W", WAL_END.pack(wal_end))
            pending = [self.stdout] if self._outbox else []
            if select.select([sock, self.stdin], pending, [], 0.05)[0]:
                self.poll_stdin()

    def _hand_over(self, generation: int, buf: bytearray, have: int, wal_end: int) -> tuple[int, int]:
        """Send the whole messages of ``buf[:have]`` as a chunk and keep the rest; returns the bytes kept
        and the server's WAL end."""
        view = np.frombuffer(buf, np.uint8, have)
        starts, ends = split_messages(view)
        if not len(starts):
            return have, wal_end
        received = self._take_more(buf, have)  # between the steps: see _take_more
        used = int(ends[-1])
        kinds = view[starts]
        sub = view[np.minimum(starts + 5, have - 1)]
        xlog = (kinds == COPY_DATA) & (sub == XLOG_DATA)
        if (ends[xlog] - starts[xlog] < XLOG_HEAD.size).any():
            raise ConnectionLost("an XLogData message shorter than its header")
        lsns = np.zeros(0, np.int64)
        if xlog.any():
            at = starts[xlog]
            lsns = _be(view, at + 6, 8)
            self.last_data_start = int(lsns[-1])
            wal_end = max(wal_end, int(_be(view, at[-1:] + 14, 8)[0]))
        for i in np.flatnonzero(~xlog):
            wal_end = self._control(bytes(view[starts[i] : ends[i]]), wal_end)
        if len(lsns):
            at = starts[xlog]
            payload_at = at + XLOG_HEAD.size
            self.send_chunk(generation, wal_end, lsns, payload_at, ends[xlog] - payload_at, view[:used].data)
        received = self._take_more(buf, received)
        rest = received - used
        buf[:rest] = buf[used:received]
        return rest, wal_end

    def _take_more(self, buf: bytearray, have: int) -> int:
        """Read what the socket holds into the free end of ``buf`` (never waits, never grows it) and
        return the bytes held. A hand-over takes a few milliseconds and the socket fills in under one:
        reading between its steps keeps the walsender's writes from stalling on a full socket."""
        assert self.sock is not None
        try:
            got = self.sock.recv_into(memoryview(buf)[have:])
        except BlockingIOError:
            return have
        except OSError as err:
            raise ConnectionLost(type(err).__name__) from None
        if got == 0 and have < len(buf):
            raise ConnectionLost("the server closed the connection")
        return have + got

    def _control(self, message: bytes, wal_end: int) -> int:
        """A message that is not XLogData: a keepalive (answered when asked), an error, the stream's end."""
        kind = message[:1]
        if kind == b"d" and len(message) > 5 and message[5] == KEEPALIVE:
            if len(message) != KEEPALIVE_MESSAGE.size:
                raise ConnectionLost(f"a keepalive of {len(message)} bytes")
            _, _, _, end, _, reply = KEEPALIVE_MESSAGE.unpack(message)
            if self.confirmed >= self.last_data_start and end > self.confirmed and end > self.flushed:
                self.flushed = end  # everything received was acknowledged: the WAL up to end holds nothing
            if reply:
                self.feedback(force=True)
            return max(wal_end, end)
        if kind == b"E":
            raise ServerError(_sqlstate(message[MESSAGE_HEAD.size :]))
        if kind in (b"N", b"S", b"A"):  # a notice, a parameter status, a notification
            return wal_end
        if kind == b"c":
            raise ConnectionLost("the server ended the stream")
        raise ConnectionLost(f"an unexpected message {kind!r} in the stream")

    def stream_libpq(self, conn: Any, generation: int) -> None:
        """The encrypted connection's path: psycopg2 reads one message at a time."""
        cur = self.cur
        limit = self.chunk_bytes
        read = cur.read_message
        lsns: list[int] = []
        payloads: list[bytes] = []
        size = 0
        wal_end = 0
        flushed = time.monotonic()
        while True:
            msg = read()
            if msg is not None:
                lsns.append(msg.data_start)
                payloads.append(msg.payload)
                size += len(msg.payload)
                if size < limit:
                    continue
            elif lsns and time.monotonic() - flushed < FILL_S:
                # fill the chunk: a frame per network packet is too many, and waking up for each packet
                # costs both sides more than letting a millisecond of messages pile up in the socket
                time.sleep(0.001)
                continue
            if lsns:
                sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
                starts = np.cumsum(sizes) - sizes
                self.send_chunk(
                    generation, int(cur.wal_end), np.array(lsns, np.int64), starts, sizes, b"".join(payloads)
                )
                lsns, payloads, size = [], [], 0
                flushed = time.monotonic()
            self.poll_stdin()
            if self.reconnect:
                self.reconnect = False
                raise Reconnect
            self.feedback()
            if msg is None:
                if int(cur.wal_end) > wal_end:
                    wal_end = int(cur.wal_end)
                    self.send(b"W", WAL_END.pack(wal_end))
                self.write_out()
                pending = [self.stdout] if self._outbox else []
                if select.select([conn, self.stdin], pending, [], 0.05)[0]:
                    self.poll_stdin()


def main() -> None:
    line = b""
    while not line.endswith(b"\n"):  # unbuffered: what follows the line is read by Receiver.poll_stdin
        byte = os.read(sys.stdin.fileno(), 1)
        if not byte:
            return
        line += byte
    config = json.loads(line)
    receiver = Receiver(config)
    try:
        receiver.run()  # returns after an E frame: it must reach the pipeline
        receiver.drain_out(30.0)
    except (Stop, BrokenPipeError):
        pass
    except BaseException as err:  # a bug here: the pipeline raises it as a lost replication
        with contextlib.suppress(OSError, Stop):
            receiver.send(b"E", ERROR_OTHER + type(err).__name__.encode())
            receiver.drain_out(30.0)
        raise


if __name__ == "__main__":
    main()
