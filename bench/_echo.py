"""The baseline for per-request checks: a raw grpc.aio server answering every call at once.

Runs as its own process, as the policy service does. Usage: `python bench/_echo.py PORT`;
serves `/bench.Echo/Echo` (bytes in, the same bytes out) until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc


async def serve(port: int) -> None:
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
