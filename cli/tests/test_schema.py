"""The MCP tools' input schemas, read from the descriptors: every request field is there,
real requests in the proto JSON mapping validate, and what the mapping refuses is refused."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs; two calls used
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from accord.audit.v1 import audit_service_pb2
from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_service_pb2, schedule_pb2, schedule_service_pb2
from accord_cli.mcp_server import TOOLS, tools
from accord_cli.schema import message_schema


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_every_tool_schema_is_valid_and_has_every_request_field() -> None:
    found = tools()
    assert [t.name for t in TOOLS] == list(found)
    for tool in found.values():
        jsonschema.Draft202012Validator.check_schema(tool.schema)
        fields = {f.name for f in tool.request.DESCRIPTOR.fields} - set(tool.spec.fixed)
        extra = {"timeout_seconds"} if tool.spec.name == "watch_job" else set()
        assert set(tool.schema["properties"]) == fields | extra, tool.spec.name
        assert tool.definition.description, tool.spec.name
        assert "Needs scope " in (tool.definition.description or "")


def test_real_requests_validate() -> None:
    spec = job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_BROWSER,
        priority=5,
        labels={"team": "web"},
        retry_policy=job_spec_pb2.RetryPolicy(max_attempts=2, backoff_multiplier=1.5),
        steps=[
            job_spec_pb2.Step(
                name="page", request=job_spec_pb2.RequestStep(url="https://x.test/", body=b"\x00")
            ),
            job_spec_pb2.Step(extract=job_spec_pb2.ExtractStep(selector="a", all=True)),
        ],
    )
    spec.attempt_timeout.FromSeconds(90)
    spec.not_before_time.FromSeconds(1_900_000_000)
    requests: list[Message] = [
        job_service_pb2.CreateJobRequest(request_id="r-1", spec=spec),
        job_service_pb2.ListJobsRequest(
            states=[3, 4], page_size=10, create_time_after=spec.not_before_time
        ),
        job_service_pb2.WatchJobRequest(
            job_id="00000000-0000-0000-0000-000000000000", after_version=7
        ),
        schedule_service_pb2.CreateScheduleRequest(
            schedule=schedule_pb2.Schedule(
                display_name="n",
                spec=schedule_pb2.ScheduleSpec(cron="0 * * * *"),
                job_template=spec,
            )
        ),
        audit_service_pb2.GetRecordRequest(index=3),
    ]
    for request in requests:
        schema = message_schema(request.DESCRIPTOR)
        document = as_json(request)
        jsonschema.validate(document, schema)
        # And what validates parses back to the same message.
        assert json_format.ParseDict(document, type(request)()) == request


@pytest.mark.parametrize(
    ("message", "document"),
    [
        (job_service_pb2.CreateJobRequest, {"spec": {"engine": "ENGINE_FAX"}}),
        (job_service_pb2.CreateJobRequest, {"spec": {"steps": [{"colour": "red"}]}}),
        (job_service_pb2.CreateJobRequest, {"spec": {"attempt_timeout": "90 seconds"}}),
        (job_service_pb2.ListJobsRequest, {"page_size": "ten"}),
        (job_service_pb2.WatchJobRequest, {"after_version": "7a"}),
        (audit_service_pb2.GetRecordRequest, {"index": 1, "event_id": "e"}),  # a oneof, twice
        (job_service_pb2.GetJobRequest, {"jobId": "camel case is not the schema's name"}),
        # The protovalidate rules the schema carries over.
        (job_service_pb2.GetJobRequest, {"job_id": "not-a-uuid"}),
        (job_service_pb2.ListJobsRequest, {"page_size": 1001}),
        (job_service_pb2.ListJobsRequest, {"states": ["JOB_STATE_UNSPECIFIED"]}),
        (job_service_pb2.CreateJobRequest, {"request_id": "spaces are not allowed"}),
        (job_service_pb2.CreateJobRequest, {"request_id": "r"}),  # spec is required
        (job_service_pb2.CreateJobRequest, {"spec": {"engine": "ENGINE_HTTP", "steps": []}}),
        (job_service_pb2.CreateJobRequest, {"spec": {"labels": {"k": "v" * 256}}}),
        (audit_service_pb2.GetRecordRequest, {}),  # a oneof the rules require
    ],
)
def test_what_the_schema_refuses(message: type[Message], document: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, message_schema(message.DESCRIPTOR))


def test_descriptions_come_from_the_proto_comments() -> None:
    schema = message_schema(job_service_pb2.CancelJobRequest.DESCRIPTOR)
    assert schema["description"] == "Request of JobService.CancelJob."
    assert schema["properties"]["reason"]["description"].startswith("Why, recorded on the job")
    recursive = message_schema(job_spec_pb2.JobSpec.DESCRIPTOR)
    step = recursive["$defs"]["accord.common.v1.Step"]
    extract = step["properties"]["extract"]
    assert extract["$ref"] == "#/$defs/accord.common.v1.ExtractStep"
    assert extract["description"]
    assert "accord.common.v1.ExtractStep" in recursive["$defs"]
