"""The receiver process's own reading of the COPY stream: message splitting against a plain walk of the
length prefixes (payloads that hold look-alike messages included), and the raw-socket path against
psycopg2's ``read_message`` on a real server, over a unix socket, TCP and SSL."""

from __future__ import annotations

import datetime
import os
import pwd
import struct
import time
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.cdc.sources.postgres.receiver_process import ConnectionLost, split_messages
from hybrid_dagster.cdc.sources.postgres.stream import Chunk, ReplicationReceiver
from hybrid_dagster.testing.postgres import PostgresUnavailable, start_debian_postgres
from tests.fixtures.postgres import confirmed_flush


def xlog(lsn: int, payload: bytes) -> bytes:
    body = b"w" + struct.pack(">QQq", lsn, lsn + 100, 0) + payload
    return b"d" + struct.pack(">I", len(body) + 4) + body


def keepalive(lsn: int, reply: int = 0) -> bytes:
    body = b"k" + struct.pack(">QqB", lsn, 0, reply)
    return b"d" + struct.pack(">I", len(body) + 4) + body


def notice(text: bytes) -> bytes:
    return b"N" + struct.pack(">I", len(text) + 4) + text


def walk(data: bytes) -> tuple[list[int], list[int]]:
    """The reference: one message after the other, by their length prefixes."""
    starts, ends, pos = [], [], 0
    while pos + 5 <= len(data):
        length = struct.unpack_from(">I", data, pos + 1)[0]
        if pos + 1 + length > len(data):
            break
        starts.append(pos)
        ends.append(pos + 1 + length)
        pos += 1 + length
    return starts, ends


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, or bytes around whole or cut look-alike messages (a change whose values spell them)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    fake = draw(st.sampled_from([xlog(7, b"x" * draw(st.integers(0, 40))), keepalive(9), notice(b"n\0")]))
    cut = draw(st.integers(0, len(fake)))
    return draw(st.binary(max_size=8)) + fake[: len(fake) - cut] + draw(st.binary(max_size=8))


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    out = []
    for i in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from("wwwwwkN"))
        if kind == "w":
            out.append(xlog(1000 + i, draw(payloads())))
        elif kind == "k":
            out.append(keepalive(1000 + i, draw(st.integers(0, 1))))
        else:
            out.append(notice(draw(st.binary(max_size=20))))
    data = b"".join(out)
    return data[: len(data) - draw(st.integers(0, min(len(data), 60)))]


@settings(max_examples=400, deadline=None)
@given(streams())
def test_split_messages_equals_a_walk_of_the_length_prefixes(data: bytes) -> None:
    starts, ends = split_messages(np.frombuffer(data, np.uint8))
    assert (starts.tolist(), ends.tolist()) == walk(data)


def test_split_messages_of_a_long_run_and_a_cut_tail() -> None:
    messages = [xlog(i, bytes([i % 251]) * (i % 97)) for i in range(20_000)]
    data = b"".join(messages)
    starts, ends = split_messages(np.frombuffer(data[:-3], np.uint8))
    expected_starts, expected_ends = walk(data[:-3])
    assert len(starts) == len(messages) - 1
    assert (starts == expected_starts).all() and (ends == expected_ends).all()


def test_a_length_that_cannot_be_a_message_stops_the_connection() -> None:
    data = xlog(1, b"abc") + b"d" + struct.pack(">I", 3) + b"w" * 20
    with pytest.raises(ConnectionLost, match="length 3"):
        split_messages(np.frombuffer(data, np.uint8))


# --- against a real server ---


def _setup(dsn: str, slots: list[str], plugin: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        cur.execute("CREATE PUBLICATION p FOR TABLE t")
        for slot in slots:
            cur.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, plugin))
        cur.execute("INSERT INTO t SELECT g, repeat('v', g % 50) FROM generate_series(1, 3000) g")
        cur.execute("UPDATE t SET v = 'u' WHERE id % 7 = 0")
        # one value larger than the receiver's buffer (1 MiB reads into 4 MiB), not compressible
        cur.execute("INSERT INTO t SELECT 0, string_agg(md5(g::text), '') FROM generate_series(1, 200000) g")
        cur.execute("DELETE FROM t WHERE id % 11 = 0")
        cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
        row = cur.fetchone()
    conn.close()
    assert row is not None


