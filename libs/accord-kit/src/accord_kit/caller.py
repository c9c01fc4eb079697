"""Who is calling the RPC being served: its Principal and the tenant it acts for.

The boundary admits every call and binds its Principal here for the handler's duration;
servicers read `tenant()` to scope every query and stream to it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from accord_kit import auth
from accord_kit.auth import TENANT_METADATA, Principal
from accord_kit.errors import FieldViolation, InvalidArgument, PermissionDenied

_principal: ContextVar[Principal] = ContextVar("accord_principal")


def bind(principal: Principal) -> Token[Principal]:
    return _principal.set(principal)


def unbind(token: Token[Principal]) -> None:
    _principal.reset(token)


def principal() -> Principal:
    return _principal.get()


def current() -> Principal | None:
    """The caller of the RPC being served, or None outside one (a service's own work)."""
    return _principal.get(None)


def tenant() -> str:
    """The tenant the call acts for; a service token must name one in `accord-tenant`."""
    tenant = _principal.get().tenant
    if tenant is None:
        raise InvalidArgument(
            "a service token must name the tenant it acts for",
            [FieldViolation(TENANT_METADATA, "required with a service token")],
        )
    return tenant


def acting_for(tenant: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a service's call for `tenant`, naming who caused the call being served
    (if one is), so the next service's events name that user as their actor too."""
    principal = _principal.get(None)
    return auth.acting_for(tenant, principal.actor if principal is not None else "")


def require_service() -> Principal:
    """For RPCs that span tenants (the work queue): only service tokens may call them."""
    caller = _principal.get()
    if not caller.is_service:
        raise PermissionDenied(
            "this method spans tenants and needs a service token (tenant `*`)",
            metadata={"cause": "SERVICE_TOKEN_REQUIRED"},
        )
    return caller
