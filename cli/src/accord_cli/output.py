"""How every command ends: what it prints (a table or text, or the API's JSON with
`--json`, to stdout or `--output-file`), what it says on a failed call, and its exit code.

Exit codes, the same in every group:

    0  done (the job succeeded, the policy allowed)
    1  the work failed: a job ended FAILED, DEAD_LETTER, REJECTED or CANCELLED; a policy denied
    2  bad usage or input (also INVALID_ARGUMENT, ALREADY_EXISTS from the service)
    3  not found, or not in a state that allows it (NOT_FOUND, FAILED_PRECONDITION, ABORTED)
    4  the service refused or failed otherwise, or could not be reached
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from accord_cli.connect import ConfigError
from accord_cli.status import read_failure

OK, FAILED, USAGE, MISSING, UNAVAILABLE = 0, 1, 2, 3, 4
INTERRUPTED = 130  # Ctrl-C, as a shell reports it
STATUS_EXITS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.ALREADY_EXISTS: USAGE,
    grpc.StatusCode.OUT_OF_RANGE: USAGE,
    grpc.StatusCode.NOT_FOUND: MISSING,
    grpc.StatusCode.ABORTED: MISSING,
    grpc.StatusCode.FAILED_PRECONDITION: MISSING,
}


class Exit(Exception):
    """Stop the command with `code`, printing `message` to stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument(
        "--output-file", "-o", type=Path, default=None, help="write the output here, not stdout"
    )


def to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=2)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    lines = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


class Printer:
    """Where a command's output goes: stdout or the `--output-file`, text or JSON."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(getattr(args, "json", False))
        self.path: Path | None = getattr(args, "output_file", None)
        self._file: TextIO | None = None

    def emit(self, message: Message, text: Callable[[], str] | str) -> None:
        """The message as JSON with `--json`, otherwise the readable `text`."""
        self.line(to_json(message) if self.json else (text if isinstance(text, str) else text()))

    def line(self, text: str) -> None:
        out = sys.stdout
        if self.path is not None:
            if self._file is None:
                self._file = self.path.open("w", encoding="utf-8")
            out = self._file
        print(text, file=out, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def command(
    group: str,
    exits: Mapping[grpc.StatusCode, int] | Callable[[grpc.StatusCode], int] = STATUS_EXITS,
) -> Callable[[Callable[[argparse.Namespace, Printer], int]], Callable[[argparse.Namespace], int]]:
    """Wrap a command body: give it a Printer, turn failures into a message and an exit code.

    `exits` maps a failed call's status to the exit code (default: the table above).
    """

    def exit_for(code: grpc.StatusCode) -> int:
        return exits(code) if callable(exits) else exits.get(code, UNAVAILABLE)

    def wrap(
        body: Callable[[argparse.Namespace, Printer], int],
    ) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(body)
        def run(args: argparse.Namespace) -> int:
            printer = Printer(args)
            try:
                return int(body(args, printer))
            except Exit as exc:
                _say(group, [str(exc)])
                return exc.code
            except grpc.RpcError as exc:
                failure = read_failure(exc)
                _say(group, failure.lines())
                return exit_for(exc.code())
            except (ConfigError, OSError, ValueError, json_format.ParseError) as exc:
                _say(group, [str(exc)])
                return USAGE
            except KeyboardInterrupt:
                return INTERRUPTED
            finally:
                printer.close()

        return run

    return wrap


def _say(group: str, lines: list[str]) -> None:
    print(f"accord {group}: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)
