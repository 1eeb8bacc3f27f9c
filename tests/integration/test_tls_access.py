"""TLS, mutual TLS, bearer tokens with scopes and the limits, on the shared bootstrap that
every service runs (a real grpc.aio server on a free loopback port), with certificates
this test makes."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared import clients, tls
from shared.access import ANY_CERTIFICATE, AccessConfig, Policy, new_token
from shared.server_config import ServerConfig
from suite.certs import Authority, Issued
from tests.conftest import HOST, free_port
from tests.integration.test_service_bootstrap import SERVICE, ServerThread

POLICY = Policy.of(SERVICE, {"GetItems": "read", "StreamEvents": "write"})


def _config(**changes: object) -> ServerConfig:
    base = ServerConfig(HOST, free_port(), 0, grace_s=2.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _credentials(issued: Issued | None, ca: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=issued.key.read_bytes() if issued else None,
        certificate_chain=issued.cert.read_bytes() if issued else None,
    )


def _stub(
    port: int, credentials: grpc.ChannelCredentials | None
) -> gateway_pb2_grpc.GatewayServiceStub:
    address = f"{HOST}:{port}"
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    return gateway_pb2_grpc.GatewayServiceStub(channel)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    return error.value.code()


def _ask(stub: gateway_pb2_grpc.GatewayServiceStub, ids: list[str], **kw: object) -> list[str]:
    reply = stub.GetItems(gateway_pb2.GetItemsRequest(item_ids=ids), timeout=5, **kw)
    return list(reply.missing_item_ids)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    root = tmp_path_factory.mktemp("pki")
    suite, stranger = Authority.new("recsys CA"), Authority.new("someone else's CA")
    return {
        "server": suite.issue(root / "server", "retrieval"),
        "client": suite.issue(root / "client", "gateway"),
        "operator": suite.issue(root / "operator", "operator"),
        "expired": suite.issue(root / "expired", "gateway", expired=True),
        "stranger": stranger.issue(root / "stranger", "gateway"),
    }


def _files(issued: Issued) -> tls.TlsFiles:
    return tls.TlsFiles(issued.cert, issued.key, issued.ca)


@pytest.fixture(scope="module")
def internal(pki: dict[str, Issued]) -> Iterator[ServerThread]:
    """An internal service's port: TLS, client certificates required, plaintext health."""
    config = _config(tls=_files(pki["server"]), client_cert_required=True, health_port=free_port())
    with ServerThread(config) as running:
        yield running


def test_an_internal_port_takes_the_suites_certificates_and_refuses_any_other(
    internal: ServerThread, pki: dict[str, Issued]
) -> None:
    port, ca = internal.config.port, pki["server"].ca
    assert _ask(_stub(port, _credentials(pki["client"], ca)), ["whoami"]) == [
        "127.0.0.1",
        "gateway",
        "localhost",
    ]
    refused = {
        "no certificate": _credentials(None, ca),
        "an expired certificate": _credentials(pki["expired"], ca),
        "a certificate of an unknown CA": _credentials(pki["stranger"], ca),
        "a server it does not trust": _credentials(pki["client"], pki["stranger"].ca),
    }
    for why, credentials in refused.items():
        assert (
            _code(lambda c=credentials: _ask(_stub(port, c), ["x"])) == grpc.StatusCode.UNAVAILABLE
        ), why
    assert _code(lambda: _ask(_stub(port, None), ["x"])) == grpc.StatusCode.UNAVAILABLE


def test_probes_reach_health_in_plaintext_on_its_own_port(internal: ServerThread) -> None:
    channel = grpc.insecure_channel(f"{HOST}:{internal.config.health_port}")
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # ... and only health: the service itself is not there.
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    assert _code(lambda: _ask(stub, ["x"])) == grpc.StatusCode.UNIMPLEMENTED


def _replace(target: Issued, source: Issued) -> None:
    """As a Secret volume rotates: every file at once, by rename."""
    for name in ("cert", "key", "ca"):
        staged = Path(str(getattr(target, name)) + ".new")
        shutil.copyfile(getattr(source, name), staged)
        staged.replace(getattr(target, name))


