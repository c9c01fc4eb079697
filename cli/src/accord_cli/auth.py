"""`accord auth`: keys, tokens and revocation; and the dev credentials `accord up` uses.

    accord auth keygen --key signing.jwk --jwks keys.json    new key, added to the key set
    accord auth issue-token --tenant acme --scope jobs:read --ttl 1h
    accord auth revoke TOKEN --reason "leaked"             or --id TOKEN_ID

Tokens go to stdout only; nothing here logs them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from accord.policy.v1 import token_service_pb2, token_service_pb2_grpc
from accord_cli.connect import add_connection_options, resolve
from accord_cli.output import OK, USAGE, Exit, Printer, command
from accord_kit import tokens

DEFAULT_KEY = Path(".accord/auth/signing.jwk")
_TTL = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def ttl(text: str) -> timedelta:
    match = _TTL.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 12h or 7d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def scopes(text: str) -> list[str]:
    found = [s for s in re.split(r"[,\s]+", text) if s]
    unknown = sorted(set(found) - set(tokens.ALL_SCOPES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scope {', '.join(unknown)}; known: {' '.join(tokens.ALL_SCOPES)}"
        )
    return found


def register(commands: Any) -> None:
    auth = commands.add_parser("auth", help="keys, tokens and revocation")
    sub = auth.add_subparsers(dest="auth_command", required=True)

    keygen = sub.add_parser("keygen", help="make a signing key and add it to a JWKS key set")
    keygen.add_argument("--key", type=Path, default=DEFAULT_KEY, help="private key to write")
    keygen.add_argument(
        "--jwks",
        type=Path,
        default=DEFAULT_KEY.with_name("keys.json"),
        help="key set the services verify with; the new public key is added (rotation)",
    )
    keygen.set_defaults(run=run_keygen)

    issue = sub.add_parser("issue-token", help="sign a token and print it")
    issue.add_argument("--tenant", required=True, help="tenant the token acts for; * = service")
    granted = issue.add_mutually_exclusive_group(required=True)
    granted.add_argument(
        "--scope",
        type=scopes,
        action="extend",
        help=f"scopes, repeated or comma-separated: {' '.join(tokens.ALL_SCOPES)}",
    )
    granted.add_argument(
        "--all-scopes",
        dest="scope",
        action="store_const",
        const=list(tokens.ALL_SCOPES),
        help="every scope: an administrator's token",
    )
    issue.add_argument("--ttl", type=ttl, default=timedelta(hours=1), help="e.g. 30m, 12h, 7d")
    issue.add_argument("--subject", default=None, help="who the token is for (default: tenant)")
    issue.add_argument("--key", type=Path, default=_env_path("ACCORD_AUTH_SIGNING_KEY_FILE"))
    issue.set_defaults(run=run_issue)

    revoke = sub.add_parser("revoke", help="revoke a token in every service")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("token", nargs="?", help="the token itself (its id and expiry are read)")
    which.add_argument("--id", dest="token_id", help="the token id (jti) alone")
    revoke.add_argument("--reason", default="", help="recorded in the audit log")
    # The caller's token must carry tokens:admin.
    add_connection_options(revoke, ("policy",))
    revoke.set_defaults(run=run_revoke)


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else DEFAULT_KEY


def fail(message: str) -> int:
    print(f"accord auth: {message}", file=sys.stderr)
    return 2


def run_keygen(args: argparse.Namespace) -> int:
    if args.key.exists():
        return fail(f"{args.key} exists; choose another --key to rotate")
    key = tokens.generate_key()
    tokens.write_private_key(args.key, key)
    existing: list[dict[str, Any]] = []
    if args.jwks.exists():
        existing = json.loads(args.jwks.read_text()).get("keys", [])
    args.jwks.parent.mkdir(parents=True, exist_ok=True)
    args.jwks.write_text(json.dumps({"keys": [*existing, tokens.public_jwk(key)]}, indent=2))
    print(f"key {key['kid']} written to {args.key}; {args.jwks} now holds {len(existing) + 1}")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    try:
        key = tokens.read_private_key(args.key)
        token = tokens.issue(
            key,
            subject=args.subject or f"user:{args.tenant}",
            tenant=args.tenant,
            scopes=args.scope,
            ttl=args.ttl,
        )
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    print(token)
    return 0


# Every refusal of revoke has exited 2, like the rest of this group; scripts rely on it.
@command("auth", exits=lambda _: USAGE)
def run_revoke(args: argparse.Namespace, out: Printer) -> int:
    request = token_service_pb2.RevokeTokenRequest(reason=args.reason)
    if args.token:
        try:
            claims = tokens.unverified_claims(args.token)
        except Exception:
            raise Exit(USAGE, "that is not a token; pass --id TOKEN_ID to revoke by id") from None
        request.token_id = str(claims.get("jti", ""))
        if "exp" in claims:
            request.expire_time.FromSeconds(int(claims["exp"]))
    else:
        request.token_id = args.token_id
    conn = resolve(args)
    if conn.token is None:
        raise Exit(USAGE, "no admin token: give --token-file or $ACCORD_TOKEN")
    with conn.channel("policy") as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        stub.RevokeToken(request, metadata=conn.metadata(), timeout=conn.timeout)
    out.line(f"revoked {request.token_id}")
    return OK


@dataclass(frozen=True)
class DevAuth:
    """What `accord up` made: the files and the environment that points services at them."""

    folder: Path
    admin_token: str
    env: dict[str, str]


def dev_credentials(data_dir: Path) -> DevAuth:
    """Keys kept across restarts (so issued tokens stay valid and the audit log's checkpoints
    are signed by one key a verifier can pin); fresh service tokens."""
    folder = data_dir / "auth"
    key_path = folder / "signing.jwk"
    key = tokens.read_private_key(key_path) if key_path.exists() else tokens.generate_key()
    env = tokens.provision(folder, key)
    checkpoint_key = folder / "audit-checkpoint.jwk"
    if not checkpoint_key.exists():
        tokens.write_private_key(checkpoint_key, tokens.generate_key())
    env["ACCORD_AUDIT_CHECKPOINT_KEY_FILE"] = str(checkpoint_key)
    admin = tokens.issue(
        key, subject="admin", tenant="default", scopes=tokens.ALL_SCOPES, ttl=timedelta(days=30)
    )
    tokens.write_secret(folder / "admin.token", admin + "\n")
    return DevAuth(folder, admin, env)
