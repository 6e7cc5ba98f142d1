"""How the OpenLineage sensor hands its events to openlineage-python: in this process, or in a process of
their own that serializes and sends them while the sensor reads on.

Both emitters take a tick's events in order (``emit``) and then say how it went (``finish``): how many
of the tick's events the transport accepted - always a prefix of them, in order - the retries, and the
failure that stopped the rest. The sensor stores the cursor after that prefix only.

- :class:`RetryingEmitter` calls ``client.emit`` here, each event with retries and exponential backoff;
  after an event's last attempt it raises :class:`EmitStopped` so the tick stops reading. It serves a
  client the caller built (``openlineage_sensor(client=...)``).
- :class:`ProcessEmitter` runs the same delivery loop in its own process
  (:mod:`hybrid_dagster.sensors.lineage_wire`) with a client configured from the transport mapping or
  openlineage-python's own configuration; ``emit`` only queues the pickled event (a thread writes it to
  the process), so reading, building and serializing run on two cores. The process lives across ticks
  and is restarted if it died; a tick whose process dies before replying stores no cursor (the tick is
  sent again, as after a crash of the sensor).

Example:
    .. code-block:: python

        emitter = ProcessEmitter(transport={"type": "file", "log_file_path": "lineage.jsonl"})
        for event in events:
            emitter.emit(event)
        delivery = emitter.finish()
        assert delivery.failure is None and delivery.delivered == len(events)
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import queue
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import attr
from openlineage.client import OpenLineageClient, event_v2

import hybrid_dagster.sensors.lineage_wire as wire
from hybrid_dagster.errors import LineageEmitError


@dataclass(frozen=True)
class Delivery:
    """What the transport accepted of one tick's events.

    Example:
        >>> Delivery(delivered=3, retries=1, kind="http").failure is None
        True
    """

    delivered: int
    """Events accepted: the first ``delivered`` the tick emitted."""
    retries: int
    kind: str
    """The transport's kind (``http``, ``file``, ...)."""
    failure: str | None = None
    """The error of the event the transport refused at its last attempt (then nothing after it was sent)."""
    attempts: int = 0


class EmitStopped(Exception):
    """An event was refused at its last attempt: the tick emits nothing more."""


@dataclass
class RetryingEmitter:
    """Hands events to an OpenLineage client in this process, each with retries and exponential backoff.

    Example:
        >>> emitter = RetryingEmitter(OpenLineageClient(config={"transport": {"type": "console"}}))
    """

    client: OpenLineageClient
    attempts: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    delivered: int = 0
    retries: int = 0
    failure: wire.EmitFailed | None = field(default=None, repr=False)

    def emit(self, event: event_v2.RunEvent) -> None:
        try:
            self.retries += wire.emit_with_retries(
                self.client,
                event,
                attempts=self.attempts,
                backoff_seconds=self.backoff_seconds,
                max_backoff_seconds=self.max_backoff_seconds,
                sleep=self.sleep,
            )
        except wire.EmitFailed as failed:
            self.failure = failed
            self.retries += failed.attempts - 1
            raise EmitStopped(str(failed)) from failed
        self.delivered += 1

    def finish(self) -> Delivery:
        failed, self.failure = self.failure, None
        delivery = Delivery(
            delivered=self.delivered,
            retries=self.retries,
            kind=wire.transport_kind(self.client),
            failure=str(failed) if failed is not None else None,
            attempts=failed.attempts if failed is not None else 0,
        )
        self.delivered = self.retries = 0
        return delivery


class _Child:
    """The emitter process, the queue of frames for it and the thread that writes them."""

    def __init__(self, config: bytes) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-P", wire.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdout = self.process.stdout
        self.frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.frames.put(_frame(wire.CONFIG, config))
        self.writer = threading.Thread(
            target=_write_all, args=(self.frames, self.process.stdin), name="lineage-emitter", daemon=True
        )
        self.writer.start()

        self.ready = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def poll_ready(self) -> bool:
        """Whether the process has announced its client (``READY``), without waiting."""
        if self.ready:
            return True
        try:
            waiting = select.select([self.stdout], [], [], 0)[0]
        except (OSError, ValueError):  # no select() on pipes here (Windows): finish() reads READY
            return False
        if waiting:
            frame = wire.read_frame(self.stdout)
            self.ready = frame is not None and frame[0] == wire.READY
        return self.ready

    def stop(self) -> int:
        """End its stdin and wait for it (killed if it does not exit); its exit code."""
        self.frames.put(None)
        self.writer.join(timeout=10)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.stdout.close()
        return code


