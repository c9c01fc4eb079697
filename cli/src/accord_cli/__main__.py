"""`accord`: the command line. `accord up` runs the whole suite; `accord auth` manages tokens;
`accord jobs` submits and follows jobs; `accord policies` reads, changes and asks the
tenant's policies; `accord schedules` manages schedules; `accord workflows` and
`accord webhooks` manage workflows and their webhooks; `accord audit` reads, exports and
verifies the audit log; `accord mcp` serves all of it to AI assistants. Every group shares
`accord_cli.connect` (addresses, token, TLS, profiles) and `accord_cli.output` (tables,
`--json`, `--output-file`, exit codes)."""

from __future__ import annotations

import argparse
import sys

from accord_cli import audit, auth, jobs, mcp_command, policies, schedules, up, workflows
from accord_cli.connect import add_global_options


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="accord", description="Accord command line.")
    add_global_options(found)
    commands = found.add_subparsers(dest="command", required=True)
    up.register(commands)
    auth.register(commands)
    jobs.register(commands)
    policies.register(commands)
    schedules.register(commands)
    workflows.register(commands)
    audit.register(commands)
    mcp_command.register(commands)
    return found


def main() -> None:
    args = parser().parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
