"""The replication receiver's own process: streams one slot and writes framed chunks of messages to stdout.

Started by :class:`hybrid_dagster.cdc.sources.postgres.stream.ReplicationReceiver` as
``python -P <this file>`` (no package import: it starts in a fraction of a second and needs only psycopg2).
Reading the socket in its own process keeps it off the pipeline's interpreter lock: psycopg2 releases the
lock around every socket read, and a thread that releases it hundreds of times a second waits for it
again behind a busy apply each time (measured: the receive ran 3.4 times slower next to a busy thread).

Correctness rules (the same as the module :mod:`.stream` states):

* The configuration (DSN included, so never in argv) is the first line on stdin, as JSON. Every later
  line is an acknowledged position; the flush position of a status update is never anything else.
  End of stdin (the pipeline closed it, or died) means stop: send the last acknowledged position, exit.
  A ``reconnect`` line drops the connection and makes a new one (the pipeline lost its SQL connection: a
  fast shutdown of the server waits for this connection to confirm all it was sent, which the pipeline
  cannot do without SQL, so letting go is what lets the server stop).
* Every (re)connection starts at the last acknowledged position and is announced (``G`` frame, a new
  generation) before its first chunk, so the pipeline drops what an earlier connection sent.
* Writes to stdout wait for room (the pipeline's queue is full: backpressure); while waiting, a status
  update goes out every ``status_interval`` so the walsender's timeout does not fire.
* Errors go out as an ``E`` frame with a kind the pipeline turns into its error class; messages carry
  names and classes, never a message text from the server (it may quote a value).

Frames: one kind byte and a little-endian uint64 length, then the body.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import sys
import time
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.extras import LogicalReplicationConnection

HEADER = struct.Struct("<cQ")
CHUNK_HEAD = struct.Struct("<QQQ")
"""generation, wal_end, messages; then the positions (int64), the sizes (int64) and the payloads."""
GENERATION = struct.Struct("<QQ")  # generation, connections
WAL_END = struct.Struct("<Q")
FILL_S = 0.05
"""A chunk goes out once full, or once this long after the last one went out."""
ERROR_IN_USE, ERROR_NO_SLOT, ERROR_LOST, ERROR_OTHER = b"u", b"s", b"l", b"o"
RECONNECT = b"reconnect"


class Stop(Exception):
    """stdin ended: the pipeline closed the receiver (or is gone)."""


class Reconnect(Exception):
    """The pipeline asked for a new connection (its SQL connection was lost: the server may be stopping)."""


class Receiver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.confirmed = int(config["start_lsn"])
        self.sent = 0
        self.status_interval = float(config["status_interval_s"])
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self._pending = b""
        self.cur: Any = None
        self.reconnect = False

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

    def send(self, kind: bytes, body: bytes | memoryview = b"") -> None:
        view = memoryview(HEADER.pack(kind, len(body)) + bytes(body))
        while view:
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(self.stdout, view) :]
            if not view:
                return
            readable, writable, _ = select.select([self.stdin], [self.stdout], [], self.status_interval)
            if readable:
                self.poll_stdin()
            if not writable and self.cur is not None:  # backpressure: keep the walsender's timeout away
                self.feedback(force=True)

    def feedback(self, *, force: bool = False) -> None:
        confirmed = self.confirmed
        if confirmed > self.sent or force:
            self.cur.send_feedback(write_lsn=confirmed, flush_lsn=confirmed, force=True)
            self.sent = confirmed

    # --- the replication side ---

    def run(self) -> None:
        cfg = self.config
        down_since: float | None = None
        busy_since: float | None = None
        delay, generation, connections = 0.1, 0, 0
        while True:
            conn: Any = None
            self.cur = None
            try:
                self.poll_stdin()
                conn = psycopg2.connect(cfg["dsn"], connection_factory=LogicalReplicationConnection)
                cur = conn.cursor()
                cur.start_replication(
                    slot_name=cfg["slot_name"],
                    decode=False,
                    start_lsn=self.confirmed,
                    options=cfg["options"],
                    status_interval=self.status_interval,
                )
                self.cur, self.sent = cur, 0
                generation += 1
                connections += 1
                self.send(b"G", GENERATION.pack(generation, connections))
                down_since, busy_since, delay = None, None, 0.1
                self.stream(conn, cur, generation)
            except psycopg2.errors.ObjectInUse:
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since >= cfg["slot_busy_timeout_s"]:
                    self.send(b"E", ERROR_IN_USE)
                    return
            except psycopg2.errors.UndefinedObject:
                self.send(b"E", ERROR_NO_SLOT)
                return
            except Reconnect:
                # a fast shutdown waits until this connection confirmed all it was sent, which the pipeline
                # cannot do while the server refuses its SQL: let go (what was not acknowledged comes again)
                down_since = down_since or time.monotonic()
                self.send(b"D", f"the server is going away; reconnecting in {delay:.1f}s".encode())
            except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError) as err:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since >= cfg["reconnect_timeout_s"]:
                    self.send(b"E", ERROR_LOST + type(err).__name__.encode())
                    return
                # no message text: it may quote a value; the class and SQLSTATE say what happened
                code = getattr(err, "pgcode", None) or ""
                note = f"{type(err).__name__} {code}; reconnecting in {delay:.1f}s"
                self.send(b"D", note.encode())
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        if self.cur is not None:
                            self.feedback(force=True)  # the last acknowledged position
                        conn.close()
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                if select.select([self.stdin], [], [], left)[0]:
                    self.poll_stdin()
            self.reconnect = False  # asked while not connected: the next connection is new anyway
            delay = min(delay * 2, 5.0)

    def stream(self, conn: Any, cur: Any, generation: int) -> None:
        limit = int(self.config["chunk_messages"])
        read = cur.read_message
        lsns: list[int] = []
        payloads: list[bytes] = []
        wal_end = 0
        flushed = time.monotonic()
        while True:
            msg = read()
            if msg is not None:
                lsns.append(msg.data_start)
                payloads.append(msg.payload)
                if len(lsns) < limit:
                    continue
            elif lsns and time.monotonic() - flushed < FILL_S:
                # fill the chunk: a frame per network packet is too many, and waking up for each packet
                # costs both sides more than letting a millisecond of messages pile up in the socket
                time.sleep(0.001)
                continue
            if lsns:
                self.send_chunk(generation, int(cur.wal_end), lsns, payloads)
                lsns, payloads = [], []
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
                if select.select([conn, self.stdin], [], [], 0.05)[0]:
                    self.poll_stdin()

    def send_chunk(self, generation: int, wal_end: int, lsns: list[int], payloads: list[bytes]) -> None:
        count = len(lsns)
        body = b"".join(
            [
                CHUNK_HEAD.pack(generation, wal_end, count),
                struct.pack(f"<{count}q", *lsns),
                struct.pack(f"<{count}q", *map(len, payloads)),
                *payloads,
            ]
        )
        self.send(b"M", body)


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
        receiver.run()
    except (Stop, BrokenPipeError):
        pass
    except BaseException as err:  # a bug here: the pipeline raises it as a lost replication
        with contextlib.suppress(OSError, Stop):
            receiver.send(b"E", ERROR_OTHER + type(err).__name__.encode())
        raise


if __name__ == "__main__":
    main()