def test_rotated_certificates_are_taken_up_with_no_restart_and_no_failed_call(
    tmp_path: Path,
) -> None:
    old_ca, new_ca = Authority.new("old CA"), Authority.new("new CA")
    server, client = (
        old_ca.issue(tmp_path / "server", "features"),
        old_ca.issue(tmp_path / "client", "gateway"),
    )
    # The trust bundles carry both CAs during the change, as a CA rotation is done.
    both = old_ca.pem() + new_ca.pem()
    server.ca.write_bytes(both)
    client.ca.write_bytes(both)
    legacy = old_ca.issue(tmp_path / "legacy", "legacy")
    legacy.ca.write_bytes(both)
    config = _config(tls=_files(server), client_cert_required=True)
    failures: list[BaseException] = []
    seen: list[str] = []

    async def calls(stop: threading.Event) -> None:
        channel = clients.ReloadingChannel(f"{HOST}:{config.port}", clients.OPTIONS, _files(client))
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        while not stop.is_set():
            try:
                reply = await stub.GetItems(
                    gateway_pb2.GetItemsRequest(item_ids=["whoami"]), timeout=5
                )
                seen.append(reply.missing_item_ids[1])  # the common name, after 127.0.0.1
            except grpc.RpcError as error:
                failures.append(error)
            await asyncio.sleep(0.02)
        await channel.close()

    with ServerThread(config):
        stop = threading.Event()
        caller = threading.Thread(target=asyncio.run, args=(calls(stop),))
        caller.start()
        time.sleep(0.5)
        fresh = new_ca.issue(tmp_path / "fresh-client", "gateway-renewed")
        fresh.ca.write_bytes(both)
        _replace(client, fresh)
        renewed = new_ca.issue(tmp_path / "fresh-server", "features")
        renewed.ca.write_bytes(new_ca.pem())  # the old CA is no longer trusted
        _replace(server, renewed)
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] != "gateway-renewed") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        caller.join(10)
        # The server took its new bundle up too: a certificate of the old CA is refused now.
        refused = _stub(config.port, _credentials(legacy, legacy.ca))
        assert _code(lambda: _ask(refused, ["x"])) == grpc.StatusCode.UNAVAILABLE
    assert not failures, failures[:3]
    assert seen[0] == "gateway" and seen[-1] == "gateway-renewed"


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    issued = {scope: new_token(f"{scope}-client", [scope]) for scope in ("read", "write")}
    path = tmp_path / "tokens"
    path.write_text("# the test's tokens\n" + "\n".join(line for _, line in issued.values()) + "\n")
    return path, {scope: token for scope, (token, _) in issued.items()}


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_tokens_with_scopes_on_the_public_port(tokens: tuple[Path, dict[str, str]]) -> None:
    path, issued = tokens
    config = _config(access=AccessConfig(tokens_file=path))
    with ServerThread(config, POLICY):
        stub = _stub(config.port, None)
        assert _ask(stub, ["a"], metadata=_bearer(issued["read"])) == ["a"]
        assert _code(lambda: _ask(stub, ["a"])) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            _code(lambda: _ask(stub, ["a"], metadata=_bearer("guess")))
            == grpc.StatusCode.UNAUTHENTICATED
        )

        def stream(token: str) -> int:
            events = iter([gateway_pb2.Event(event_id="e")])
            return stub.StreamEvents(events, timeout=5, metadata=_bearer(token)).accepted

        assert _code(lambda: stream(issued["read"])) == grpc.StatusCode.PERMISSION_DENIED
        assert stream(issued["write"]) == 1
        # Health and reflection stay open.
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"{HOST}:{config.port}"))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        # A token issued by editing the file works within a second or two; a removed one stops.
        token, line = new_token("late", ["read"])
        path.write_text(line + "\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                _ask(stub, ["b"], metadata=_bearer(token))
                break
            except grpc.RpcError:
                time.sleep(0.2)
        assert _ask(stub, ["b"], metadata=_bearer(token)) == ["b"]
        assert (
            _code(lambda: _ask(stub, ["b"], metadata=_bearer(issued["read"])))
            == grpc.StatusCode.UNAUTHENTICATED
        )


def test_a_client_over_its_rate_is_told_how_long_to_wait(
    tokens: tuple[Path, dict[str, str]],
) -> None:
    path, issued = tokens
    access = AccessConfig(tokens_file=path, rate={"read": 2.0}, burst={"read": 2.0})
    config = _config(access=access)
    with ServerThread(config, POLICY):
        stub = _stub(config.port, None)
        for _ in range(2):
            _ask(stub, ["a"], metadata=_bearer(issued["read"]))
        with pytest.raises(grpc.RpcError) as error:
            _ask(stub, ["a"], metadata=_bearer(issued["read"]))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(error.value)  # type: ignore[arg-type]
        assert status is not None
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 0.5
        time.sleep(0.6)
        assert _ask(stub, ["a"], metadata=_bearer(issued["read"])) == ["a"]


def test_calls_beyond_the_concurrency_bound_are_refused_at_once() -> None:
    config = _config(max_concurrent_rpcs=2)
    with ServerThread(config):
        stub = _stub(config.port, None)
        slow = [
            stub.GetItems.future(gateway_pb2.GetItemsRequest(item_ids=["slow"]), timeout=5)
            for _ in range(2)
        ]
        time.sleep(0.2)
        started = time.monotonic()
        assert _code(lambda: _ask(stub, ["x"])) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 0.5
        for call in slow:
            assert list(call.result().missing_item_ids) == ["slow"]


def test_an_idle_stream_is_closed_and_a_message_over_the_size_limit_refused() -> None:
    config = _config(stream_idle_s=0.5, max_message_bytes=4096)
    with ServerThread(config):
        stub = _stub(config.port, None)

        def silent() -> Iterator[gateway_pb2.Event]:
            yield gateway_pb2.Event(event_id="e")
            time.sleep(2.0)

        started = time.monotonic()
        assert (
            _code(lambda: stub.StreamEvents(silent(), timeout=10))
            == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        assert time.monotonic() - started < 1.8
        assert _code(lambda: _ask(stub, ["x" * 5000])) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_certificates_hold_scopes_an_operators_admin_and_any_suite_peers_read(
    pki: dict[str, Issued],
) -> None:
    """As the trainer's policy: any suite certificate reads; only a certificate named in
    <SCOPE>_IDENTITIES (or an admin token) makes the admin call."""
    policy = Policy.of(
        SERVICE,
        {"GetItems": "read", "StreamEvents": "admin"},
        identities={"read": frozenset({ANY_CERTIFICATE})},
    )
    access = AccessConfig(identities={"admin": frozenset({"operator"})})
    config = _config(tls=_files(pki["server"]), client_cert_required=True, access=access)
    with ServerThread(config, policy):
        ca = pki["server"].ca
        for who, allowed in (("client", False), ("operator", True)):
            stub = _stub(config.port, _credentials(pki[who], ca))
            assert _ask(stub, ["a"]) == ["a"]

            def admin(stub: gateway_pb2_grpc.GatewayServiceStub = stub) -> int:
                events = iter([gateway_pb2.Event(event_id="e")])
                return int(stub.StreamEvents(events, timeout=5).accepted)

            if allowed:
                assert admin() == 1
            else:
                assert _code(admin) == grpc.StatusCode.PERMISSION_DENIED
