"""`accord mcp`: Accord's jobs, schedules, policy dry runs and audit log as MCP tools.

    accord mcp                                     stdio, for an assistant that starts it
    accord mcp --transport http --port 8765        streamable HTTP at http://127.0.0.1:8765/mcp

The server acts with one Accord token (the usual `--token-file`, `$ACCORD_TOKEN`, profile)
and passes it on every call: the services check its scopes, so the server can do nothing
the token does not allow. Each tool is one RPC; its input schema is the request message's,
read from the descriptors (see `accord_cli.schema`). A refused call comes back as a tool
error carrying the gRPC code, message, reason and field violations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import jsonschema  # type: ignore[import-untyped]  # no stubs; two calls used
import mcp_types as types
import uvicorn
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from accord.audit.v1 import audit_service_pb2_grpc
from accord.common.v1 import auth_pb2
from accord.orchestrator.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_service_pb2_grpc,
)
from accord.policy.v1 import policy_service_pb2_grpc
from accord_cli.connect import Connection, resolve
from accord_cli.jobs import TERMINAL
from accord_cli.schema import comments, message_schema
from accord_cli.status import CallFailure, read_failure

# Which process serves each gRPC service, and its generated stub.
STUBS: Mapping[str, tuple[str, Callable[[grpc.aio.Channel], Any]]] = {
    "accord.orchestrator.v1.JobService": ("orchestrator", job_service_pb2_grpc.JobServiceStub),
    "accord.orchestrator.v1.ScheduleService": (
        "orchestrator",
        schedule_service_pb2_grpc.ScheduleServiceStub,
    ),
    "accord.policy.v1.PolicyService": ("policy", policy_service_pb2_grpc.PolicyServiceStub),
    "accord.audit.v1.AuditService": ("audit", audit_service_pb2_grpc.AuditServiceStub),
}
WATCH_DEFAULT_SECONDS, WATCH_MAX_SECONDS = 60, 600


@dataclass(frozen=True)
class ToolSpec:
    """A tool: one RPC, with fields the server fixes (hidden from the schema) or fills in."""

    name: str
    method: str  # full name, `package.Service.Method`
    fixed: Mapping[str, Any] = field(default_factory=dict)
    generated: tuple[str, ...] = ()  # idempotency keys made up when the caller gives none
    note: str = ""


TOOLS = (
    ToolSpec(
        "create_job", "accord.orchestrator.v1.JobService.CreateJob", generated=("request_id",)
    ),
    ToolSpec("get_job", "accord.orchestrator.v1.JobService.GetJob"),
    ToolSpec("list_jobs", "accord.orchestrator.v1.JobService.ListJobs"),
    ToolSpec(
        "watch_job",
        "accord.orchestrator.v1.JobService.WatchJob",
        note=f"Returns when the job ends or after timeout_seconds ({WATCH_DEFAULT_SECONDS} by "
        f"default, at most {WATCH_MAX_SECONDS}), with every change seen and the job as it is.",
    ),
    ToolSpec("cancel_job", "accord.orchestrator.v1.JobService.CancelJob"),
    ToolSpec("retry_job", "accord.orchestrator.v1.JobService.RetryJob"),
    ToolSpec(
        "create_schedule",
        "accord.orchestrator.v1.ScheduleService.CreateSchedule",
        generated=("request_id",),
    ),
    ToolSpec("list_schedules", "accord.orchestrator.v1.ScheduleService.ListSchedules"),
    ToolSpec("pause_schedule", "accord.orchestrator.v1.ScheduleService.PauseSchedule"),
    ToolSpec("resume_schedule", "accord.orchestrator.v1.ScheduleService.ResumeSchedule"),
    ToolSpec(
        "trigger_schedule",
        "accord.orchestrator.v1.ScheduleService.TriggerSchedule",
        generated=("request_id",),
    ),
    ToolSpec(
        "evaluate_job",
        "accord.policy.v1.PolicyService.EvaluateJob",
        fixed={"dry_run": True},
        note="Always a dry run: nothing is recorded as a binding decision.",
    ),
    ToolSpec("list_audit_records", "accord.audit.v1.AuditService.ListRecords"),
    ToolSpec("get_audit_record", "accord.audit.v1.AuditService.GetRecord"),
)


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    method: MethodDescriptor
    request: type[Message]
    schema: dict[str, Any]

    @property
    def definition(self) -> types.Tool:
        scope = self.method.GetOptions().Extensions[auth_pb2.required_scope]
        text = comments().get(self.method.full_name, "")
        text = " ".join(p for p in (text, self.spec.note, f"Needs scope {scope}.") if p)
        return types.Tool(name=self.spec.name, description=text, input_schema=self.schema)


def tools() -> dict[str, Tool]:
    """Every tool, its request type and input schema read from the descriptors."""
    pool = descriptor_pool.Default()
    found = {}
    for spec in TOOLS:
        method = pool.FindMethodByName(spec.method)
        schema = message_schema(
            method.input_type, omit=frozenset(spec.fixed), optional=frozenset(spec.generated)
        )
        if spec.name == "watch_job":
            schema["properties"]["timeout_seconds"] = {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": WATCH_MAX_SECONDS,
                "description": "How long to follow the job before returning it unfinished.",
            }
        request = message_factory.GetMessageClass(method.input_type)
        found[spec.name] = Tool(spec, method, request, schema)
    return found


class AccordTools:
    """Calls the services for the tools, with the connection's token on every call."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tools = tools()
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, method: MethodDescriptor) -> Any:
        process, make = STUBS[method.containing_service.full_name]
        if process not in self._channels:
            self._channels[process] = self.conn.aio_channel(process)
        return make(self._channels[process])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)

    async def list_tools(self, *_: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[t.definition for t in self.tools.values()])

    async def call_tool(self, _: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = self.tools.get(params.name)
        if tool is None:
            return _error(CallFailure("NOT_FOUND", f"no tool {params.name!r}"))
        arguments = dict(params.arguments or {})
        try:
            jsonschema.validate(arguments, tool.schema)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "(arguments)"
            bad = CallFailure("INVALID_ARGUMENT", "arguments do not match the input schema")
            return _error(bad, {where: exc.message})
        timeout = float(arguments.pop("timeout_seconds", WATCH_DEFAULT_SECONDS))
        try:
            request = json_format.ParseDict({**arguments, **tool.spec.fixed}, tool.request())
        except json_format.ParseError as exc:  # what a schema cannot say, e.g. a bad time
            bad = CallFailure("INVALID_ARGUMENT", "arguments do not match the request message")
            return _error(bad, {"(arguments)": str(exc)})
        for name in tool.spec.generated:
            if not getattr(request, name):
                setattr(request, name, uuid.uuid4().hex)
        try:
            if tool.spec.name == "watch_job":
                found = await self._watch(tool, request, timeout)
            else:
                rpc = getattr(self.stub(tool.method), tool.method.name)
                reply = await rpc(request, metadata=self.conn.metadata(), timeout=self.conn.timeout)
                found = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        except grpc.aio.AioRpcError as exc:
            return _error(read_failure(exc))
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(found, indent=2))],
            structured_content=found,
        )

    async def _watch(self, tool: Tool, request: Message, timeout: float) -> dict[str, Any]:
        """Every change until the job ends or `timeout` passes, and the job as last seen."""
        stream = self.stub(tool.method).WatchJob(request, metadata=self.conn.metadata())
        changes: list[dict[str, Any]] = []
        last: job_pb2.Job | None = None
        try:
            async with asyncio.timeout(timeout):
                async for item in stream:
                    changes.append(
                        json_format.MessageToDict(item.change, preserving_proto_field_name=True)
                    )
                    last = item.job
        except TimeoutError:
            stream.cancel()
        if last is None:
            get = job_service_pb2.GetJobRequest(job_id=request.job_id)  # type: ignore[attr-defined]
            stub = self.stub(tool.method)
            got = await stub.GetJob(get, metadata=self.conn.metadata(), timeout=self.conn.timeout)
            last = got.job
        job = json_format.MessageToDict(last, preserving_proto_field_name=True)
        return {"finished": last.state in TERMINAL, "changes": changes, "job": job}


def _error(
    failure: CallFailure, violations: Mapping[str, str] | None = None
) -> types.CallToolResult:
    found = failure.as_dict()
    if violations:
        found["field_violations"] = dict(violations)
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(found, indent=2))],
        structured_content=found,
        is_error=True,
    )


def server(accord: AccordTools) -> Server[Any]:
    return Server(
        "accord",
        version="0.1.0",
        instructions="Run and follow policy-governed web jobs and schedules; read the audit log.",
        on_list_tools=accord.list_tools,
        on_call_tool=accord.call_tool,
    )


def run(args: argparse.Namespace) -> int:
    accord = AccordTools(resolve(args))
    if args.transport == "stdio":
        asyncio.run(_stdio(accord))
    else:
        _http(accord, args.host, args.port)
    return 0


async def _stdio(accord: AccordTools) -> None:
    app = server(accord)
    try:
        async with stdio_server() as (read, write):
            await app.run(read, write, app.create_initialization_options())
    finally:
        await accord.close()


def _http(accord: AccordTools, host: str, port: int) -> None:
    app = server(accord).streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
