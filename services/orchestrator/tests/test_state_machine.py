"""The job state machine as a property: whatever the clients and workers do, in any order,
no job reaches a state the machine forbids, skips a version, completes twice or is lost.

Hypothesis drives the domain's transition functions, the ones every API call and worker
report goes through, with stale and duplicate reports mixed in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from accord.common.v1 import job_spec_pb2 as js
from accord_kit.errors import FailedPrecondition
from accord_orchestrator.domain import jobs as rules

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORKERS = st.sampled_from(["w1", "w2"])


class JobMachine(RuleBasedStateMachine):
    job_ids = Bundle("job_ids")

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, rules.Job] = {}
        self.history: dict[str, list[rules.Change]] = {}
        self.leases_handed: dict[str, list[rules.Lease]] = {}
        self.clock = T0
        self.spec = js.JobSpec(retry_policy=js.RetryPolicy(max_attempts=3))

    def _now(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def _apply(self, t: rules.Transition) -> None:
        before = self.jobs.get(t.job.job_id)
        assert t.change.previous_state == (before.state if before else rules.UNSPECIFIED)
        self.jobs[t.job.job_id] = t.job
        self.history.setdefault(t.job.job_id, []).append(t.change)

    @rule(target=job_ids, allowed=st.booleans(), limit=st.integers(1, 4))
    def admit(self, allowed: bool, limit: int) -> str:
        job_id = f"j{len(self.jobs)}"
        spec = js.JobSpec(retry_policy=js.RetryPolicy(max_attempts=limit))
        now = self._now()
        self._apply(rules.admit(job_id, "t", spec, allowed=allowed, message="no", due=now, now=now))
        return job_id

    @rule(job_id=job_ids, worker=WORKERS)
    def lease(self, job_id: str, worker: str) -> None:
        job = self.jobs[job_id]
        if job.state != rules.QUEUED:
            return  # the queue only offers QUEUED jobs
        now = self._now()
        t = rules.lease(job, worker, now + timedelta(seconds=30), now)
        self._apply(t)
        self.leases_handed.setdefault(job_id, []).append(rules.Lease(job_id, t.job.attempt))

    def _report(self, job_id: str, worker: str, pick: int) -> tuple[rules.Job, rules.Lease] | None:
        """A lease some worker once held (maybe stale), if the fence lets it through."""
        handed = self.leases_handed.get(job_id)
        if not handed:
            return None
        lease = handed[pick % len(handed)]
        job = self.jobs[job_id]
        if not rules.holds(job, worker, lease):
            return None  # refused: stale attempt, other worker, or no longer running
        assert job.state == rules.RUNNING
        assert job.attempt == lease.attempt
        return job, lease

    @rule(job_id=job_ids, worker=WORKERS, pick=st.integers(0, 5))
    def complete(self, job_id: str, worker: str, pick: int) -> None:
        if (held := self._report(job_id, worker, pick)) is not None:
            self._apply(rules.complete(held[0], self._now(), b""))

    @rule(job_id=job_ids, worker=WORKERS, pick=st.integers(0, 5), retryable=st.booleans())
    def fail(self, job_id: str, worker: str, pick: int, retryable: bool) -> None:
        if (held := self._report(job_id, worker, pick)) is not None:
            t = rules.fail(
                held[0],
                self._now(),
                "X",
                "boom",
                retryable=retryable,
                policy=self.spec.retry_policy,
            )
            self._apply(t)

    @rule(job_id=job_ids)
    def expire(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job.state == rules.RUNNING:  # the reaper picks only RUNNING jobs past deadline
            self._apply(rules.expire(job, self._now(), self.spec.retry_policy))

    @rule(job_id=job_ids)
    def release(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job.state == rules.RUNNING:
            self._apply(rules.release(job, self._now()))
            self.leases_handed[job_id].pop()  # that lease never reached anyone

    @rule(job_id=job_ids)
    def requeue(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job.state == rules.FAILED:
            self._apply(rules.requeue(job, self._now()))

    @rule(job_id=job_ids)
    def cancel(self, job_id: str) -> None:
        job = self.jobs[job_id]
        try:
            self._apply(rules.cancel(job, self._now(), ""))
        except FailedPrecondition:
            assert job.state in rules.TERMINAL  # only a finished job cannot be cancelled

    @rule(job_id=job_ids)
    def retry(self, job_id: str) -> None:
        job = self.jobs[job_id]
        try:
            self._apply(rules.retry(job, self._now(), self.spec))
        except FailedPrecondition:
            assert job.state not in (rules.FAILED, rules.DEAD_LETTER)

    @rule(job_id=consumes(job_ids))
    def forget_handle(self, job_id: str) -> None:
        """Clients drop their handle; the job itself must live on."""

    @invariant()
    def every_change_is_legal_and_versions_are_contiguous(self) -> None:
        for job_id, changes in self.history.items():
            assert [c.version for c in changes] == list(range(1, len(changes) + 1))
            for c in changes:
                assert rules.can_transition(c.previous_state, c.state), c
            assert self.jobs[job_id].version == changes[-1].version
            assert self.jobs[job_id].state == changes[-1].state

    @invariant()
    def no_job_is_lost_or_completed_twice(self) -> None:
        for job_id, job in self.jobs.items():
            assert job.state in rules.TRANSITIONS or job.state in rules.TERMINAL
            succeeded = [c for c in self.history[job_id] if c.state == rules.SUCCEEDED]
            assert len(succeeded) <= 1
            if succeeded:
                assert job.state == rules.SUCCEEDED  # nothing leaves SUCCEEDED

    @invariant()
    def leases_and_attempts_agree_with_the_state(self) -> None:
        for job in self.jobs.values():
            held = job.lease_worker is not None
            assert held == (job.state == rules.RUNNING)
            if job.state == rules.FAILED:
                assert job.attempt < job.attempt_limit  # a retry is really due
            assert (job.finish_time is not None) == (job.state in rules.TERMINAL)


JobMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_job_state_machine = JobMachine.TestCase


@given(
    attempt=st.integers(1, 1000),
    initial_ms=st.integers(1, 10_000),
    cap_s=st.integers(1, 86_400),
    multiplier=st.floats(1.0, 10.0),
)
def test_retry_delay_stays_under_the_jobs_own_exponential_cap(
    attempt: int, initial_ms: int, cap_s: int, multiplier: float
) -> None:
    policy = js.RetryPolicy(
        initial_backoff=duration_pb2.Duration(nanos=initial_ms * 1_000_000)
        if initial_ms < 1000
        else duration_pb2.Duration(seconds=initial_ms // 1000),
        max_backoff=duration_pb2.Duration(seconds=cap_s),
        backoff_multiplier=multiplier,
    )
    initial = policy.initial_backoff.ToTimedelta().total_seconds()
    try:
        ceiling = min(float(cap_s), initial * multiplier ** (attempt - 1))
    except OverflowError:
        ceiling = float(cap_s)
    delay = rules.backoff(policy, attempt).total_seconds()
    assert 0 <= delay <= ceiling + 1e-6
