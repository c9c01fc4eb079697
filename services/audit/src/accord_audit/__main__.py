"""`python -m accord_audit [serve|migrate]`."""

from accord_audit.app import App, migrate
from accord_audit.config import Settings
from accord_kit.process import run_service


def main() -> None:
    run_service("audit", Settings, App, migrate)


if __name__ == "__main__":
    main()
