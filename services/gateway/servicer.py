"""The public API. It validates every request itself (so bad input never reaches a
downstream service) and composes features and retrieval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.gateway.config import GatewayConfig
from services.gateway.downstream import GrpcSources, HotReads, KnownHistories, TrendingCache
from services.gateway.reasons import (
    similar_item_reasons,
)
from services.gateway.recommend import (
    CONTENT_MODEL,
    Recommender,
    RecommendQuery,
    UserVectorCache,
)
from services.gateway.serving import ServingModel
from services.gateway.status import Status, freshness
from shared.clients import deadline
from shared.convert import (
    event_to_proto,
    events_from_proto,
    filter_from_proto,
    item_to_proto,
    items_from_proto,
    timestamp_of,
    timestamp_seconds,
)
from shared.embedding_client import EmbeddingClient, EmbeddingUnavailable
from shared.errors import InvalidArgument, Unavailable
from shared.events import Event, validate_events
from shared.items import CONTENT_INDEX, validate_id, validate_ids, validate_items, validate_k
from shared.model_store import LiveVersion, ServingInfo, index_categories

# Events of a stream are written in chunks of this many as they arrive.
STREAM_CHUNK = 1_000
# Trailing metadata of a StreamEvents that failed after writing part of the stream.
STREAM_WRITTEN_METADATA = "recsys-events-written"
STREAM_LAST_OFFSET_METADATA = "recsys-last-offset"
log = logging.getLogger(__name__)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        config: GatewayConfig,
        features: features_pb2_grpc.FeaturesServiceStub,
        retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
        embedding: EmbeddingClient | None = None,
        serving: ServingModel | None = None,
        trainer: trainer_pb2_grpc.TrainerServiceStub | None = None,
    ) -> None:
        self.config = config
        self.features = features
        self.retrieval = retrieval
        self.embedding = embedding
        self.serving = serving
        self.trainer = trainer
        self.trending_cache = TrendingCache()
        self.user_vectors = UserVectorCache(config.user_vector_cache)
        self.histories = KnownHistories(config.history_cache_ids)
        self.reads = HotReads(features, retrieval, config.streamed_reads)
        self.ranking = config.ranking()

    def _model(self) -> ServingInfo | None:
        """The version this request uses from start to end, read once."""
        return self.serving.current if self.serving else None

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
        model = self._model()
        if model is not None and records:
            await self._embed_into_model(model, list(encoded.vectors), context)
        return gateway_pb2.UpsertItemsResponse(upserted=encoded.upserted)

    async def _embed_into_model(
        self,
        model: ServingInfo,
        vectors: list[features_pb2.ItemVector],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """New and changed items get the serving version's item vectors at once, so they
        are recommendable by the model before any retrain."""
        assert self.embedding is not None
        rows = np.array([[model.items.get(v.item_id, 0)] for v in vectors], dtype=np.int64)
        content = np.array([list(v.vector) for v in vectors], dtype=np.float32)
        try:
            embedded = await self.embedding.item_vectors(
                model.version, rows, content, deadline(context, self.config.write_timeout_s)
            )
        except EmbeddingUnavailable as error:
            raise Unavailable(
                f"the embedding service could not embed the items: {error}"
            ) from error
        await self.retrieval.UpsertVectors(
            retrieval_pb2.UpsertVectorsRequest(
                index=model.name,
                records=[
                    retrieval_pb2.VectorRecord(
                        item_id=v.item_id,
                        vector=embedded[i].tolist(),
                        categories=index_categories(v.categories, int(rows[i, 0])),
                    )
                    for i, v in enumerate(vectors)
                ],
            ),
            timeout=deadline(context, self.config.write_timeout_s),
        )

    async def DeleteItems(
        self, request: gateway_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteItemsResponse:
        ids = validate_ids(list(request.item_ids))
        # Out of the index first: from then on a deleted item can never be recommended.
        await self.retrieval.DeleteVectors(
            retrieval_pb2.DeleteVectorsRequest(index=CONTENT_INDEX, item_ids=ids),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        model = self._model()
        if model is not None:
            await self.retrieval.DeleteVectors(
                retrieval_pb2.DeleteVectorsRequest(index=model.name, item_ids=ids),
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

    async def LogEvents(
        self, request: gateway_pb2.LogEventsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LogEventsResponse:
        events = events_from_proto(request.events)
        validate_events(events)
        reply = await self._append(events, context)
        return gateway_pb2.LogEventsResponse(
            accepted=reply.accepted, duplicates=reply.duplicates, last_offset=reply.last_offset
        )

    async def StreamEvents(
        self, request_iterator: AsyncIterator[gateway_pb2.Event], context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LogEventsResponse:
        written = gateway_pb2.LogEventsResponse()
        position = 0  # events of the stream written so far: a failure names how many
        try:
            chunk: list[gateway_pb2.Event] = []
            async for message in request_iterator:
                chunk.append(message)
                if len(chunk) == STREAM_CHUNK:
                    await self._append_chunk(chunk, position, written, context)
                    position, chunk = position + len(chunk), []
            if chunk:
                await self._append_chunk(chunk, position, written, context)
            elif position == 0:
                raise InvalidArgument("events", "the stream held no events")
        except Exception as error:
            _report_partial_stream(error, position, written, context)
            raise
        return written

    async def _append_chunk(
        self,
        chunk: list[gateway_pb2.Event],
        position: int,
        total: gateway_pb2.LogEventsResponse,
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Writes one chunk whole or not at all."""
        events = events_from_proto(chunk, first_index=position)
        validate_events(events, first_index=position)
        reply = await self._append(events, context)
        total.accepted += reply.accepted
        total.duplicates += reply.duplicates
        total.last_offset = reply.last_offset

    async def _append(
        self, events: list[Event], context: grpc.aio.ServicerContext
    ) -> features_pb2.AppendEventsResponse:
        return await self.features.AppendEvents(
            features_pb2.AppendEventsRequest(events=[event_to_proto(e) for e in events]),
            timeout=deadline(context, self.config.write_timeout_s),
        )

    async def Recommend(
        self, request: gateway_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecommendResponse:
        validate_id(request.user_id, "user_id")
        validate_k(request.k)
        query = RecommendQuery(
            user_id=request.user_id,
            k=request.k,
            item_filter=filter_from_proto(request.filter),
            include_seen=request.include_seen,
            explain=request.explain,
        )
        sources = GrpcSources(
            self.config,
            self.features,
            self.reads,
            self.embedding,
            context,
            self.trending_cache,
            self.histories,
        )
        answer = await Recommender(self.ranking, sources, self.user_vectors).recommend(
            query, self._model()
        )
        return gateway_pb2.RecommendResponse(
            items=[
                gateway_pb2.ScoredItem(item_id=i.item_id, score=i.score, reasons=i.reasons)
                for i in answer.items
            ],
            model_version=answer.model_version,
            fallback=answer.fallback,
        )

    async def ForgetUser(
        self, request: gateway_pb2.ForgetUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ForgetUserResponse:
        """The events first: once they are out of the log, the trainer can no longer read
        them, and then it drops what it learned from them."""
        validate_id(request.user_id, "user_id")
        events = await self.features.ForgetUser(
            features_pb2.ForgetUserRequest(user_id=request.user_id),
            timeout=deadline(context, self.config.write_timeout_s),
        )
        self.user_vectors.forget(request.user_id)
        self.histories.forget(request.user_id)
        reply = gateway_pb2.ForgetUserResponse(events_deleted=events.events_deleted)
        if self.trainer is None:
            return reply
        try:
            model = await self.trainer.ForgetUser(
                trainer_pb2.ForgetUserRequest(user_id=request.user_id),
                timeout=deadline(context, self.config.write_timeout_s),
            )
        except grpc.aio.AioRpcError as error:
            error.add_note(
                f"the user's events are deleted ({events.events_deleted}), but the trainer"
                " could not drop the user from the model: repeat the call to complete it"
            )
            raise
        reply.trainer_updated = True
        reply.model_knew_user = model.model_knew_user
        reply.replay_samples_deleted = model.replay_samples_deleted
        reply.model_versions_rewritten = model.model_versions_rewritten
        reply.checkpoints_rewritten = model.checkpoints_rewritten
        return reply

    async def GetStatus(
        self, request: gateway_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStatusResponse:
        model = self._model()  # read before the live pointer: serving never runs ahead of it
        live = await self._live()
        trained = live.trained_through_offset if live else 0
        # One read gives both the log's end and the oldest event the model lacks.
        reply = await self.features.ReadEvents(
            features_pb2.ReadEventsRequest(from_offset=trained + 1, limit=1),
            timeout=deadline(context, self.config.call_timeout_s),
        )
        missing = timestamp_seconds(reply.events[0].appended_at) if reply.events else 0.0
        status = freshness(
            model.name if model else CONTENT_MODEL, live, reply.end_offset, missing, time.time()
        )
        return _status_to_proto(status)

    async def _live(self) -> LiveVersion | None:
        if self.serving is None:
            return None
        return await asyncio.to_thread(self.serving.store.live)


def _report_partial_stream(
    error: Exception,
    written: int,
    reply: gateway_pb2.LogEventsResponse,
    context: grpc.aio.ServicerContext,
) -> None:
    """A failed stream says how many of its first events are on disk (chunks are written
    whole or not at all), in the message and as trailing metadata, so that a producer
    resumes from the next one."""
    if written:
        error.add_note(
            f"the stream's first {written} events were written before the error"
            f" (accepted {reply.accepted}, duplicates {reply.duplicates},"
            f" last_offset {reply.last_offset}); resume from events[{written}]"
        )
    else:
        error.add_note("no event of the stream was written")
    context.set_trailing_metadata(
        (
            (STREAM_WRITTEN_METADATA, str(written)),
            (STREAM_LAST_OFFSET_METADATA, str(reply.last_offset)),
        )
    )


def _status_to_proto(status: Status) -> gateway_pb2.GetStatusResponse:
    return gateway_pb2.GetStatusResponse(
        serving_version=status.serving_version,
        live_version=status.live_version,
        previous_version=status.previous_version,
        published_at=timestamp_of(status.published_at) if status.published_at else None,
        trained_offset=status.trained_offset,
        log_end_offset=status.log_end_offset,
        events_behind=status.events_behind,
        newest_event_age_s=status.newest_event_age_s,
        oldest_missing_event_age_s=status.oldest_missing_event_age_s,
    )
