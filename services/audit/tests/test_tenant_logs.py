# ruff: noqa: S608 - the tests tamper with the log in SQL they write themselves
"""accord.audit.v2 through its generated stubs: each tenant's own log, its proofs checked by the
test's RFC 9162 verifier, signed checkpoints, verification of a tampered log, retention.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from accord.audit.v1 import audit_service_pb2 as pb1
from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import record_pb2
from accord_audit import logs
from accord_audit.testing import Harness, eventually
from accord_kit.testing import as_tenant, refused
from services.audit.tests.rfc9162 import mth, verify_consistency, verify_inclusion

ACME = as_tenant("acme")
OTHER = as_tenant("other")
ZERO = bytes(32)


def prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def expected_link(r: record_pb2.AuditRecord, prev: bytes) -> tuple[bytes, bytes]:
    """(payload_digest, hash) of a record as the proto comment defines them."""
    texts = (r.event_id, r.event_type, r.tenant_id, r.aggregate_type, r.aggregate_id)
    micros = r.event_time.seconds * 1_000_000 + r.event_time.nanos // 1000
    body = b"".join(prefixed(t.encode()) for t in texts)
    body += micros.to_bytes(8, "big", signed=True) + prefixed(r.envelope)
    digest = hashlib.sha256(body).digest()
    return digest, hashlib.sha256(prev + r.index.to_bytes(8, "big") + digest).digest()


async def fill(audit: Harness, acme: int, other: int) -> list[record_pb2.AuditRecord]:
    """`acme` and `other` events interleaved in one stream; acme's log once all are in."""
    mine = [audit.event(tenant="acme") for _ in range(acme)]
    theirs = [audit.event(tenant="other") for _ in range(other)]
    mixed = []
    for i in range(max(acme, other)):
        mixed += theirs[i : i + 1] + mine[i : i + 1]
    await audit.publish(*mixed)
    if theirs:
        await audit.wait_for(*theirs, tenant="other")
    await audit.wait_for(*mine, tenant="acme")
    return await audit.log("acme")


async def checkpoint(audit: Harness, metadata: object = ACME) -> record_pb2.Checkpoint:
    return (await audit.v2.GetCheckpoint(pb.GetCheckpointRequest(), metadata=metadata)).checkpoint


async def signed_by_a_listed_key(audit: Harness, cp: record_pb2.Checkpoint) -> bool:
    keys = (await audit.v2.GetCheckpointKeys(pb.GetCheckpointKeysRequest())).keys
    key = next(k for k in keys if k.key_id == cp.key_id)
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(cp.signature, cp.note)
    return True


async def test_a_tenants_log_has_its_own_indexes_chain_and_signed_checkpoints(
    audit: Harness,
) -> None:
    log = await fill(audit, acme=5, other=8)
    assert [r.index for r in log] == [0, 1, 2, 3, 4]
    prev = ZERO
    for r in log:  # the chain of acme's records alone: nothing of other's goes into it
        assert r.prev_hash == prev
        assert (r.payload_digest, r.hash) == expected_link(r, prev)
        prev = r.hash
    cp = await checkpoint(audit)
    assert (cp.tree_size, cp.root_hash) == (5, mth([r.hash for r in log]))
    assert cp.log_id == "accord.audit/tenant/acme"
    micros = cp.checkpoint_time.seconds * 1_000_000 + cp.checkpoint_time.nanos // 1000
    root = __import__("base64").b64encode(cp.root_hash).decode()
    assert cp.note == f"{cp.log_id}\n5\n{root}\n{micros}\n".encode()
    assert await signed_by_a_listed_key(audit, cp)
    again = await checkpoint(audit)
    assert again == cp  # nothing appended: the stored checkpoint, not a new one
    stored = await audit.v2.GetCheckpoint(pb.GetCheckpointRequest(tree_size=5), metadata=ACME)
    assert stored.checkpoint == cp
    theirs = await checkpoint(audit, OTHER)
    assert theirs.tree_size == 8
    assert [r.index for r in await audit.log("other")] == list(range(8))


