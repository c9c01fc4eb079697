"""accord.audit.v2: bad input and unknown indexes for every RPC, each with its status and the
field it names; none of them changes the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from accord.audit.v2 import audit_service_pb2 as pb
from accord_audit.testing import Harness
from accord_kit.testing import as_tenant, field_violations, refused

ACME = as_tenant("acme")
BAD = grpc.StatusCode.INVALID_ARGUMENT
MISSING = grpc.StatusCode.NOT_FOUND
UNKNOWN_EVENT = "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"
PAST = grpc.StatusCode.FAILED_PRECONDITION

Call = Callable[[Harness], Awaitable[object]]


def _first(stream: object) -> Awaitable[object]:
    async def read() -> object:
        async for item in stream:  # type: ignore[attr-defined]
            return item
        return None

    return read()


CASES: list[tuple[str, Call, grpc.StatusCode, str]] = [
    (
        "list page_size",
        lambda a: a.v2.ListRecords(pb.ListRecordsRequest(page_size=1001), metadata=ACME),
        BAD,
        "page_size",
    ),
    (
        "list page_token",
        lambda a: a.v2.ListRecords(pb.ListRecordsRequest(page_token="nope"), metadata=ACME),
        BAD,
        "page_token",
    ),
    ("get no key", lambda a: a.v2.GetRecord(pb.GetRecordRequest(), metadata=ACME), BAD, ""),
    (
        "get negative",
        lambda a: a.v2.GetRecord(pb.GetRecordRequest(index=-1), metadata=ACME),
        BAD,
        "index",
    ),
    (
        "get unknown index",
        lambda a: a.v2.GetRecord(pb.GetRecordRequest(index=3), metadata=ACME),
        MISSING,
        "",
    ),
    (
        "get unknown id",
        lambda a: a.v2.GetRecord(pb.GetRecordRequest(event_id=UNKNOWN_EVENT), metadata=ACME),
        MISSING,
        "",
    ),
    (
        "get id not a uuid",
        lambda a: a.v2.GetRecord(pb.GetRecordRequest(event_id="nope"), metadata=ACME),
        BAD,
        "event_id",
    ),
    (
        "stream negative",
        lambda a: _first(a.v2.StreamRecords(pb.StreamRecordsRequest(from_index=-1), metadata=ACME)),
        BAD,
        "from_index",
    ),
    (
        "checkpoint negative",
        lambda a: a.v2.GetCheckpoint(pb.GetCheckpointRequest(tree_size=-1), metadata=ACME),
        BAD,
        "tree_size",
    ),
    (
        "checkpoint unknown",
        lambda a: a.v2.GetCheckpoint(pb.GetCheckpointRequest(tree_size=2), metadata=ACME),
        MISSING,
        "",
    ),
    (
        "inclusion no key",
        lambda a: a.v2.GetInclusionProof(pb.GetInclusionProofRequest(tree_size=1), metadata=ACME),
        BAD,
        "",
    ),
    (
        "inclusion negative",
        lambda a: a.v2.GetInclusionProof(pb.GetInclusionProofRequest(index=-1), metadata=ACME),
        BAD,
        "index",
    ),
    (
        "inclusion unknown index",
        lambda a: a.v2.GetInclusionProof(pb.GetInclusionProofRequest(index=3), metadata=ACME),
        MISSING,
        "",
    ),
    (
        "inclusion unknown id",
        lambda a: a.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(event_id=UNKNOWN_EVENT), metadata=ACME
        ),
        MISSING,
        "",
    ),
    (
        "inclusion size too small",
        lambda a: a.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(index=2, tree_size=2), metadata=ACME
        ),
        BAD,
        "tree_size",
    ),
    (
        "inclusion size past the log",
        lambda a: a.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(index=0, tree_size=4), metadata=ACME
        ),
        PAST,
        "",
    ),
    (
        "consistency from 0",
        lambda a: a.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(from_size=0, to_size=2), metadata=ACME
        ),
        BAD,
        "from_size",
    ),
    (
        "consistency from > to",
        lambda a: a.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(from_size=3, to_size=2), metadata=ACME
        ),
        BAD,
        "from_size",
    ),
    (
        "consistency past the log",
        lambda a: a.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(from_size=1, to_size=9), metadata=ACME
        ),
        PAST,
        "",
    ),
    (
        "consistency from past latest",
        lambda a: a.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(from_size=9), metadata=ACME
        ),
        BAD,
        "from_size",
    ),
    (
        "verify end before start",
        lambda a: a.v2.VerifyRange(
            pb.VerifyRangeRequest(start_index=2, end_index=1), metadata=ACME
        ),
        BAD,
        "end_index",
    ),
    (
        "verify negative",
        lambda a: a.v2.VerifyRange(pb.VerifyRangeRequest(start_index=-1), metadata=ACME),
        BAD,
        "start_index",
    ),
    (
        "verify past the log",
        lambda a: a.v2.VerifyRange(pb.VerifyRangeRequest(end_index=9), metadata=ACME),
        PAST,
        "",
    ),
    (
        "export negative",
        lambda a: _first(a.v2.ExportRecords(pb.ExportRecordsRequest(end_index=-1), metadata=ACME)),
        BAD,
        "end_index",
    ),
    (
        "export past the log",
        lambda a: _first(a.v2.ExportRecords(pb.ExportRecordsRequest(end_index=9), metadata=ACME)),
        PAST,
        "",
    ),
    (
        "export empty range",
        lambda a: _first(
            a.v2.ExportRecords(pb.ExportRecordsRequest(start_index=2, end_index=2), metadata=ACME)
        ),
        BAD,
        "start_index",
    ),
    (
        "export consistency past",
        lambda a: _first(
            a.v2.ExportRecords(pb.ExportRecordsRequest(consistency_from_size=9), metadata=ACME)
        ),
        PAST,
        "",
    ),
]


@pytest.fixture
async def three(audit: Harness) -> Harness:
    """acme's log of 3 records, with a checkpoint of size 3 (so size 2 has none)."""
    sent = [audit.event(tenant="acme") for _ in range(3)]
    await audit.publish(*sent)
    await audit.wait_for(*sent)
    await audit.v2.GetCheckpoint(pb.GetCheckpointRequest(), metadata=ACME)
    return audit


async def test_every_bad_request_is_refused_with_its_status_and_field(three: Harness) -> None:
    for name, call, code, field in CASES:
        err = await refused(call(three))
        assert err.code() == code, (name, err.details())
        if field:
            assert field in field_violations(err), (name, field_violations(err))
    log = await three.log("acme")
    assert [r.index for r in log] == [0, 1, 2]
    assert (await three.v2.VerifyRange(pb.VerifyRangeRequest(), metadata=ACME)).valid
    keys = await three.v2.GetCheckpointKeys(pb.GetCheckpointKeysRequest(), metadata=ACME)
    assert len(keys.keys) == 1


async def test_an_empty_log_has_a_checkpoint_of_size_zero_and_nothing_to_prove(
    audit: Harness,
) -> None:
    nobody = as_tenant("nobody")
    cp = (await audit.v2.GetCheckpoint(pb.GetCheckpointRequest(), metadata=nobody)).checkpoint
    assert (cp.tree_size, cp.root_hash.hex()) == (
        0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    )
    err = await refused(
        audit.v2.GetInclusionProof(pb.GetInclusionProofRequest(index=0), metadata=nobody)
    )
    assert err.code() == MISSING
    check = await audit.v2.VerifyRange(pb.VerifyRangeRequest(), metadata=nobody)
    assert (check.valid, check.checked_count) == (True, 0)
