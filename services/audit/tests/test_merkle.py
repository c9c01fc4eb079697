"""The incremental Merkle tree against the test's own RFC 9162 verifier (tests/rfc9162.py):
every inclusion and consistency proof of every size up to 70, and a sample of a large tree.
"""

from __future__ import annotations

import hashlib
import random

from accord_audit.domain import merkle
from services.audit.tests.rfc9162 import mth, verify_consistency, verify_inclusion


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def grown(data: list[bytes], batch: int) -> dict[merkle.Node, bytes]:
    """The stored nodes after appending `data` in batches, each given only its frontier."""
    stored: dict[merkle.Node, bytes] = {}
    for start in range(0, len(data), batch):
        known = {node: stored[node] for node in merkle.frontier(start)}
        stored.update(merkle.append(start, known, data[start : start + batch]))
    return stored


def test_every_proof_of_every_size_up_to_70_verifies_and_nothing_wrong_does() -> None:
    data = leaves(70)
    stored = grown(data, batch=3)
    for n in range(1, 71):
        root = mth(data[:n])
        assert merkle.root(n, stored) == root
        for m in range(n):
            path = merkle.inclusion_proof(m, n, stored)
            assert verify_inclusion(data[m], m, n, path, root), (m, n)
            assert not verify_inclusion(data[m - 1 if m else 1], m, n, path, root)  # wrong leaf
            if n > 1:
                assert not verify_inclusion(data[m], (m + 1) % n, n, path, root)  # wrong index
            # Wrong size: the proof does not verify against the other size's root (a path
            # alone cannot bind the size of a left-edge leaf; a signed checkpoint does).
            other = n + 1 if n < len(data) else n - 1
            if m < other:
                assert not verify_inclusion(data[m], m, other, path, mth(data[:other]))
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, stored)
            assert verify_consistency(m, n, mth(data[:m]), root, proof), (m, n)
            if m < n:
                wrong = mth([*data[: m - 1], data[m]])
                assert not verify_consistency(m, n, wrong, root, proof)  # a different old tree
                assert not verify_consistency(m, n, mth(data[:m]), mth(data[: n - 1]), proof)


def test_the_tree_is_the_same_whatever_the_batches() -> None:
    data = leaves(100)
    one = grown(data, batch=1)
    assert grown(data, batch=7) == one == grown(data, batch=100)
    assert len(one) == 2 * 100 - bin(100).count("1")  # every perfect subtree, stored once


def test_a_large_tree_proves_in_log_n_nodes() -> None:
    n = 5000
    data = leaves(n)
    stored = grown(data, batch=250)
    root = mth(data)
    rng = random.Random(7)  # noqa: S311 - picks indexes to check, not secrets
    for m in [0, n - 1, *rng.sample(range(n), 40)]:
        wanted = merkle.inclusion_nodes(m, n)
        assert len(wanted) <= 2 * n.bit_length()
        path = merkle.inclusion_proof(m, n, {k: stored[k] for k in wanted})
        assert verify_inclusion(data[m], m, n, path, root)
    for m in [1, 2, 1024, 4095, 4999, *rng.sample(range(1, n), 20)]:
        wanted = merkle.consistency_nodes(m, n)
        assert len(wanted) <= 2 * n.bit_length()
        proof = merkle.consistency_proof(m, n, {k: stored[k] for k in wanted})
        assert verify_consistency(m, n, mth(data[:m]), root, proof)


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.root(0, {}) == mth([]) == hashlib.sha256(b"").digest()
