"""The lineage emitter's own process, and what it shares with the sensor: the residency facet, the framing
and the delivery loop with retries.

The OpenLineage sensor hands its events to openlineage-python's client in a process of their own
(:class:`hybrid_dagster.sensors.lineage_delivery.ProcessEmitter`), started as ``python -P <this file>``:
this module imports only the standard library, attrs and openlineage-python (no package import, so it
starts in a fraction of a second). Serializing an event (``Serde.to_json``, which every transport
calls) costs about as much as reading and building it; in its own process it runs beside the sensor's
reading on the second core, and a slow transport (an HTTP round trip per event) no longer holds the
reading up.

Correctness rules:

* Frames on stdin: a configuration (the transport mapping or ``None`` for openlineage-python's own
  configuration: ``openlineage.yml`` or the environment, which this process inherits; once its client
  is built, this process says ``READY``), then events
  (pickled ``RunEvent``), each tick's events followed by one end-of-tick frame. Events are delivered in
  the order received, each with up to ``attempts`` tries and exponential backoff.
* After an event fails its last attempt, the rest of that tick's events are dropped unsent: the reply to
  the end-of-tick frame counts the events delivered (a prefix of the tick's), the retries, the failure,
  and the next tick starts clean. The sensor stores the cursor after the delivered prefix only.
* If the sensor's process is gone (this process was re-parented), nothing more is sent; end of stdin ends
  this process.
* Replies carry counts, the transport's kind and the failure's class and message (from the transport,
  about the endpoint), never an event.

Frames: one kind byte and a little-endian uint64 length, then the body.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attr
from openlineage.client import OpenLineageClient, event_v2
from openlineage.client.facet_v2 import DatasetFacet

HEADER = struct.Struct("<cQ")
CONFIG, EVENT, END_OF_TICK, READY, REPLY = b"C", b"E", b"T", b"Y", b"R"
MODULE = "hybrid_dagster.sensors.lineage_wire"
"""This module's name in the sensor's process (pickled class references name it)."""

RESIDENCY_SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "ResidencyDatasetFacet.json"
RESIDENCY_SCHEMA_URL = (
    f"{json.loads(RESIDENCY_SCHEMA_FILE.read_text(encoding='utf-8'))['$id']}#/$defs/ResidencyDatasetFacet"
)


@attr.define
class ResidencyDatasetFacet(DatasetFacet):
    """Plane, jurisdiction and classification of a dataset (schema: ``schemas/ResidencyDatasetFacet.json``).

    Example:
        >>> ResidencyDatasetFacet(plane="eu-onprem", jurisdiction="EU", classification="restricted")
        ResidencyDatasetFacet(...)
    """

    plane: str
    jurisdiction: str
    classification: str

    @staticmethod
    def _get_schema() -> str:
        return RESIDENCY_SCHEMA_URL


class EmitFailed(Exception):
    """An event the transport refused ``attempts`` times (the last error as the message)."""

    def __init__(self, attempts: int, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.attempts = attempts


def emit_with_retries(
    client: OpenLineageClient,
    event: event_v2.RunEvent,
    *,
    attempts: int,
    backoff_seconds: float,
    max_backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``client.emit(event)``, retried with exponential backoff; returns the retries it took.

    Example:
        >>> emit_with_retries(client, event, attempts=4, backoff_seconds=0.5, max_backoff_seconds=10.0)
        0
    """
    for attempt in range(1, attempts + 1):
        try:
            client.emit(event)
        except Exception as err:
            if attempt == attempts:
                raise EmitFailed(attempt, err) from err
            sleep(min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1)))
        else:
            return attempt - 1
    raise AssertionError("unreachable: attempts >= 1")


def client_for(transport: dict[str, Any] | None) -> OpenLineageClient:
    """openlineage-python's client for a transport mapping, or (``None``) from its own configuration:
    ``openlineage.yml`` or the ``OPENLINEAGE__*`` environment.

    Example:
        >>> client_for({"type": "console"}).transport.kind
        'console'
    """
    return (
        OpenLineageClient(config={"transport": transport}) if transport is not None else OpenLineageClient()
    )


def transport_kind(client: OpenLineageClient) -> str:
    return str(getattr(client.transport, "kind", type(client.transport).__name__))


def write_frame(stream: IO[bytes], kind: bytes, body: bytes) -> None:
    stream.write(HEADER.pack(kind, len(body)))
    stream.write(body)


def read_frame(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the stream (also mid-frame: the writer is gone)."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    kind, length = HEADER.unpack(head)
    body = stream.read(length)
    return (kind, body) if len(body) == length else None


class _EventUnpickler(pickle.Unpickler):
    """Classes of this module, pickled under its package name by the sensor, resolve to this process's."""

    def find_class(self, module: str, name: str) -> Any:
        if module == MODULE:
            return getattr(sys.modules[__name__], name)
        return super().find_class(module, name)


def _load(body: bytes) -> Any:
    return _EventUnpickler(io.BytesIO(body)).load()


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """Deliver what the sensor sends until stdin ends (see the module docstring)."""
    parent = os.getppid()
    frame = read_frame(stdin)
    if frame is None or frame[0] != CONFIG:
        return 2
    config: dict[str, Any] = pickle.loads(frame[1])
    client = client_for(config["transport"])
    write_frame(stdout, READY, b"")
    stdout.flush()
    delivered = retries = 0
    failure: dict[str, Any] | None = None
    while (frame := read_frame(stdin)) is not None:
        kind, body = frame
        if kind == EVENT:
            if failure is not None:
                continue
            if os.getppid() != parent:
                return 0
            try:
                retries += emit_with_retries(
                    client,
                    _load(body),
                    attempts=config["attempts"],
                    backoff_seconds=config["backoff_seconds"],
                    max_backoff_seconds=config["max_backoff_seconds"],
                )
            except EmitFailed as failed:
                failure = {"attempts": failed.attempts, "error": str(failed)}
                retries += failed.attempts - 1
            else:
                delivered += 1
        elif kind == END_OF_TICK:
            reply = {
                "delivered": delivered,
                "retries": retries,
                "failure": failure,
                "kind": transport_kind(client),
            }
            write_frame(stdout, REPLY, pickle.dumps(reply))
            stdout.flush()
            delivered = retries = 0
            failure = None
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
