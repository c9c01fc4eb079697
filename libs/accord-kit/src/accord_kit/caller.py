"""Who is calling: the tenant every query and stream is scoped to.

Until token authentication lands, the tenant comes from the `accord-tenant` metadata
(default `default`); services forward it on calls they make on a tenant's behalf.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from accord_kit.errors import FieldViolation, InvalidArgument

TENANT_METADATA = "accord-tenant"
DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA:
            tenant = value if isinstance(value, str) else value.decode()
            if not _TENANT.match(tenant):
                raise InvalidArgument(
                    "tenant is invalid",
                    [FieldViolation(TENANT_METADATA, "must match [a-z0-9][a-z0-9_-]{0,62}")],
                )
            return tenant
    return DEFAULT_TENANT


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_METADATA, tenant),)
