"""A small synchronous client of the public API, for the demo, the benchmark and tests."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.clients import OPTIONS, tls_name
from shared.convert import item_to_proto
from shared.items import Item
from shared.targets import Target

T = TypeVar("T")


class GatewayClient:
    """`address`: the gateway's, or a list of its replicas (shared/targets.py). `ca`: the
    CA bundle that signed the gateway's certificate (TLS; None: plaintext), with `cert`
    and `key` where the gateway asks for client certificates; `token`: the bearer token
    sent with every call where the gateway asks for one (`recsys token`)."""

    def __init__(
        self,
        address: str,
        timeout_s: float = 10.0,
        token: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> None:
        if ca is None:
            self.channel = grpc.insecure_channel(address, options=OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca.read_bytes(),
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None,
            )
            named = [*OPTIONS, *tls_name(Target.parse(address).server_name)]
            self.channel = grpc.secure_channel(address, credentials, options=named)
        calls = self.channel
        if token is not None:
            calls = grpc.intercept_channel(self.channel, _Bearer(token))
        self.stub = gateway_pb2_grpc.GatewayServiceStub(calls)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def upsert(self, items: Sequence[Item], timeout_s: float = 300.0) -> int:
        request = gateway_pb2.UpsertItemsRequest(items=[item_to_proto(i) for i in items])
        return int(self.stub.UpsertItems(request, timeout=timeout_s).upserted)

    def similar(self, item_id: str, k: int = 10) -> list[gateway_pb2.ScoredItem]:
        request = gateway_pb2.SimilarItemsRequest(item_id=item_id, k=k)
        return list(self.stub.SimilarItems(request, timeout=self.timeout_s).items)

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        request = gateway_pb2.GetItemsRequest(item_ids=list(item_ids), allow_missing=True)
        reply = self.stub.GetItems(request, timeout=self.timeout_s)
        return {item.item_id: item.title for item in reply.items}


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """`authorization: Bearer <token>` on every call (a channel interceptor, since gRPC
    sends call credentials only over TLS and a token may guard a plaintext loopback)."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._metadata]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), requests)


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
