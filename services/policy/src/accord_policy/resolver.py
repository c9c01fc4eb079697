"""Host names to addresses: the one place the policy service asks DNS.

The answer is checked and then handed to the executor, which connects to it and never asks
DNS itself; a test passes its own `Resolve` to control the answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from accord_policy.domain.addresses import Address

Resolve = Callable[[str, int], Awaitable[list[Address]]]
"""(host name, port) -> its addresses, in the order to try them; OSError when none."""


async def system_resolve(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} has no addresses")
    return found