def _options(plugin: str) -> dict[str, str]:
    return {"proto_version": "1", "publication_names": "p"} if plugin == "pgoutput" else {}


def _receive(
    dsn: str, slot: str, plugin: str, raw_socket: bool
) -> tuple[list[int], list[bytes], ReplicationReceiver]:
    """Every message of the slot (until 2 s of silence), then acknowledge the last one and close."""
    receiver = ReplicationReceiver(
        dsn,
        slot,
        plugin,
        _options(plugin),
        source_id="test",
        raw_socket=raw_socket,  # type: ignore[arg-type]
    )
    receiver.start(0)
    lsns: list[int] = []
    payloads: list[bytes] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < 2.0:
            item = receiver.take(0.1)
            if isinstance(item, Chunk):
                data = bytes(item.data)
                lsns += item.lsns.tolist()
                payloads += [
                    data[s : s + n] for s, n in zip(item.starts.tolist(), item.sizes.tolist(), strict=True)
                ]
                quiet_since = time.monotonic()
        receiver.confirm(lsns[-1])
        time.sleep(0.2)  # the status update goes out with the next hand-over or idle turn
    finally:
        receiver.close()
    return lsns, payloads, receiver


def test_the_socket_read_hands_over_what_psycopg2_reads(pg_decoder_db: tuple[str, str]) -> None:
    dsn, plugin = pg_decoder_db  # pgoutput over a unix socket, wal2json over TCP
    _setup(dsn, ["raw", "libpq"], plugin)
    raw_lsns, raw_payloads, raw = _receive(dsn, "raw", plugin, raw_socket=True)
    lsns, payloads, libpq = _receive(dsn, "libpq", plugin, raw_socket=False)
    assert raw.reads_socket and not libpq.reads_socket
    assert raw_lsns == lsns and raw_payloads == payloads
    assert max(len(p) for p in payloads) > 4 << 20  # the large value came whole
    # the last acknowledged position reached the server (and nothing past the WAL the slot was sent)
    assert confirmed_flush(dsn, "raw") >= raw_lsns[-1]
    assert confirmed_flush(dsn, "libpq") >= lsns[-1]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    if os.geteuid() == 0:  # the server runs as postgres
        entry = pwd.getpwnam("postgres")
        for path in (cert_file, key_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return cert_file, key_file


def test_an_encrypted_connection_is_read_by_psycopg2(tmp_path: Path) -> None:
    """Over SSL the socket carries no protocol messages: the receiver lets psycopg2 read them."""
    try:
        server = start_debian_postgres(tmp_path / "pg15")
    except PostgresUnavailable as err:
        pytest.skip(str(err))
    try:
        datadir = tmp_path / "pg15"
        cert_file, key_file = _self_signed(datadir)
        admin = psycopg2.connect(server.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("ALTER SYSTEM SET ssl_cert_file = %s", (str(cert_file),))
            cur.execute("ALTER SYSTEM SET ssl_key_file = %s", (str(key_file),))
            cur.execute("ALTER SYSTEM SET ssl = on")
            cur.execute("SELECT pg_reload_conf()")
        admin.close()
        dsn = server.dsn + " sslmode=require"
        deadline = time.monotonic() + 10
        while True:  # the reload is asynchronous
            try:
                psycopg2.connect(dsn).close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        _setup(dsn, ["secure"], "pgoutput")
        lsns, payloads, receiver = _receive(dsn, "secure", "pgoutput", raw_socket=True)
        assert not receiver.reads_socket
        kinds = [p[:1] for p in payloads]
        assert (kinds.count(b"I"), kinds.count(b"U"), kinds.count(b"D")) == (3001, 428, 273)
        assert confirmed_flush(dsn, "secure") >= lsns[-1]
    finally:
        server.stop()
