"""Webhook signatures: HMAC-SHA256 over `<timestamp>.<body>`, keyed with the webhook's
secret, sent as `v1=<hex>` beside the timestamp (see the Webhook message in
workflow.proto). A receiver refuses a timestamp further than the tolerance from its clock,
so a captured delivery cannot be replayed later."""

from __future__ import annotations

import hashlib
import hmac

TOLERANCE = 300  # seconds a receiver should accept a timestamp away from its own clock
SCHEME = "v1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance: int = TOLERANCE
) -> str | None:
    """Why a delivery must be refused, or None when it is genuine and fresh."""
    try:
        at = int(timestamp)
    except ValueError:
        return "timestamp is not a number"
    if abs(now - at) > tolerance:
        return "timestamp outside the tolerance (a replay, or a skewed clock)"
    if not hmac.compare_digest(sign(secret, at, body), signature):
        return "signature does not match"
    return None
