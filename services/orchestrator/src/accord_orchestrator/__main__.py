"""`python -m accord_orchestrator [serve|migrate]`."""

from accord_kit.process import run_service
from accord_orchestrator.app import App, migrate
from accord_orchestrator.config import Settings


def main() -> None:
    run_service("orchestrator", Settings, App, migrate)


if __name__ == "__main__":
    main()
