"""The public API. It validates every request itself (so bad input never reaches a
downstream service) and composes features and retrieval."""

from __future__ import annotations

import grpc
from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.gateway.config import GatewayConfig
from services.gateway.reasons import similar_item_reasons
from shared.catalog import CONTENT_INDEX, validate_id, validate_ids, validate_items, validate_k
from shared.clients import deadline
from shared.convert import filter_from_proto, item_to_proto, items_from_proto


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        config: GatewayConfig,
        features: features_pb2_grpc.FeaturesServiceStub,
        retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
    ) -> None:
        self.config = config
        self.features = features
        self.retrieval = retrieval

    async def UpsertItems(
        self, request: gateway_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.UpsertItemsResponse:
        distinct = validate_items(items_from_proto(request.items))
        encoded = await self.features.UpsertItems(
            features_pb2.UpsertItemsRequest(items=[item_to_proto(i) for i in distinct]),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        records = [
            retrieval_pb2.VectorRecord(item_id=v.item_id, vector=v.vector, categories=v.categories)
            for v in encoded.vectors
        ]
        await self.retrieval.UpsertVectors(
            retrieval_pb2.UpsertVectorsRequest(index=CONTENT_INDEX, records=records),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        return gateway_pb2.UpsertItemsResponse(upserted=encoded.upserted)

    async def DeleteItems(
        self, request: gateway_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteItemsResponse:
        ids = validate_ids(list(request.item_ids))
        # Out of the index first: from then on a deleted item can never be recommended.
        await self.retrieval.DeleteVectors(
            retrieval_pb2.DeleteVectorsRequest(index=CONTENT_INDEX, item_ids=ids),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        deleted = await self.features.DeleteItems(
            features_pb2.DeleteItemsRequest(item_ids=ids),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        return gateway_pb2.DeleteItemsResponse(deleted=deleted.deleted)

    async def GetItems(
        self, request: gateway_pb2.GetItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetItemsResponse:
        ids = validate_ids(list(request.item_ids))
        found = await self.features.GetItems(
            features_pb2.GetItemsRequest(item_ids=ids, allow_missing=request.allow_missing),
            timeout=deadline(context, self.config.call_timeout_s),
        )
        return gateway_pb2.GetItemsResponse(
            items=found.items, missing_item_ids=found.missing_item_ids
        )

    async def SimilarItems(
        self, request: gateway_pb2.SimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SimilarItemsResponse:
        validate_id(request.item_id, "item_id")
        validate_k(request.k)
        filter_from_proto(request.filter)  # rejects a bad filter here, naming its field
        found = await self.retrieval.SearchSimilar(
            retrieval_pb2.SearchSimilarRequest(
                index=CONTENT_INDEX, item_id=request.item_id, k=request.k, filter=request.filter
            ),
            timeout=deadline(context, self.config.call_timeout_s),
        )
        return gateway_pb2.SimilarItemsResponse(
            items=[
                gateway_pb2.ScoredItem(
                    item_id=h.item_id,
                    score=h.score,
                    reasons=similar_item_reasons(h.shared_categories),
                )
                for h in found.hits
            ]
        )
