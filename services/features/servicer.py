"""gRPC face of the features service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import weakref
from collections.abc import AsyncIterator

import grpc

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2
from services.features.behaviour import Behaviour, GroupCommit, History
from services.features.catalog import Catalog
from services.features.catalog_store import StoredItem
from shared.convert import (
    event_to_proto,
    events_from_proto,
    filter_from_proto,
    item_to_proto,
    items_from_proto,
    timestamp_of,
)
from shared.events import validate_events
from shared.items import validate_k
from shared.streamed import answer_each

SERVICE_NAME = "recsys.features.v1.FeaturesService"


def _ranking_inputs(request: features_pb2.StreamRankingInputsRequest) -> str:
    return "GetRankingInputs"


def _item_vector(stored: StoredItem) -> features_pb2.ItemVector:
    return features_pb2.ItemVector(
        item_id=stored.item.item_id,
        categories=list(stored.item.categories),
        vector=stored.vector.tolist(),
    )


def _new_history_reply(history: History, version: str) -> features_pb2.GetUserHistoryResponse:
    return features_pb2.GetUserHistoryResponse(
        recent=[
            features_pb2.Interaction(
                item_id=i.item_id,
                type=int(i.type),
                value=i.value,
                timestamp=timestamp_of(i.timestamp),
            )
            for i in history.recent
        ],
        seen_item_ids=history.seen,
        first_offset=history.first_offset,
        version=version,
    )


class FeaturesServicer(features_pb2_grpc.FeaturesServiceServicer):
    def __init__(self, catalog: Catalog, behaviour: Behaviour, commits: GroupCommit) -> None:
        self.catalog = catalog
        self.behaviour = behaviour
        self.commits = commits
        # Each history's reply, built once; it goes when the history leaves the cache. A
        # history kept in the cache is one object until it changes, so a version per object
        # names it exactly; the epoch keeps another process's versions from matching.
        self._replies: weakref.WeakKeyDictionary[History, features_pb2.GetUserHistoryResponse]
        self._replies = weakref.WeakKeyDictionary()
        self._epoch = secrets.token_hex(6)
        self._serials = itertools.count(1)

    async def UpsertItems(
        self, request: features_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.UpsertItemsResponse:
        result = await asyncio.to_thread(self.catalog.upsert, items_from_proto(request.items))
        vectors = [_item_vector(s) for s in result.items]
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

    async def ListItemVectors(
        self, request: features_pb2.ListItemVectorsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.ListItemVectorsResponse:
        entries, after = await asyncio.to_thread(
            self.catalog.page, request.after_item_id, request.limit
        )
        return features_pb2.ListItemVectorsResponse(
            vectors=[_item_vector(s) for s in entries], next_after_item_id=after
        )

    async def EncodeTexts(
        self, request: features_pb2.EncodeTextsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.EncodeTextsResponse:
        vectors = await asyncio.to_thread(self.catalog.encode_texts, list(request.texts))
        return features_pb2.EncodeTextsResponse(
            vectors=[features_pb2.EncodeTextsResponse.Vector(values=v.tolist()) for v in vectors],
            encoder=self.catalog.encoder.name,
        )

    async def AppendEvents(
        self, request: features_pb2.AppendEventsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.AppendEventsResponse:
        events = events_from_proto(request.events)
        validate_events(events)
        result = await self.commits.submit(events)
        return features_pb2.AppendEventsResponse(
            accepted=result.accepted, duplicates=result.duplicates, last_offset=result.last_offset
        )

    async def ReadEvents(
        self, request: features_pb2.ReadEventsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.ReadEventsResponse:
        events, end = await asyncio.to_thread(
            self.behaviour.read, request.from_offset, request.limit
        )
        return features_pb2.ReadEventsResponse(
            events=[
                features_pb2.LoggedEvent(
                    offset=e.offset,
                    event=event_to_proto(e.event),
                    appended_at=timestamp_of(e.appended_at) if e.appended_at else None,
                )
                for e in events
            ],
            end_offset=end,
        )

    async def GetUserHistory(
        self, request: features_pb2.GetUserHistoryRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetUserHistoryResponse:
        return self._history_reply(request, await self._history(request))

    async def GetTrending(
        self, request: features_pb2.GetTrendingRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetTrendingResponse:
        return self._trending(request)

    async def GetRankingInputs(
        self, request: features_pb2.GetRankingInputsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetRankingInputsResponse:
        history = await self._history(request.history)
        reply = features_pb2.GetRankingInputsResponse(
            history=self._history_reply(request.history, history)
        )
        if request.HasField("trending"):
            reply.trending.CopyFrom(self._trending(request.trending))
        if request.HasField("related"):
            wanted = request.related
            found = self.behaviour.related(
                history, wanted.k, wanted.profile_half_life_s, filter_from_proto(wanted.filter)
            )
            reply.related.extend(
                features_pb2.RelatedItem(
                    item_id=r.item_id, score=r.score, because_item_id=r.because
                )
                for r in found
            )
        return reply

    async def StreamRankingInputs(
        self,
        requests: AsyncIterator[features_pb2.StreamRankingInputsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[features_pb2.StreamRankingInputsResponse]:
        async for reply in answer_each(
            requests, context, SERVICE_NAME, _ranking_inputs, self._streamed_ranking_inputs
        ):
            yield reply

    async def _streamed_ranking_inputs(
        self, request: features_pb2.StreamRankingInputsRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.StreamRankingInputsResponse:
        reply = features_pb2.StreamRankingInputsResponse()
        reply.inputs.CopyFrom(await self.GetRankingInputs(request.inputs, context))
        return reply

    async def _history(self, request: features_pb2.GetUserHistoryRequest) -> History:
        query = (request.user_id, request.limit, request.include_seen_item_ids)
        # A history at hand is answered on the event loop: cheaper than a hop to a thread.
        history = self.behaviour.cached_history(*query)
        if history is None:
            history = await asyncio.to_thread(self.behaviour.history, *query)
        return history

    def _history_reply(
        self, request: features_pb2.GetUserHistoryRequest, history: History
    ) -> features_pb2.GetUserHistoryResponse:
        reply = self._replies.get(history)
        if reply is None:
            version = f"{self._epoch}-{next(self._serials)}"
            reply = self._replies[history] = _new_history_reply(history, version)
        if request.known_version == reply.version:
            return features_pb2.GetUserHistoryResponse(version=reply.version, unchanged=True)
        return reply

    def _trending(
        self, request: features_pb2.GetTrendingRequest
    ) -> features_pb2.GetTrendingResponse:
        # In memory and usually cached: cheaper on the event loop than a hop to a thread.
        validate_k(request.k)
        item_filter = filter_from_proto(request.filter)
        half_life_s = self.behaviour.trending_half_life(request.half_life_s)
        version = self.behaviour.trending_version()
        if request.known_version == version:
            return features_pb2.GetTrendingResponse(
                version=version, unchanged=True, half_life_s=half_life_s
            )
        found = self.behaviour.trending_items(
            request.k, item_filter, list(request.exclude_item_ids), half_life_s
        )
        return features_pb2.GetTrendingResponse(
            items=[gateway_pb2.ScoredItem(item_id=i, score=s) for i, s in found],
            version=version,
            half_life_s=half_life_s,
        )

    async def ForgetUser(
        self, request: features_pb2.ForgetUserRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.ForgetUserResponse:
        await self.commits.flush()  # an append still on its way must not outlive the forget
        deleted = await asyncio.to_thread(self.behaviour.forget, request.user_id)
        return features_pb2.ForgetUserResponse(events_deleted=deleted)