async def test_another_tenant_cannot_read_or_prove_the_records_of_a_log(audit: Harness) -> None:
    log = await fill(audit, acme=3, other=1)
    event_id = log[0].event_id
    for call in (
        audit.v2.GetRecord(pb.GetRecordRequest(event_id=event_id), metadata=OTHER),
        audit.v2.GetInclusionProof(pb.GetInclusionProofRequest(event_id=event_id), metadata=OTHER),
        audit.v2.GetRecord(pb.GetRecordRequest(index=1), metadata=OTHER),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
    past = audit.v2.GetConsistencyProof(
        pb.GetConsistencyProofRequest(from_size=1, to_size=3), metadata=OTHER
    )
    assert (await refused(past)).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [r.tenant_id for r in await audit.log("other")] == ["other"]


async def test_inclusion_and_consistency_proofs_of_every_size_verify(audit: Harness) -> None:
    log = await fill(audit, acme=64, other=5)
    hashes = [r.hash for r in log]
    for n in range(1, 65):
        root = mth(hashes[:n])
        for m in sorted({0, n // 2, n - 1}):
            got = await audit.v2.GetInclusionProof(
                pb.GetInclusionProofRequest(index=m, tree_size=n), metadata=ACME
            )
            assert (got.index, got.tree_size, got.leaf) == (m, n, hashes[m])
            assert verify_inclusion(hashes[m], m, n, list(got.hashes), root)
            assert not verify_inclusion(hashes[m - 1 if m else 1], m, n, list(got.hashes), root)
        for m in sorted({1, max(1, n // 2), n}):
            got_c = await audit.v2.GetConsistencyProof(
                pb.GetConsistencyProofRequest(from_size=m, to_size=n), metadata=ACME
            )
            assert verify_consistency(m, n, mth(hashes[:m]), root, list(got_c.hashes))
    latest = await audit.v2.GetInclusionProof(
        pb.GetInclusionProofRequest(event_id=log[40].event_id), metadata=ACME
    )
    cp = latest.checkpoint
    assert (latest.index, latest.tree_size, cp.tree_size) == (40, 64, 64)
    assert verify_inclusion(hashes[40], 40, 64, list(latest.hashes), cp.root_hash)
    assert await signed_by_a_listed_key(audit, cp)


async def sql(audit: Harness, *statements: str) -> None:
    conn = await asyncpg.connect(audit.database_url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


async def verify(audit: Harness, **kwargs: int) -> pb.VerifyRangeResponse:
    return await audit.v2.VerifyRange(pb.VerifyRangeRequest(**kwargs), metadata=ACME)


def at(index: int) -> str:
    return f"tenant_id = 'acme' AND tenant_index = {index}"


async def test_a_changed_payload_is_reported_at_exactly_its_index(audit: Harness) -> None:
    await fill(audit, acme=6, other=2)
    clean = await verify(audit)
    assert (clean.valid, clean.first_invalid_index, clean.checked_count) == (True, -1, 6)
    await sql(audit, f"UPDATE audit.records SET aggregate_id = 'forged' WHERE {at(3)}")
    bad = await verify(audit)
    assert (bad.valid, bad.first_invalid_index, bad.failure) == (
        False,
        3,
        "payload does not match payload_digest",
    )
    assert (await verify(audit, start_index=0, end_index=3)).valid
    assert (await verify(audit, start_index=4)).valid  # anchored on the untouched hash at 3
    assert (await verify(audit, start_index=3)).first_invalid_index == 3


async def test_a_deleted_record_and_two_swapped_records_are_reported(audit: Harness) -> None:
    await fill(audit, acme=6, other=0)
    await sql(
        audit,  # swap the records at 1 and 2: each keeps its content, takes the other's place
        f"UPDATE audit.records SET tenant_index = -1 WHERE {at(1)}",
        f"UPDATE audit.records SET tenant_index = 1 WHERE {at(2)}",
        f"UPDATE audit.records SET tenant_index = 2 WHERE {at(-1)}",
    )
    swapped = await verify(audit)
    assert (swapped.valid, swapped.first_invalid_index) == (False, 1)
    await sql(
        audit,
        f"UPDATE audit.records SET tenant_index = -1 WHERE {at(2)}",
        f"UPDATE audit.records SET tenant_index = 2 WHERE {at(1)}",
        f"UPDATE audit.records SET tenant_index = 1 WHERE {at(-1)}",
    )
    assert (await verify(audit)).valid  # swapped back
    await sql(audit, f"DELETE FROM audit.records WHERE {at(5)}")  # the last one
    last = await verify(audit)
    assert (last.first_invalid_index, last.failure) == (5, "record is missing")
    await sql(audit, f"DELETE FROM audit.records WHERE {at(2)}")
    deleted = await verify(audit)
    assert (deleted.first_invalid_index, deleted.failure) == (2, "record is missing")


async def test_a_rewritten_chain_is_caught_by_its_merkle_leaf(audit: Harness) -> None:
    """Someone who recomputes the digest and hash of a forged record still has to match the
    tree's stored leaf, and the signed root above it."""
    log = await fill(audit, acme=4, other=0)
    forged = record_pb2.AuditRecord()
    forged.CopyFrom(log[3])
    forged.aggregate_id = "forged"
    digest, new_hash = expected_link(forged, log[2].hash)
    await sql(
        audit,
        f"UPDATE audit.records SET aggregate_id = 'forged', payload_digest = '\\x{digest.hex()}',"
        f" tenant_hash = '\\x{new_hash.hex()}' WHERE {at(3)}",
    )
    bad = await verify(audit)
    assert (bad.first_invalid_index, bad.failure) == (
        3,
        "Merkle leaf does not match the record's hash",
    )


async def test_a_rewritten_chain_and_tree_is_caught_by_the_signed_root_from_any_start(
    audit: Harness,
) -> None:
    """Record 3 of 4 forged with its digest, hash, leaf and the nodes above it recomputed
    (RFC 9162): every stored hash agrees, and only the checkpoint signed before says no."""
    log = await fill(audit, acme=4, other=2)
    await checkpoint(audit)
    forged = record_pb2.AuditRecord()
    forged.CopyFrom(log[3])
    forged.aggregate_id = "forged"
    digest, new_hash = expected_link(forged, log[2].hash)
    leaves = [hashlib.sha256(b"\x00" + h).digest() for h in [*(r.hash for r in log[:3]), new_hash]]
    right = hashlib.sha256(b"\x01" + leaves[2] + leaves[3]).digest()
    left = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    root = hashlib.sha256(b"\x01" + left + right).digest()
    assert root == mth([*(r.hash for r in log[:3]), new_hash])
    await sql(
        audit,
        f"UPDATE audit.records SET aggregate_id = 'forged', payload_digest = '\\x{digest.hex()}',"
        f" tenant_hash = '\\x{new_hash.hex()}' WHERE {at(3)}",
        f"UPDATE audit.tree_nodes SET hash = '\\x{leaves[3].hex()}' WHERE {node(0, 3)}",
        f"UPDATE audit.tree_nodes SET hash = '\\x{right.hex()}' WHERE {node(1, 1)}",
        f"UPDATE audit.tree_nodes SET hash = '\\x{root.hex()}' WHERE {node(2, 0)}",
    )
    why = "Merkle root of the first 4 records is not the signed checkpoint's root"
    for start in (0, 2, 3):  # a range after 0 checks the checkpoint that ends in it too
        bad = await verify(audit, start_index=start)
        assert (bad.valid, bad.first_invalid_index, bad.failure) == (False, start, why)
    assert (await verify(audit, end_index=3)).valid  # no checkpoint ends in [0, 3)


def node(level: int, index: int) -> str:
    return f"tenant_id = 'acme' AND level = {level} AND node_index = {index}"


async def test_a_changed_or_missing_tree_node_is_reported(audit: Harness) -> None:
    """Leaves 0-7 make nodes (1, 0-3), (2, 0-1) and (3, 0); each must hash its children."""
    await fill(audit, acme=8, other=3)
    await checkpoint(audit)  # signed at 8 before anything changes
    assert (await verify(audit)).valid
    forged = hashlib.sha256(b"forged").hexdigest()
    await sql(audit, f"UPDATE audit.tree_nodes SET hash = '\\x{forged}' WHERE {node(2, 1)}")
    bad = await verify(audit)
    assert (bad.valid, bad.first_invalid_index, bad.failure, bad.checked_count) == (
        False,
        4,
        "Merkle tree node (level 2, index 1) is not the hash of its children",
        8,
    )
    assert (await verify(audit, start_index=4)).first_invalid_index == 4  # the node is in it
    assert (await verify(audit, start_index=0, end_index=4)).valid  # the node is not
    await sql(
        audit,
        f"UPDATE audit.tree_nodes SET hash = sha256('\\x01'::bytea || (SELECT string_agg("
        f"hash, ''::bytea ORDER BY node_index) FROM audit.tree_nodes WHERE level = 1 AND "
        f"node_index IN (2, 3) AND tenant_id = 'acme')) WHERE {node(2, 1)}",
    )
    assert (await verify(audit)).valid  # put back as its children make it
    await sql(audit, f"DELETE FROM audit.tree_nodes WHERE {node(3, 0)}")
    gone = await verify(audit)
    assert (gone.first_invalid_index, gone.failure) == (0, "Merkle tree level 3 is missing nodes")


async def test_a_root_that_is_not_the_signed_checkpoints_is_reported(audit: Harness) -> None:
    await fill(audit, acme=5, other=0)
    cp = await checkpoint(audit)
    assert (await verify(audit)).valid
    await sql(audit, "UPDATE audit.checkpoints SET signature = '\\x00' || signature")
    unsigned = await verify(audit)
    assert (unsigned.first_invalid_index, unsigned.failure) == (
        0,
        "Merkle root of the first 5 records has a checkpoint its key did not sign",
    )
    after = await verify(audit, start_index=1)  # the checkpoint ends in [1, 5) too
    assert (after.first_invalid_index, after.failure) == (1, unsigned.failure)
    forged = hashlib.sha256(b"forged").hexdigest()
    await sql(
        audit,
        f"UPDATE audit.checkpoints SET signature = '\\x{cp.signature.hex()}',"
        f" root_hash = '\\x{forged}'",
    )
    wrong = await verify(audit)
    assert (wrong.first_invalid_index, wrong.failure) == (
        0,
        "Merkle root of the first 5 records is not the signed checkpoint's root",
    )
    assert (await verify(audit, end_index=4)).valid  # the checkpoint is past the range


async def test_a_range_checked_in_parts_answers_as_one_pass(
    audit: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts of 2 to 3 records: [0, 3), [3, 6), [6, 8), checked two at a time."""
    monkeypatch.setattr(logs, "PART_SMALLEST", 2)
    monkeypatch.setattr(logs, "PART_LARGEST", 3)
    await fill(audit, acme=8, other=2)
    await audit.app.logs.erase_expired({"acme": 0})
    whole = await verify(audit)
    assert (whole.valid, whole.checked_count, list(whole.erased_indexes)) == (
        True,
        8,
        list(range(8)),
    )
    await sql(audit, f"UPDATE audit.records SET tenant_hash = '\\x{ZERO.hex()}' WHERE {at(4)}")
    bad = await verify(audit)
    assert (bad.first_invalid_index, bad.failure, bad.checked_count) == (
        4,
        "hash does not match the chain",
        5,
    )
    assert (bad.erased_count, list(bad.erased_indexes)) == (5, [0, 1, 2, 3, 4])
    await sql(audit, f"DELETE FROM audit.records WHERE {at(3)}")  # the first of a part
    assert (await verify(audit)).first_invalid_index == 3
    await sql(audit, f"DELETE FROM audit.records WHERE {at(2)}")  # the last of a part
    missing = await verify(audit)
    assert (missing.first_invalid_index, missing.failure, missing.checked_count) == (
        2,
        "record is missing",
        2,
    )


async def test_retention_erases_payloads_and_every_proof_still_verifies(audit: Harness) -> None:
    log = await fill(audit, acme=5, other=3)
    before = await checkpoint(audit)
    assert await audit.app.logs.erase_expired({"acme": 0}) == 5
    erased = await audit.log("acme")
    assert all(r.HasField("erase_time") and not r.envelope and not r.aggregate_id for r in erased)
    assert [(r.hash, r.payload_digest) for r in erased] == [(r.hash, r.payload_digest) for r in log]
    result = await verify(audit)
    assert (result.valid, result.erased_count, list(result.erased_indexes)) == (
        True,
        5,
        [0, 1, 2, 3, 4],
    )
    assert await checkpoint(audit) == before
    for m in range(5):
        got = await audit.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(index=m, tree_size=5), metadata=ACME
        )
        assert verify_inclusion(erased[m].hash, m, 5, list(got.hashes), before.root_hash)
    assert not any(r.HasField("erase_time") for r in await audit.log("other"))
    whole = await audit.stub.VerifyRange(pb1.VerifyRangeRequest())  # the operator's, v1
    assert (whole.valid, whole.checked_count) == (True, 8)


async def test_a_new_record_after_erasure_extends_the_same_tree(audit: Harness) -> None:
    log = await fill(audit, acme=3, other=0)
    await audit.app.logs.erase_expired({"acme": 0})
    more = audit.event(tenant="acme", event_time=datetime(2031, 1, 1, tzinfo=UTC))
    await audit.publish(more)
    await audit.wait_for(more)
    after = await audit.log("acme")
    assert after[3].prev_hash == log[2].hash
    cp = await checkpoint(audit)
    proof = await audit.v2.GetConsistencyProof(
        pb.GetConsistencyProofRequest(from_size=3, to_size=4), metadata=ACME
    )
    assert verify_consistency(3, 4, mth([r.hash for r in log]), cp.root_hash, list(proof.hashes))
    assert (await verify(audit)).erased_count == 3


async def test_a_redelivered_event_takes_no_index_and_checkpoints_come_unasked(
    audit: Harness,
) -> None:
    first, second = audit.event(tenant="acme"), audit.event(tenant="acme")
    await audit.publish(first)
    await audit.publish(first, msg_id="again")  # past JetStream's dedupe: delivered twice
    await audit.publish(second)
    await audit.wait_for(first, second)
    log = await audit.log("acme")
    assert [(r.index, r.event_id) for r in log] == [(0, first.event_id), (1, second.event_id)]

    async def signed() -> record_pb2.Checkpoint | None:
        try:
            found = await audit.v2.GetCheckpoint(
                pb.GetCheckpointRequest(tree_size=2), metadata=ACME
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return found.checkpoint

    cp = await eventually(signed, what="the periodic checkpoint of size 2")
    assert cp.root_hash == mth([r.hash for r in log])


async def test_stream_follows_the_tenant_log_by_its_own_indexes(audit: Harness) -> None:
    await fill(audit, acme=2, other=3)
    stream = audit.v2.StreamRecords(pb.StreamRecordsRequest(from_index=1), metadata=ACME)
    got: list[int] = []
    async with asyncio.timeout(30):  # the record published below arrives long before
        async for item in stream:
            got.append(item.record.index)
            if len(got) == 1:
                await audit.publish(audit.event(tenant="other"), audit.event(tenant="acme"))
            if len(got) == 2:
                break
    stream.cancel()
    assert got == [1, 2]
