"""What the rules every request obeys cost per call, beside the protovalidate check they precede.

    uv run python bench/wellformed.py [--calls 2000]

In process, no servers: times `accord_kit.wellformed.check` (NUL in any string, valid
durations and timestamps, UUID ids lowercased) and the boundary's whole `validate` (that
check, then protovalidate's rules) on a small CreateJobRequest and on the largest request
the queue takes, a CompleteTaskRequest of 500 completions with results. Prints microseconds
per call side by side; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from google.protobuf import duration_pb2, struct_pb2

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_service_pb2, worker_service_pb2
from accord_kit import wellformed
from accord_kit.boundary import validate


def per_call_us(work: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1e6


def create_job() -> job_service_pb2.CreateJobRequest:
    spec = job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[job_spec_pb2.Step(request=job_spec_pb2.RequestStep(url="https://example.com/"))],
        labels={"team": "web", "env": "prod"},
    )
    return job_service_pb2.CreateJobRequest(request_id="bench-1", spec=spec)


def complete_tasks(count: int = 500) -> worker_service_pb2.CompleteTaskRequest:
    request = worker_service_pb2.CompleteTaskRequest(worker_id="bench")
    for i in range(count):
        outputs = struct_pb2.Struct()
        outputs.update({"title": f"Page {i}", "links": ["/a", "/b", "/c"], "count": i})
        result = job_result_pb2.JobResult(
            outputs=outputs,
            steps=[job_result_pb2.StepResult(index=0, name="title", status=1)],
            duration=duration_pb2.Duration(seconds=1),
        )
        done = request.completions.add(result=result)
        done.lease.job_id = f"0b4c1f2e-6d5a-4e3b-9c8d-{i:012d}"
        done.lease.attempt = 1
    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'request':<36} {'wellformed µs':>14} {'validate µs':>12} {'share':>6}")
    for name, request, calls in (
        ("CreateJobRequest", create_job(), args.calls),
        ("CompleteTaskRequest, 500 results", complete_tasks(), max(args.calls // 100, 5)),
    ):
        check = per_call_us(lambda r=request: wellformed.check(r), calls)  # type: ignore[misc]
        whole = per_call_us(lambda r=request: validate(r), calls)  # type: ignore[misc]
        print(f"{name:<36} {check:>14.1f} {whole:>12.1f} {check / whole:>6.1%}")


if __name__ == "__main__":
    main()
