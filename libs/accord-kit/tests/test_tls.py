"""TLS and mTLS on real services: a throwaway CA, real policy and orchestrator servers.

The certificates are made here with `cryptography`: a CA, a server certificate for
127.0.0.1/localhost, and a client certificate. The orchestrator's certificate serves as both,
since the same settings give its own port TLS and present it to the services it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.testing import as_tenant, bearer, token
from accord_orchestrator.app import App as OrchestratorApp
from accord_orchestrator.app import migrate as migrate_orchestrator
from accord_orchestrator.config import Settings as OrchestratorSettings
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings

ACME = as_tenant("acme")
CALL_TIMEOUT = 10.0
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def credentials(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) as grpc.ssl_channel_credentials takes them."""
        return self.key.read_bytes(), self.cert.read_bytes()


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Pair
    client: Pair
    both: Pair  # valid as server and as client, for a service that is both
    stranger: Pair  # a client certificate from a CA the services do not trust


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    directory: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usages: Sequence[x509.ObjectIdentifier],
) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        _builder(f"accord-{name}", ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _make_ca("accord-test-ca")
    (directory / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=directory / "ca.crt",
        server=_issue(directory, "server", ca, [SERVER_AUTH]),
        client=_issue(directory, "client", ca, [CLIENT_AUTH]),
        both=_issue(directory, "both", ca, [SERVER_AUTH, CLIENT_AUTH]),
        stranger=_issue(directory, "stranger", _make_ca("someone-else"), [CLIENT_AUTH]),
    )


PolicyStarter = Any  # (**tls settings) -> async context manager yielding a started PolicyApp


@pytest.fixture
def start_policy(database_url: str, nats_url: str) -> PolicyStarter:
    @contextlib.asynccontextmanager
    async def start(**tls: Path) -> AsyncIterator[PolicyApp]:
        settings = PolicySettings(
            database_url=database_url, nats_url=nats_url, port=0, metrics_port=0, **tls
        )
        await asyncio.to_thread(migrate_policy, settings)
        app = PolicyApp(settings)
        await app.start()
        try:
            yield app
        finally:
            await app.stop()

    return start


def mtls(pki: Pki) -> dict[str, Path]:
    """Policy settings for a TLS port that takes only clients with a certificate from the CA."""
    return {
        "tls_cert_file": pki.server.cert,
        "tls_key_file": pki.server.key,
        "tls_client_ca_file": pki.ca,
    }


def tls_channel(port: int, ca: Path, client: Pair | None = None) -> grpc.aio.Channel:
    key, chain = client.credentials() if client is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def list_policies(ch: grpc.aio.Channel) -> policy_service_pb2.ListPoliciesResponse:
    stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
    return await stub.ListPolicies(
        policy_service_pb2.ListPoliciesRequest(), metadata=ACME, timeout=CALL_TIMEOUT
    )


async def rejected_code(ch: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_policies(ch)
    return err.value.code()


async def test_tls_port_serves_tls_clients_and_refuses_plaintext(
    start_policy: PolicyStarter, pki: Pki
) -> None:
    async with start_policy(tls_cert_file=pki.server.cert, tls_key_file=pki.server.key) as app:
        async with tls_channel(app.port, pki.ca) as ch:
            listed = await list_policies(ch)
        assert list(listed.policies) == []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plain:
            assert await rejected_code(plain) == grpc.StatusCode.UNAVAILABLE


async def test_tls_client_refuses_a_server_its_ca_did_not_sign(
    start_policy: PolicyStarter, pki: Pki
) -> None:
    async with (
        start_policy(tls_cert_file=pki.server.cert, tls_key_file=pki.server.key) as app,
        tls_channel(app.port, pki.stranger.cert) as ch,
    ):
        assert await rejected_code(ch) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_port_requires_a_client_certificate_from_its_ca(
    start_policy: PolicyStarter, pki: Pki
) -> None:
    async with start_policy(**mtls(pki)) as app:
        async with tls_channel(app.port, pki.ca) as anonymous:
            assert await rejected_code(anonymous) == grpc.StatusCode.UNAVAILABLE
        async with tls_channel(app.port, pki.ca, pki.stranger) as stranger:
            assert await rejected_code(stranger) == grpc.StatusCode.UNAVAILABLE
        async with tls_channel(app.port, pki.ca, pki.client) as ch:
            listed = await list_policies(ch)
        assert list(listed.policies) == []


@contextlib.asynccontextmanager
async def orchestrator(
    database_url: str, nats_url: str, policy_port: int, **tls: Path
) -> AsyncIterator[OrchestratorApp]:
    settings = OrchestratorSettings(
        database_url=database_url,
        nats_url=nats_url,
        port=0,
        metrics_port=0,
        policy_target=f"127.0.0.1:{policy_port}",
        policy_timeout=2,
        **tls,
    )
    assert settings.token_file is not None  # the session's orchestrator token, from the env
    await asyncio.to_thread(migrate_orchestrator, settings)
    app = OrchestratorApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def job_spec() -> job_spec_pb2.JobSpec:
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[
            job_spec_pb2.Step(
                name="page", request=job_spec_pb2.RequestStep(url="https://example.com/")
            )
        ],
    )


async def create_job(ch: grpc.aio.Channel) -> job_service_pb2.CreateJobResponse:
    return await job_service_pb2_grpc.JobServiceStub(ch).CreateJob(
        job_service_pb2.CreateJobRequest(request_id=uuid.uuid4().hex, spec=job_spec()),
        metadata=ACME,
        timeout=CALL_TIMEOUT,
    )


async def test_orchestrator_reaches_policy_over_mtls_with_its_token(
    start_policy: PolicyStarter, pki: Pki, database_url: str, nats_url: str
) -> None:
    async with start_policy(**mtls(pki)) as policy:
        async with tls_channel(policy.port, pki.ca, pki.client) as pch:
            await policy_service_pb2_grpc.PolicyServiceStub(pch).CreatePolicy(
                policy_service_pb2.CreatePolicyRequest(
                    request_id="allow-example",
                    policy=policy_pb2.Policy(
                        display_name="example",
                        rules=policy_pb2.PolicyRules(allowed_domains=["example.com"]),
                    ),
                ),
                metadata=ACME,
                timeout=CALL_TIMEOUT,
            )
        # The orchestrator's certificate serves its own port and identifies it to policy.
        tls = {"tls_ca_file": pki.ca, "tls_cert_file": pki.both.cert, "tls_key_file": pki.both.key}
        async with (
            orchestrator(database_url, nats_url, policy.port, **tls) as app,
            tls_channel(app.port, pki.ca) as ch,
        ):
            created = await create_job(ch)
    job = created.job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert job.decision.outcome == decision_pb2.DECISION_OUTCOME_ALLOW
    assert job.decision.policy_revision >= 1  # acme's policy, so the tenant went along too


async def test_orchestrator_without_a_client_certificate_cannot_reach_mtls_policy(
    start_policy: PolicyStarter, pki: Pki, database_url: str, nats_url: str
) -> None:
    # The orchestrator trusts policy's CA but has no certificate: its own port stays plaintext.
    async with (
        start_policy(**mtls(pki)) as policy,
        orchestrator(database_url, nats_url, policy.port, tls_ca_file=pki.ca) as app,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create_job(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "policy service unavailable" in (err.value.details() or "")


async def test_accord_auth_revoke_reaches_an_mtls_policy_service(
    start_policy: PolicyStarter, pki: Pki, tmp_path: Path
) -> None:
    victim = token("acme", ["policies:read"])
    admin = tmp_path / "admin.token"
    admin.write_text(token("acme", ["tokens:admin"]))
    async with start_policy(**mtls(pki)) as app:
        target = f"127.0.0.1:{app.port}"
        command = [sys.executable, "-m", "accord_cli", "auth", "revoke", victim]
        command += ["--policy", target, "--token-file", str(admin), "--tls-ca", str(pki.ca)]
        without_cert = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
        )
        assert without_cert.returncode == 2
        assert "UNAVAILABLE" in without_cert.stderr
        command += ["--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        async with tls_channel(app.port, pki.ca, pki.client) as ch:
            stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
            refused = None
            for _ in range(50):
                try:
                    await stub.ListPolicies(
                        policy_service_pb2.ListPoliciesRequest(), metadata=bearer(victim)
                    )
                except grpc.aio.AioRpcError as exc:
                    refused = exc.code()
                    break
                await asyncio.sleep(0.1)
    assert refused == grpc.StatusCode.UNAUTHENTICATED
