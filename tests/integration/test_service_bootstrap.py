"""The shared bootstrap, on a real grpc.aio server on a free loopback port."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.access import Policy
from shared.errors import InvalidArgument
from shared.server import GrpcService, ServiceBinding
from shared.server_config import ServerConfig
from shared.tls import peer_identities
from tests.conftest import HOST, free_port

SERVICE = "recsys.gateway.v1.GatewayService"


class ScriptedGateway(gateway_pb2_grpc.GatewayServiceServicer):
    async def GetItems(self, request, context):  # type: ignore[no-untyped-def]
        if request.item_ids == ["crash"]:
            raise RuntimeError("a bug")
        if request.item_ids == ["bad"]:
            raise InvalidArgument("item_ids[0]", "is bad")
        if request.item_ids == ["slow"]:
            await asyncio.sleep(1.0)
        if request.item_ids == ["whoami"]:  # the names of the caller's certificate
            return gateway_pb2.GetItemsResponse(missing_item_ids=sorted(peer_identities(context)))
        return gateway_pb2.GetItemsResponse(missing_item_ids=list(request.item_ids))

    async def StreamEvents(self, request_iterator, context):  # type: ignore[no-untyped-def]
        count = 0
        async for _ in request_iterator:
            count += 1
        return gateway_pb2.LogEventsResponse(accepted=count)


class ServerThread:
    """A GrpcService with the scripted servicer, on its own loop in a thread; `config`
    defaults to plaintext on free ports."""

    def __init__(self, config: ServerConfig | None = None, policy: Policy | None = None) -> None:
        self.config = config or ServerConfig(HOST, free_port(), free_port(), grace_s=5.0)
        binding = ServiceBinding(
            SERVICE, gateway_pb2_grpc.add_GatewayServiceServicer_to_server, ScriptedGateway()
        )
        self.service = GrpcService("test", self.config, [binding], policy=policy)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.started = threading.Event()

    async def _run(self) -> None:
        task = asyncio.create_task(self.service.serve())
        while self.service.port == 0 and not task.done():
            await asyncio.sleep(0.01)
        self.started.set()
        await task

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.started.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.service.request_stop)
        self.join()

    def join(self) -> None:
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.loop.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


def stub(server: ServerThread) -> gateway_pb2_grpc.GatewayServiceStub:
    channel = grpc.insecure_channel(f"{HOST}:{server.config.port}")
    return gateway_pb2_grpc.GatewayServiceStub(channel)


def test_unhandled_exception_becomes_internal_not_unknown(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub(server).GetItems(gateway_pb2.GetItemsRequest(item_ids=["crash"]), timeout=5)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert "a bug" not in error.value.details()


def test_domain_error_becomes_invalid_argument_naming_the_field(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub(server).GetItems(gateway_pb2.GetItemsRequest(item_ids=["bad"]), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "item_ids[0]: is bad"


def test_health_reports_serving_for_server_and_each_service(server: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"{HOST}:{server.config.port}"))
    for name in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service_and_health(server: ServerThread) -> None:
    channel = grpc.insecure_channel(f"{HOST}:{server.config.port}")
    replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_counts_calls_by_method_and_code(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError):
        stub(server).GetItems(gateway_pb2.GetItemsRequest(item_ids=["bad"]), timeout=5)
    url = f"http://{HOST}:{server.config.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'grpc_code="INVALID_ARGUMENT",grpc_method="GetItems"' in text
    assert "grpc_server_handling_seconds_bucket" in text


def test_shutdown_finishes_in_flight_calls_and_reports_not_serving() -> None:
    running = ServerThread().__enter__()
    channel = grpc.insecure_channel(f"{HOST}:{running.config.port}")
    slow = gateway_pb2_grpc.GatewayServiceStub(channel).GetItems.future(
        gateway_pb2.GetItemsRequest(item_ids=["slow"]), timeout=10
    )
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    running.loop.call_soon_threadsafe(running.service.request_stop)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert list(slow.result().missing_item_ids) == ["slow"]
    running.join()


GOOD_REQUEST = gateway_pb2.GetItemsRequest(item_ids=["a-long-enough-id"]).SerializeToString()
UNDECODABLE = {
    "random bytes": bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
    "a truncated message": GOOD_REQUEST[:-3],
    "invalid UTF-8 in a string field": bytes([0x0A, 0x02, 0xC3, 0x28]),
}


@pytest.mark.parametrize("body", list(UNDECODABLE.values()), ids=list(UNDECODABLE))
def test_undecodable_request_is_invalid_argument_without_the_decoders_exception(
    server: ServerThread, body: bytes
) -> None:
    channel = grpc.insecure_channel(f"{HOST}:{server.config.port}")
    raw = channel.unary_unary(f"/{SERVICE}/GetItems")
    with pytest.raises(grpc.RpcError) as error:
        raw(body, timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "the request could not be decoded"
    assert raw(GOOD_REQUEST, timeout=5)  # the server goes on answering


def test_undecodable_message_in_a_stream_is_invalid_argument(server: ServerThread) -> None:
    channel = grpc.insecure_channel(f"{HOST}:{server.config.port}")
    raw = channel.stream_unary(f"/{SERVICE}/StreamEvents")
    good = gateway_pb2.Event(event_id="e", user_id="u", item_id="i").SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        raw(iter([good, good, UNDECODABLE["invalid UTF-8 in a string field"]]), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "the request could not be decoded"
    reply = gateway_pb2.LogEventsResponse.FromString(raw(iter([good, good]), timeout=5))
    assert reply.accepted == 2