class ProcessEmitter:
    """Hands events to an OpenLineage client in a process of its own (see the module docstring).

    The process starts at the first event and reads openlineage-python's configuration then; it stops
    when this emitter is garbage collected or the interpreter exits (end of its stdin).

    Example:
        >>> emitter = ProcessEmitter(transport={"type": "console"})
    """

    def __init__(
        self,
        transport: Mapping[str, Any] | None = None,
        *,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._config = pickle.dumps(
            {
                "transport": dict(transport) if transport is not None else None,
                "attempts": attempts,
                "backoff_seconds": backoff_seconds,
                "max_backoff_seconds": max_backoff_seconds,
            }
        )
        self._transport = dict(transport) if transport is not None else None
        self._attempts, self._backoff = attempts, (backoff_seconds, max_backoff_seconds)
        self._children: list[_Child] = []  # at most one; a list the finalizer shares
        self._tick: _Child | None = None
        self._local: RetryingEmitter | None = None  # the tick's events while the process starts
        self._sent = False  # the tick handed an event to the process
        self._lock = threading.Lock()
        weakref.finalize(self, _stop_all, self._children)

    def _child(self) -> _Child:
        """The running process: the tick's own once the tick emitted (never replaced midway)."""
        if self._tick is not None:
            return self._tick
        if self._children and not self._children[0].alive():
            self._children.pop().stop()
        if not self._children:
            self._children.append(_Child(self._config))
        self._tick = self._children[0]
        return self._tick

    def start(self) -> None:
        """Start the process now if it is not running (a tick calls this first: it starts while the tick
        reads its first records)."""
        with self._lock:
            self._child()

    def emit(self, event: event_v2.RunEvent) -> None:
        with self._lock:
            child = self._child()
            if not self._sent and not child.poll_ready():
                self._emit_here(event)  # the process is still starting (its first tick): do not wait
                return
            self._sent = True
            child.frames.put(_frame(wire.EVENT, _pickled(event)))

    def _emit_here(self, event: event_v2.RunEvent) -> None:
        if self._local is None:
            self._local = RetryingEmitter(
                wire.client_for(self._transport),
                self._attempts,
                backoff_seconds=self._backoff[0],
                max_backoff_seconds=self._backoff[1],
            )
        self._local.emit(event)  # EmitStopped ends the tick before the process gets anything

    def finish(self) -> Delivery:
        """Wait until the process has handled every event emitted since the last ``finish``; the events
        sent here while it started come first."""
        with self._lock:
            here = self._local.finish() if self._local is not None else None
            sent, self._sent = self._sent, False
            child, self._tick = self._child(), None
            if not sent and here is not None and (here.delivered or here.failure):
                return here  # every event of the tick went out here, the process still starting
            child.frames.put(_frame(wire.END_OF_TICK, b""))
            reply = wire.read_frame(child.stdout)
            while reply is not None and reply[0] == wire.READY:
                child.ready = True
                reply = wire.read_frame(child.stdout)
            if reply is None or reply[0] != wire.REPLY:
                self._children.remove(child)
                code = child.stop()
                raise LineageEmitError(
                    f"the OpenLineage emitter process exited (code {code}) before it reported the tick's "
                    "delivery; its stderr says why. The tick stores no cursor: the next tick sends its "
                    "events again."
                )
            body: dict[str, Any] = pickle.loads(reply[1])
            failure = body["failure"]
            return Delivery(
                delivered=body["delivered"] + (here.delivered if here else 0),
                retries=body["retries"] + (here.retries if here else 0),
                kind=body["kind"],
                failure=failure["error"] if failure else None,
                attempts=failure["attempts"] if failure else 0,
            )

    def close(self) -> None:
        """Stop the process now (a later event starts a new one)."""
        with self._lock:
            self._tick = None
            _stop_all(self._children)


def _stop_all(children: list[_Child]) -> None:
    while children:
        children.pop().stop()


class _EventPickler(pickle.Pickler):
    """Pickles attrs objects of importable classes by their state, as pickle's protocol 2 does.

    openlineage-python's generated classes define ``__reduce__`` (for their dynamic subclasses), which
    sends every facet through ``copyreg``'s pure-Python fallback; this is a third of a tick's pickling.
    Dynamic classes (not importable by name) keep their own ``__reduce__``.
    """

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        fast = _BY_STATE.get(cls)
        if fast is None:
            module = sys.modules.get(cls.__module__)
            fast = _BY_STATE[cls] = attr.has(cls) and getattr(module, cls.__qualname__, None) is cls
        if fast:
            return copyreg.__newobj__, (cls,), obj.__getstate__()  # type: ignore[attr-defined]
        return NotImplemented


_BY_STATE: dict[type, bool] = {}


def _pickled(event: event_v2.RunEvent) -> bytes:
    buffer = io.BytesIO()
    _EventPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(event)
    return buffer.getvalue()


def _frame(kind: bytes, body: bytes) -> bytes:
    return wire.HEADER.pack(kind, len(body)) + body


def _write_all(frames: queue.SimpleQueue[bytes | None], stdin: IO[bytes]) -> None:
    try:
        while (frame := frames.get()) is not None:
            stdin.write(frame)
            if frames.empty():
                stdin.flush()
    except (BrokenPipeError, OSError):
        pass  # the process died: finish() reports it
    finally:
        with contextlib.suppress(OSError):
            stdin.close()
