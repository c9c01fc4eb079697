"""`accord`: the command line. `accord up` runs the whole suite; `accord auth` manages tokens;
`accord policies` reads, changes and asks the tenant's policies; `accord schedules` manages
schedules; `accord audit` reads, exports and verifies the audit log."""

from __future__ import annotations

import argparse
import sys

from accord_cli import audit, auth, policies, schedules, up


def main() -> None:
    parser = argparse.ArgumentParser(prog="accord", description="Accord command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    up.register(commands)
    auth.register(commands)
    policies.register(commands)
    schedules.register(commands)
    audit.register(commands)
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
