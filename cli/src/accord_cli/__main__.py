"""`accord`: the command line. `accord up` runs the whole suite on this machine."""

from __future__ import annotations

import argparse
import sys

from accord_cli import up


def main() -> None:
    parser = argparse.ArgumentParser(prog="accord", description="Accord command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    up.register(commands)
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
