"""gRPC face of the features service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import asyncio

import grpc
from recsys.features.v1 import features_pb2, features_pb2_grpc

from services.features.catalog import Catalog
from shared.convert import item_to_proto, items_from_proto


class FeaturesServicer(features_pb2_grpc.FeaturesServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def UpsertItems(
        self, request: features_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.UpsertItemsResponse:
        result = await asyncio.to_thread(self.catalog.upsert, items_from_proto(request.items))
        vectors = [
            features_pb2.ItemVector(
                item_id=s.item.item_id, categories=list(s.item.categories), vector=s.vector.tolist()
            )
            for s in result.items
        ]
        return features_pb2.UpsertItemsResponse(
            upserted=len(result.items),
            vectors=vectors,
            reused_encodings=result.reused_encodings,
            encoder=self.catalog.encoder.name,
        )

    async def DeleteItems(
        self, request: features_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.DeleteItemsResponse:
        deleted = await asyncio.to_thread(self.catalog.delete, list(request.item_ids))
        return features_pb2.DeleteItemsResponse(deleted=deleted)

    async def GetItems(
        self, request: features_pb2.GetItemsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetItemsResponse:
        result = await asyncio.to_thread(
            self.catalog.get, list(request.item_ids), request.allow_missing
        )
        return features_pb2.GetItemsResponse(
            items=[item_to_proto(i) for i in result.items], missing_item_ids=result.missing
        )

    async def EncodeTexts(
        self, request: features_pb2.EncodeTextsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.EncodeTextsResponse:
        vectors = await asyncio.to_thread(self.catalog.encode_texts, list(request.texts))
        return features_pb2.EncodeTextsResponse(
            vectors=[features_pb2.EncodeTextsResponse.Vector(values=v.tolist()) for v in vectors],
            encoder=self.catalog.encoder.name,
        )
