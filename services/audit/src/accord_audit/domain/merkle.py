"""The RFC 9162 Merkle tree of a log, kept as the hashes of its perfect subtrees.

A node is named by (level, index): it covers leaves [index * 2**level, (index + 1) * 2**level)
and is stored once that range is complete. Appending a leaf adds its level-0 node and every
parent it completes, which only needs the log's *frontier*: the perfect subtrees that make up
the tree before it (one per set bit of its size). Any subtree a proof names is then either a
stored node or the hash of at most log2(n) stored nodes, so a proof for any size up to the
latest reads O(log n) nodes and never recomputes the tree.

Proofs are built in two steps so that the store can fetch every node in one query:
`*_nodes` says which nodes a proof needs, `*_proof` computes it from them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

Node = tuple[int, int]  # (level, index)

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def frontier(size: int) -> list[Node]:
    """The perfect subtrees that make up a tree of `size` leaves, left to right."""
    return [
        (level, (size >> level) - 1)
        for level in range(size.bit_length() - 1, -1, -1)
        if size >> level & 1
    ]


def append(size: int, known: Mapping[Node, bytes], leaves: Iterable[bytes]) -> dict[Node, bytes]:
    """The nodes that appending `leaves` to a tree of `size` completes.

    `known` must hold the frontier of `size`; the result holds every new node, leaves too.
    """
    nodes = dict(known)
    added: dict[Node, bytes] = {}
    for offset, leaf in enumerate(leaves):
        level, index = 0, size + offset
        digest = leaf_hash(leaf)
        added[(0, index)] = nodes[(0, index)] = digest
        while index & 1:  # a right child: its left sibling is complete, so is their parent
            digest = node_hash(nodes[(level, index - 1)], digest)
            level, index = level + 1, index >> 1
            added[(level, index)] = nodes[(level, index)] = digest
    return added


def _subtree_nodes(lo: int, hi: int, out: set[Node]) -> None:
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        out.add((level, lo >> level))
        return
    k = _split(n)
    _subtree_nodes(lo, lo + k, out)
    _subtree_nodes(lo + k, hi, out)


def _subtree(lo: int, hi: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[lo:hi]) from stored nodes (RFC 9162 2.1.1's recursion, stopped at stored nodes)."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        return nodes[(level, lo >> level)]
    k = _split(n)
    return node_hash(_subtree(lo, lo + k, nodes), _subtree(lo + k, hi, nodes))


def _inclusion_ranges(index: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The subtrees of PATH(index, D[lo:hi]) (RFC 9162 2.1.3.1), leaf side first."""
    path: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def _consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The subtrees of PROOF(m, D[n]) (RFC 9162 2.1.4.1), in proof order."""
    out: list[tuple[int, int]] = []
    lo, hi, complete = 0, n, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            m -= k
            lo, complete = lo + k, False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


def _needed(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    out: set[Node] = set()
    for lo, hi in ranges:
        _subtree_nodes(lo, hi, out)
    return out


def root_nodes(size: int) -> set[Node]:
    return set(frontier(size))


def root(size: int, nodes: Mapping[Node, bytes]) -> bytes:
    return EMPTY_ROOT if size == 0 else _subtree(0, size, nodes)


def inclusion_nodes(index: int, size: int) -> set[Node]:
    return _needed(_inclusion_ranges(index, 0, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The inclusion path of leaf `index` in the tree of `size` leaves (0 <= index < size)."""
    return [_subtree(lo, hi, nodes) for lo, hi in _inclusion_ranges(index, 0, size)]


def consistency_nodes(m: int, n: int) -> set[Node]:
    return _needed(_consistency_ranges(m, n))


def consistency_proof(m: int, n: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The proof that the tree of `m` leaves is a prefix of the one of `n` (1 <= m <= n)."""
    if m == n:
        return []
    return [_subtree(lo, hi, nodes) for lo, hi in _consistency_ranges(m, n)]
