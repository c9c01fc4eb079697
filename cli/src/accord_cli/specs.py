"""Job specs from files (JSON or YAML, `-` for stdin) or from flags for the one-URL case."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from accord.common.v1 import job_spec_pb2

ENGINES = {e.removeprefix("ENGINE_").lower(): v for e, v in job_spec_pb2.Engine.items() if v}


def read_document(source: str | Path) -> Any:
    """A JSON or YAML document (JSON is read as YAML, which it nearly always is)."""
    text = sys.stdin.read() if str(source) == "-" else Path(source).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is neither JSON nor YAML: {exc}") from None


def parse_spec(document: Any) -> job_spec_pb2.JobSpec:
    if not isinstance(document, dict):
        raise ValueError("a job spec is a mapping with `engine` and `steps`")
    return json_format.ParseDict(document, job_spec_pb2.JobSpec())


def read_spec(source: str | Path) -> job_spec_pb2.JobSpec:
    return parse_spec(read_document(source))


def read_specs(source: str | Path) -> list[job_spec_pb2.JobSpec]:
    """Specs of a batch: a list of specs, or a mapping whose `specs` is one."""
    document = read_document(source)
    if isinstance(document, dict) and "specs" in document:
        document = document["specs"]
    if not isinstance(document, list):
        raise ValueError(f"{source}: a batch is a list of job specs (or `specs:` holding one)")
    return [parse_spec(d) for d in document]


def url_spec(
    url: str, engine: str = "http", extracts: list[tuple[str, str]] | None = None
) -> job_spec_pb2.JobSpec:
    """One request to `url`, then an extract step per `(name, selector)`."""
    step = job_spec_pb2.Step
    steps = [step(name="page", request=job_spec_pb2.RequestStep(url=url))]
    steps += [
        step(name=name, extract=job_spec_pb2.ExtractStep(selector=selector))
        for name, selector in extracts or ()
    ]
    return job_spec_pb2.JobSpec(engine=ENGINES[engine], steps=steps)


def extract(text: str) -> tuple[str, str]:
    """`name=selector`, for `--extract`."""
    name, sep, selector = text.partition("=")
    if not sep or not name or not selector:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=css-selector")
    return name, selector
