"""The launcher's parts: where replicas listen and whom they call, and the supervisor."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from accord_kit.stack.plan import fixed_ports, instance_env, layout
from accord_kit.stack.supervisor import Child, RestartPolicy, StackError, stop_all

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_replicas_get_ports_a_stride_apart_and_call_peers_round_robin() -> None:
    instances = layout({"orchestrator": 2, "executor": 3}, fixed_ports(1000))
    assert [(i.name, i.port, i.metrics_port) for i in instances] == [
        ("policy", 51052, 10452),
        ("orchestrator-0", 51051, 10451),
        ("orchestrator-1", 51061, 10461),
        ("audit", 51054, 10454),
        ("executor-0", 51053, 10453),
        ("executor-1", 51063, 10463),
        ("executor-2", 51073, 10473),
    ]
    envs = {i.name: instance_env(i, instances, "127.0.0.1") for i in instances}
    assert [envs[f"executor-{r}"]["ACCORD_EXECUTOR_ORCHESTRATOR_TARGET"] for r in range(3)] == [
        "127.0.0.1:51051",
        "127.0.0.1:51061",
        "127.0.0.1:51051",
    ]
    assert envs["executor-2"]["ACCORD_EXECUTOR_WORKER_ID"] == "executor-2"
    assert envs["executor-2"]["ACCORD_EXECUTOR_POLICY_TARGET"] == "127.0.0.1:51052"
    assert envs["orchestrator-1"]["ACCORD_ORCHESTRATOR_POLICY_TARGET"] == "127.0.0.1:51052"
    assert envs["audit"] == {
        "ACCORD_AUDIT_HOST": "127.0.0.1",
        "ACCORD_AUDIT_PORT": "51054",
        "ACCORD_AUDIT_METRICS_PORT": "10454",
    }


@pytest.mark.parametrize(
    ("replicas", "message"),
    [({"auditor": 1}, "unknown service auditor"), ({"executor": 0}, "executor replicas")],
)
def test_a_layout_refuses_what_it_cannot_run(replicas: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout(replicas, fixed_ports(0))


def supervise_until(child: Child, done: Callable[[], bool], timeout: float = 10) -> None:
    """Run the supervisor's step by hand until `done()`, as its thread would."""
    deadline = time.monotonic() + timeout
    while True:
        child.check(time.monotonic())
        if done():
            return
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        time.sleep(0.02)


def test_a_dead_child_is_restarted_with_growing_delays_and_a_stopped_one_is_not(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    child = Child("sleeper", SLEEPER, {}, tmp_path / "sleeper.log", said.append)
    child.start()
    child.supervise(RestartPolicy(initial=0.2, maximum=1.0, stable_after=60))
    try:
        delays = []
        for deaths in (1, 2, 3):
            assert child.proc is not None
            first = child.proc.pid
            child.send(signal.SIGKILL)
            supervise_until(child, lambda: child.deaths == deaths)  # noqa: B023 - called now
            line = said[-1]
            assert line.startswith("sleeper exited with code -9 (SIGKILL); restarting in ")
            delays.append(float(line.rsplit(" ", 1)[-1].removesuffix("s")))
            supervise_until(child, lambda: child.alive)
            assert child.proc.pid != first
            assert said[-1] == f"sleeper restarted (pid {child.proc.pid})"
        # Full jitter: each delay anywhere under its doubling ceiling.
        assert len(delays) == 3, delays
        assert all(0 <= d <= cap for d, cap in zip(delays, [0.2, 0.4, 0.8], strict=True)), delays
    finally:
        stop_all([child], timeout=5)
    assert not child.alive
    child.check(time.monotonic() + 100)
    assert not child.alive, "a child stopped on purpose was restarted"
    with pytest.raises(StackError, match="sleeper is not running"):
        child.send(signal.SIGKILL)


def test_a_child_that_stayed_up_starts_over_from_the_first_delay(tmp_path: Path) -> None:
    said: list[str] = []
    child = Child("sleeper", SLEEPER, {}, None, said.append)
    child.start()
    child.supervise(RestartPolicy(initial=10, maximum=100, stable_after=0))
    try:
        for _ in range(3):
            child.send(signal.SIGKILL)
            assert child.proc is not None
            child.proc.wait(5)
            child.check(time.monotonic())
            # Restarted by hand here, as the supervisor would after the delay.
            child.check(time.monotonic() + 100)
        assert all(float(line.rsplit(" ", 1)[-1][:-1]) <= 10 for line in said[::2]), said
    finally:
        stop_all([child], timeout=5)
