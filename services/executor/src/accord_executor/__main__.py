"""`python -m accord_executor [serve]`; the executor holds nothing durable to migrate."""

from accord_executor.app import App
from accord_executor.config import Settings
from accord_kit.process import run_service


def main() -> None:
    run_service("executor", Settings, App)


if __name__ == "__main__":
    main()
