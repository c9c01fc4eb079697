"""How services listen and call each other: optional TLS and mTLS, and the service's token.

Server side: with `tls_cert_file` and `tls_key_file` the port serves TLS; adding
`tls_client_ca_file` requires every client to present a certificate that CA signed (mTLS).
Client side: with `tls_ca_file` outgoing channels use TLS verified against that CA, and
present the service's own certificate when it has one. Every outgoing call carries the
service's bearer token from `token_file`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from accord_kit import tracing
from accord_kit.auth import ServiceToken
from accord_kit.config import ServiceSettings

if TYPE_CHECKING:  # generic only in grpc-stubs
    _UnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _StreamInterceptor = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    _StreamInterceptor = grpc.aio.UnaryStreamClientInterceptor


# Every hop, server and client alike, carries messages up to 16 MiB: the contracts size
# their limits (a 4 MiB spec, an 8 MiB lease batch or job batch) to fit under it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MESSAGE_LIMITS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = _read(settings.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def open_channel(
    target: str, settings: ServiceSettings, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel to another Accord service that authenticates as this service."""
    token = ServiceToken(settings.token_file)

    def bear(metadata: grpc.aio.Metadata) -> None:
        for key, value in token.metadata():
            metadata[key] = value

    chain = [*tracing.client_interceptors(), *metadata_interceptors(bear)]
    options = [*MESSAGE_LIMITS, *options]
    if settings.tls_ca_file is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=chain)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca_file.read_bytes(),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=chain)


def metadata_interceptors(amend: Callable[[grpc.aio.Metadata], None]) -> list[Any]:
    """Client interceptors that let `amend` add to every call's metadata."""

    def amended(details: grpc.aio.ClientCallDetails) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        amend(metadata)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    class Unary(_UnaryInterceptor):
        async def intercept_unary_unary(
            self, continuation: Callable[..., Any], details: Any, request: Any
        ) -> Any:
            return await continuation(amended(details), request)

    class Stream(_StreamInterceptor):
        async def intercept_unary_stream(
            self, continuation: Callable[..., Any], details: Any, request: Any
        ) -> Any:
            return await continuation(amended(details), request)

    return [Unary(), Stream()]
