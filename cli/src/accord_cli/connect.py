"""Where the services are and who is calling: one resolution for every command group.

Each setting comes from, in order: a command-line flag, an `ACCORD_*` environment variable,
the chosen profile of the config file, then the local default (`accord up`'s ports and
admin token). The config file is YAML, `$ACCORD_CONFIG` or `~/.config/accord/config.yaml`:

    default_profile: local
    profiles:
      prod:
        orchestrator: accord.example.com:50051
        policy: accord.example.com:50052
        audit: accord.example.com:50054
        token_file: ~/.accord/prod.token
        tls_ca: ~/.accord/prod-ca.pem
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from accord_kit.auth import bearer
from accord_kit.ports import DEFAULT_PORTS, default_target
from accord_kit.transport import MESSAGE_LIMITS

DEFAULT_TOKEN_FILE = Path(".accord/auth/admin.token")
DEFAULT_CONFIG = Path("~/.config/accord/config.yaml")
SERVICES = tuple(DEFAULT_PORTS)
# Older names some groups read before they shared this layer; still honoured.
_ENV_ALIASES = {"policy": ("ACCORD_POLICY_TARGET",)}
_PROFILE_KEYS = {*SERVICES, "token", "token_file", "tls_ca", "tls_cert", "tls_key", "timeout"}


class ConfigError(ValueError):
    """The config file or a profile in it is unusable."""


@dataclass(frozen=True)
class Connection:
    """Addresses of the services, the caller's token and the TLS files, all resolved."""

    targets: dict[str, str]
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    timeout: float = 60.0
    profile: str | None = field(default=None)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token) if self.token else ()

    def channel(self, service: str) -> grpc.Channel:
        """A blocking channel to `service` (TLS when a CA is given)."""
        target = self.targets[service]
        if self.tls_ca is None:
            return grpc.insecure_channel(target, options=MESSAGE_LIMITS)
        return grpc.secure_channel(target, self._credentials(), options=MESSAGE_LIMITS)

    def aio_channel(self, service: str) -> grpc.aio.Channel:
        """An asyncio channel to `service` (TLS when a CA is given)."""
        target = self.targets[service]
        if self.tls_ca is None:
            return grpc.aio.insecure_channel(target, options=MESSAGE_LIMITS)
        return grpc.aio.secure_channel(target, self._credentials(), options=MESSAGE_LIMITS)

    def _credentials(self) -> grpc.ChannelCredentials:
        assert self.tls_ca is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes(),
            private_key=self.tls_key.read_bytes() if self.tls_key else None,
            certificate_chain=self.tls_cert.read_bytes() if self.tls_cert else None,
        )


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Options before the command group: `accord --profile prod jobs list`."""
    parser.add_argument(
        "--profile", default=None, help="profile of the config file ($ACCORD_PROFILE)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help=f"config file ($ACCORD_CONFIG, {DEFAULT_CONFIG})"
    )


def add_connection_options(
    parser: argparse.ArgumentParser, services: tuple[str, ...] = SERVICES
) -> None:
    """Address, token and TLS flags of a command; unset flags fall back as the module says."""
    for service in services:
        parser.add_argument(
            f"--{service}",
            dest=f"{service}_target",
            default=None,
            metavar="HOST:PORT",
            help=f"{service} service address ($ACCORD_{service.upper()}, "
            f"default {default_target(service)})",
        )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help=f"bearer token file ($ACCORD_TOKEN or $ACCORD_TOKEN_FILE, then {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument("--tls-ca", type=Path, default=None, help="CA of the services' TLS")
    parser.add_argument("--tls-cert", type=Path, default=None, help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="client key (mTLS)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per call (60)")
    # Also after the command; SUPPRESS keeps a value given before it when not repeated here.
    parser.add_argument(
        "--profile", default=argparse.SUPPRESS, help="profile of the config file ($ACCORD_PROFILE)"
    )
    parser.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help=f"config file ({DEFAULT_CONFIG})"
    )


def load_profile(config: Path | None, name: str | None) -> tuple[str | None, dict[str, Any]]:
    """The named (or default) profile of the config file; `{}` when there is no file."""
    path = (config or Path(os.environ.get("ACCORD_CONFIG") or DEFAULT_CONFIG)).expanduser()
    name = name or os.environ.get("ACCORD_PROFILE") or None
    if not path.exists():
        if name or config is not None:
            raise ConfigError(f"no config file at {path}")
        return None, {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {exc}") from None
    profiles = document.get("profiles") if isinstance(document, dict) else None
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path} has no `profiles:` mapping")
    name = name or document.get("default_profile")
    if name is None:
        return None, {}
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        raise ConfigError(f"{path} has no profile {name!r}; it has {', '.join(sorted(profiles))}")
    unknown = sorted(set(profile) - _PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"profile {name!r} has unknown keys: {', '.join(unknown)}")
    return name, profile


def resolve(args: argparse.Namespace) -> Connection:
    """The connection the flags, environment and profile describe (see the module doc)."""
    name, profile = load_profile(getattr(args, "config", None), getattr(args, "profile", None))
    targets = {s: _target(args, s, profile) for s in SERVICES}
    timeout = getattr(args, "timeout", None) or profile.get("timeout") or 60.0
    return Connection(
        targets=targets,
        token=_token(args, profile),
        tls_ca=_path(args, "tls_ca", profile),
        tls_cert=_path(args, "tls_cert", profile),
        tls_key=_path(args, "tls_key", profile),
        timeout=float(timeout),
        profile=name,
    )


def _target(args: argparse.Namespace, service: str, profile: dict[str, Any]) -> str:
    flag = getattr(args, f"{service}_target", None)
    if flag:
        return str(flag)
    for env in (f"ACCORD_{service.upper()}", *_ENV_ALIASES.get(service, ())):
        if os.environ.get(env):
            return os.environ[env]
    return str(profile.get(service) or default_target(service))


def _path(args: argparse.Namespace, name: str, profile: dict[str, Any]) -> Path | None:
    value = (
        getattr(args, name, None) or os.environ.get(f"ACCORD_{name.upper()}") or profile.get(name)
    )
    return Path(value).expanduser() if value else None


def _token(args: argparse.Namespace, profile: dict[str, Any]) -> str | None:
    """The flag's file, $ACCORD_TOKEN, $ACCORD_TOKEN_FILE, the profile, then the dev token.

    A file named explicitly must exist; the dev token is used only when present (a stack
    with authentication off needs none).
    """
    explicit = getattr(args, "token_file", None)
    if explicit is None and (token := os.environ.get("ACCORD_TOKEN", "").strip()):
        return token
    if explicit is None and profile.get("token"):
        return str(profile["token"]).strip()
    named = explicit or os.environ.get("ACCORD_TOKEN_FILE") or profile.get("token_file")
    if named:
        return Path(named).expanduser().read_text().strip()
    return DEFAULT_TOKEN_FILE.read_text().strip() if DEFAULT_TOKEN_FILE.exists() else None
