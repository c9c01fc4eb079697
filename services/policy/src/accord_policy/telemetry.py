"""Counting policy decisions by kind, outcome and deciding reason (bounded labels)."""

from __future__ import annotations

from collections.abc import Sequence

from accord.common.v1 import decision_pb2
from accord_kit import metrics as m

_reasons = m.Bounded()


def count_decisions(
    made: Sequence[tuple[str, str, decision_pb2.PolicyDecision]], *, dry_run: bool
) -> None:
    """One count per (job id, URL, decision): a request's decision names its URL."""
    for _, url, d in made:
        kind = "dry_run" if dry_run else ("request" if url else "job")
        outcome = decision_pb2.DecisionOutcome.Name(d.outcome).removeprefix("DECISION_OUTCOME_")
        reason = _reasons(d.reasons[0].code) if d.reasons else "NONE"
        m.POLICY_DECISIONS.labels(kind, outcome.lower(), reason).inc()
