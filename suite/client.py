"""A small synchronous client of the public API, for the demo, the benchmark and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import grpc

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.clients import OPTIONS
from shared.convert import item_to_proto
from shared.items import Item

T = TypeVar("T")


class GatewayClient:
    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        # The gateway's address, or a list of its replicas (shared/targets.py).
        self.channel = grpc.insecure_channel(address, options=OPTIONS)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
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


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
