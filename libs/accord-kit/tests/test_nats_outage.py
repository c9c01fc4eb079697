"""A service's NATS connection through a NATS outage."""

from __future__ import annotations

import pytest
from nats.errors import FlushTimeoutError

from accord_kit import events
from accord_kit import nats as knats
from accord_kit.embedded import EmbeddedNats
from accord_kit.testing import nats_outage

PRODUCER = "outage"


async def test_a_round_trip_that_timed_out_leaves_the_connection_working(
    own_nats: EmbeddedNats,
) -> None:
    """nats-py 2.16 lost its read loop to the late answer of a timed-out flush: regression."""
    nc = await knats.connect(own_nats.url, "short-pause")
    try:
        async with nats_outage(own_nats, "pause"):  # shorter than stale detection
            with pytest.raises(FlushTimeoutError):
                await nc.flush(timeout=1)
        await nc.rtt(timeout=5)  # answered by the same read loop, no reconnect needed
        assert nc.epoch == 0
        await knats.ensure_stream(nc, events.stream_name(PRODUCER), [f"{PRODUCER}.>"])
        ack = await nc.jetstream().publish(f"{PRODUCER}.x", b"1", timeout=5)
        assert ack.seq == 1
    finally:
        await nc.close()
