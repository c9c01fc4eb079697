"""What the RPC gate costs per call: token checks beside the request validation they precede.

    uv run python bench/auth_gate.py [--calls 20000]

Runs the boundary's two checks in process, the way every RPC runs them: `Authenticator.admit`
(bearer token, scope, tenant, rate limit) and protovalidate on a CreateJobRequest. The token
is measured twice: a first sight (Ed25519 signature verified) and the cached path every later
call with the same token takes. Prints microseconds per call; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_service_pb2
from accord_kit import tokens
from accord_kit.auth import Authenticator, RateLimiter, bearer
from accord_kit.boundary import validate
from accord_kit.revocations import Revocations

METHOD = "/accord.orchestrator.v1.JobService/CreateJob"


def per_call_us(work: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        work(i)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    key = tokens.generate_key()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.json"
        tokens.write_key_set(path, [key])
        unlimited = RateLimiter(1e12, 1e12)
        auth = Authenticator(tokens.KeySet(path), Revocations(), unlimited, unlimited)

        def issue(i: int) -> tuple[tuple[str, str], ...]:
            token = tokens.issue(
                key, subject=f"u{i}", tenant="acme", scopes=["jobs:write"], ttl=timedelta(hours=1)
            )
            return bearer(token)

        fresh = [issue(i) for i in range(min(args.calls, 5000))]
        first = per_call_us(lambda i: auth.admit(METHOD, fresh[i]), len(fresh))
        cached = per_call_us(lambda i: auth.admit(METHOD, fresh[0]), args.calls)
        spec = job_spec_pb2.JobSpec(
            engine=job_spec_pb2.ENGINE_HTTP,
            steps=[job_spec_pb2.Step(request=job_spec_pb2.RequestStep(url="https://example.com/"))],
        )
        request = job_service_pb2.CreateJobRequest(request_id="bench-1", spec=spec)
        validation_calls = max(args.calls // 20, 200)
        validated = per_call_us(lambda i: validate(request), validation_calls)
    print(f"{'check, per CreateJob call':<44} {'µs':>9}")
    print(f"{'admit, token seen first (Ed25519 verify)':<44} {first:>9.1f}")
    print(f"{'admit, token seen before (cached)':<44} {cached:>9.1f}")
    print(f"{'validate CreateJobRequest (for scale)':<44} {validated:>9.1f}")


if __name__ == "__main__":
    main()
