"""`accord mcp`: its options, without loading the MCP SDK until the command runs (it takes
seconds to import, which every other command would otherwise pay)."""

from __future__ import annotations

import argparse
from typing import Any

from accord_cli.connect import add_connection_options


def register(commands: Any) -> None:
    cmd = commands.add_parser("mcp", help="serve Accord to AI assistants over MCP")
    cmd.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    cmd.add_argument("--host", default="127.0.0.1", help="with --transport http")
    cmd.add_argument("--port", type=int, default=8765, help="with --transport http")
    add_connection_options(cmd, ("orchestrator", "policy", "audit"))
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from accord_cli import mcp_server  # noqa: PLC0415 - the SDK loads only for this command

    return mcp_server.run(args)
