"""gRPC face of the retrieval service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.retrieval.indexes import IndexRegistry, ProfileTerm, Record, ReservedSlots
from services.retrieval.vector_index import Hit
from shared.convert import filter_from_proto
from shared.errors import InvalidArgument, Unavailable
from shared.streamed import answer_each

SERVICE_NAME = "recsys.retrieval.v1.RetrievalService"
_SEARCH_METHODS = {"search": "Search", "by_profile": "SearchByProfile"}


def _search_method(request: retrieval_pb2.StreamSearchRequest) -> str:
    return _SEARCH_METHODS.get(request.WhichOneof("query") or "", "StreamSearch")


def _hits(hits: list[Hit]) -> list[retrieval_pb2.Hit]:
    return [
        retrieval_pb2.Hit(
            item_id=h.item_id,
            score=h.score,
            shared_categories=h.shared_categories,
            closest_profile_item_id=h.closest_profile_item_id,
            reserved=h.reserved,
        )
        for h in hits
    ]


def _weights(weights: retrieval_pb2.ItemWeights, field: str) -> list[tuple[str, float]]:
    if len(weights.item_ids) != len(weights.weights):
        raise InvalidArgument(
            field,
            f"has {len(weights.item_ids)} item_ids but {len(weights.weights)} weights",
        )
    return list(zip(weights.item_ids, weights.weights, strict=True))


def _profile_term(term: retrieval_pb2.ProfileTerm) -> ProfileTerm:
    return ProfileTerm(term.index, [(i.item_id, i.weight) for i in term.items], term.weight)


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Writes are taken at any time; reads only once the replica has caught up (an
    UNAVAILABLE read is retried by the caller's channel on another replica)."""

    def __init__(self, registry: IndexRegistry) -> None:
        self.registry = registry

    def _readable(self) -> IndexRegistry:
        if self.registry.catching_up:
            raise Unavailable("this retrieval replica is catching up from a peer")
        return self.registry

    async def UpsertVectors(
        self, request: retrieval_pb2.UpsertVectorsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.UpsertVectorsResponse:
        records = [Record(r.item_id, r.vector, r.categories) for r in request.records]
        upserted = await self.registry.upsert(request.index, records)
        return retrieval_pb2.UpsertVectorsResponse(upserted=upserted)

    async def DeleteVectors(
        self, request: retrieval_pb2.DeleteVectorsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteVectorsResponse:
        deleted = await self.registry.delete(request.index, list(request.item_ids))
        return retrieval_pb2.DeleteVectorsResponse(deleted=deleted)

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchResponse:
        hits = self._readable().search(
            request.index,
            request.vector,
            request.k,
            filter_from_proto(request.filter),
            list(request.exclude_item_ids),
            _weights(request.boosts, "boosts"),
            _profile_term(request.profile) if request.HasField("profile") else None,
            ReservedSlots(request.reserved.slots, request.reserved.category)
            if request.HasField("reserved")
            else None,
        )
        return retrieval_pb2.SearchResponse(hits=_hits(hits))

    async def SearchSimilar(
        self, request: retrieval_pb2.SearchSimilarRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchSimilarResponse:
        hits = self._readable().similar(
            request.index, request.item_id, request.k, filter_from_proto(request.filter)
        )
        return retrieval_pb2.SearchSimilarResponse(hits=_hits(hits))

    async def GetIndexStats(
        self, request: retrieval_pb2.GetIndexStatsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.GetIndexStatsResponse:
        stats = self._readable().stats(request.index)
        return retrieval_pb2.GetIndexStatsResponse(
            size=stats.size, dimension=stats.dimension, kind=stats.kind, generation=stats.generation
        )

    async def SearchByProfile(
        self, request: retrieval_pb2.SearchByProfileRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchByProfileResponse:
        hits, found = self._readable().search_by_profile(
            request.index,
            [(p.item_id, p.weight) for p in request.profile],
            request.k,
            filter_from_proto(request.filter),
            list(request.exclude_item_ids),
            _weights(request.boosts, "boosts"),
        )
        return retrieval_pb2.SearchByProfileResponse(hits=_hits(hits), profile_items_found=found)

    async def StreamSearch(
        self,
        requests: AsyncIterator[retrieval_pb2.StreamSearchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[retrieval_pb2.StreamSearchResponse]:
        async for reply in answer_each(
            requests, context, SERVICE_NAME, _search_method, self._streamed_search
        ):
            yield reply

    async def _streamed_search(
        self, request: retrieval_pb2.StreamSearchRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.StreamSearchResponse:
        reply = retrieval_pb2.StreamSearchResponse()
        if request.HasField("search"):
            reply.search.CopyFrom(await self.Search(request.search, context))
        elif request.HasField("by_profile"):
            reply.by_profile.CopyFrom(await self.SearchByProfile(request.by_profile, context))
        else:
            raise InvalidArgument("query", "neither search nor by_profile is set")
        return reply

    async def DropIndex(
        self, request: retrieval_pb2.DropIndexRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DropIndexResponse:
        return retrieval_pb2.DropIndexResponse(dropped=await self.registry.drop(request.index))

    async def ListIndexes(
        self, request: retrieval_pb2.ListIndexesRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ListIndexesResponse:
        return retrieval_pb2.ListIndexesResponse(
            indexes=[
                retrieval_pb2.IndexInfo(name=name, dimension=dimension, size=size)
                for name, dimension, size in self._readable().listing()
            ]
        )

    async def ExportVectors(
        self, request: retrieval_pb2.ExportVectorsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ExportVectorsResponse:
        records, next_after = await asyncio.to_thread(
            self._readable().export_page, request.index, request.after_item_id, request.limit
        )
        return retrieval_pb2.ExportVectorsResponse(
            records=[
                retrieval_pb2.VectorRecord(
                    item_id=r.item_id, vector=r.vector, categories=r.categories
                )
                for r in records
            ],
            next_after_item_id=next_after,
        )
