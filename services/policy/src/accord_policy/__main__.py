"""`python -m accord_policy [serve|migrate]`."""

from accord_kit.process import run_service
from accord_policy.app import App, migrate
from accord_policy.config import Settings


def main() -> None:
    run_service("policy", Settings, App, migrate)


if __name__ == "__main__":
    main()
