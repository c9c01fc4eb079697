"""The embedded launchers run the real servers, keep data across a restart, report port clashes."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from accord_kit.embedded import SERVICE_USER, EmbeddedError, EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port, port_in_use, wait_for_port


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a plain listening socket, as another program would hold it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_helpers_tell_a_taken_port_from_a_free_one(listener: int) -> None:
    assert port_in_use(listener)
    wait_for_port("127.0.0.1", listener, timeout=5)
    port = free_port()
    assert not port_in_use(port)
    with pytest.raises(TimeoutError, match=str(port)):
        wait_for_port("127.0.0.1", port, timeout=0.3)


async def test_postgres_keeps_rows_across_a_restart(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port())
    assert pg.url == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/postgres"
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(plain(pg.url))
        try:
            await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
            await conn.execute("INSERT INTO notes VALUES (1, 'kept')")
        finally:
            await conn.close()

        await asyncio.to_thread(pg.stop)
        assert not pg.running
        assert not port_in_use(pg.port)
        await asyncio.to_thread(pg.stop)  # idempotent

        await asyncio.to_thread(pg.start)
        assert pg.running
        conn = await asyncpg.connect(plain(pg.url))
        try:
            rows = await conn.fetch("SELECT id, body FROM notes")
            assert [tuple(r) for r in rows] == [(1, "kept")]
            assert await conn.fetchval("SELECT current_user") == "postgres"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)
    assert "database system is ready to accept connections" in pg.log_path.read_text()
    if os.geteuid() == 0:
        owner = pwd.getpwuid((tmp_path / "pg" / "PG_VERSION").stat().st_uid).pw_name
        assert owner == SERVICE_USER


def test_a_second_postgres_on_a_taken_port_fails_clearly(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "first", free_port()) as first:
        second = EmbeddedPostgres(tmp_path / "second", first.port)
        with pytest.raises(EmbeddedError, match=rf"^port {first.port} is already in use$"):
            second.start()
        assert not second.running
        assert first.running
    assert not first.running
    assert not port_in_use(first.port)


def test_postgres_on_a_port_another_program_holds_fails_clearly(
    tmp_path: Path, listener: int
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", listener)
    with pytest.raises(EmbeddedError, match=rf"^port {listener} is already in use$"):
        pg.start()
    assert not pg.running


async def test_nats_keeps_jetstream_messages_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", free_port())
    assert server.url == f"nats://127.0.0.1:{server.port}"
    await asyncio.to_thread(server.start)
    try:
        client = await nats.connect(server.url, allow_reconnect=False)
        try:
            js = client.jetstream()
            await js.add_stream(name="EMBEDDED", subjects=["embedded.>"])
            ack = await js.publish("embedded.hello", b"kept")
            assert (ack.stream, ack.seq) == ("EMBEDDED", 1)
        finally:
            await client.close()

        await asyncio.to_thread(server.stop)
        assert not server.running
        assert not port_in_use(server.port)
        await asyncio.to_thread(server.stop)  # idempotent

        await asyncio.to_thread(server.start)
        client = await nats.connect(server.url, allow_reconnect=False)
        try:
            js = client.jetstream()
            assert (await js.stream_info("EMBEDDED")).state.messages == 1
            msg = await js.get_msg("EMBEDDED", 1)
            assert (msg.subject, msg.data) == ("embedded.hello", b"kept")
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert (tmp_path / "nats" / "jetstream").is_dir()
    assert server.log_path.is_relative_to(tmp_path / "nats")


def test_nats_on_a_taken_port_fails_clearly(tmp_path: Path, listener: int) -> None:
    with pytest.raises(EmbeddedError, match=rf"^port {listener} is already in use$"):
        EmbeddedNats(tmp_path / "nats", listener).start()


async def test_a_paused_nats_answers_nothing_until_resumed(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", free_port())
    await asyncio.to_thread(server.start)
    try:
        server.pause()
        # The kernel still accepts the connection; the server's hello (INFO) waits.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), 1)
        server.resume()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"INFO ")
        writer.close()
        server.pause()  # and a paused server still stops
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running
    assert not port_in_use(server.port)
