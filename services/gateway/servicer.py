"""The public API. It validates every request itself (so bad input never reaches a
downstream service) and composes features and retrieval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.gateway.config import GatewayConfig
from services.gateway.profile import profile_weights
from services.gateway.reasons import (
    MODEL_REASON,
    NEW_ITEM_REASON,
    recommendation_reason,
    similar_item_reasons,
)
from services.gateway.serving import ServingModel, user_inputs
from services.gateway.status import Status, freshness
from shared.clients import deadline
from shared.convert import (
    event_to_proto,
    events_from_proto,
    filter_from_proto,
    interaction_from_proto,
    item_to_proto,
    items_from_proto,
    timestamp_of,
    timestamp_seconds,
)
from shared.embedding_client import EmbeddingClient, EmbeddingUnavailable
from shared.errors import InvalidArgument, Unavailable
from shared.events import Event, Interaction, validate_events
from shared.items import CONTENT_INDEX, validate_id, validate_ids, validate_items, validate_k
from shared.model_store import UNLEARNED_CATEGORY, LiveVersion, ServingInfo, index_categories

# What answers Recommend until a trained model is published.
CONTENT_MODEL = "content-profile"
# Events of a stream are written in chunks of this many as they arrive.
STREAM_CHUNK = 1_000
# Trailing metadata of a StreamEvents that failed after writing part of the stream.
STREAM_WRITTEN_METADATA = "recsys-events-written"
STREAM_LAST_OFFSET_METADATA = "recsys-last-offset"
log = logging.getLogger(__name__)


def scored(item_id: str, score: float) -> gateway_pb2.ScoredItem:
    return gateway_pb2.ScoredItem(item_id=item_id, score=score)


@dataclass
class Pick:
    scored: gateway_pb2.ScoredItem
    because: str  # the history item it is closest to; "" for trending items
    reason: str = ""  # a fixed reason, where there is no single history item to name


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
        filter_from_proto(request.filter)
        model = self._model()
        if model is not None:
            try:
                return await self._recommend_from_model(model, request, context)
            except EmbeddingUnavailable as error:
                log.warning(
                    "model unavailable, answering from content profile",
                    extra={"model": model.name, "why": str(error)},
                )
                reply = await self._recommend_from_content(request, context)
                reply.fallback = True
                return reply
        return await self._recommend_from_content(request, context)

    async def _history(
        self, request: gateway_pb2.RecommendRequest, limit: int, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetUserHistoryResponse:
        return await self.features.GetUserHistory(
            features_pb2.GetUserHistoryRequest(
                user_id=request.user_id,
                limit=limit,
                include_seen_item_ids=not request.include_seen,
            ),
            timeout=deadline(context, self.config.call_timeout_s),
        )

    async def _trending_candidates(
        self, request: gateway_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetTrendingResponse:
        return await self.features.GetTrending(
            features_pb2.GetTrendingRequest(
                k=self.config.trending_candidates, filter=request.filter
            ),
            timeout=deadline(context, self.config.call_timeout_s),
        )

    async def _recommend_from_model(
        self,
        model: ServingInfo,
        request: gateway_pb2.RecommendRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.RecommendResponse:
        """The user tower of `model` on the user's latest history, searched against the
        item index of the same version."""
        assert self.embedding is not None
        limit = max(self.config.recent_history, model.history_len)
        blend = self.config.model_popularity_weight > 0
        if blend:
            history, trending_reply = await asyncio.gather(
                self._history(request, limit, context),
                self._trending_candidates(request, context),
            )
            trending = list(trending_reply.items)
        else:
            history, trending = await self._history(request, limit, context), []
        recent = [interaction_from_proto(i) for i in history.recent]
        user_row, rows, weights = user_inputs(model, request.user_id, recent, history.first_offset)
        picks: list[Pick] = []
        if user_row[0, 0] or rows.any():
            vector = await self.embedding.user_vectors(
                model.version,
                user_row,
                rows,
                weights,
                deadline(context, self.config.embedding_timeout_s),
            )
            search = retrieval_pb2.SearchRequest(
                index=model.name,
                vector=vector[0].tolist(),
                k=request.k,
                filter=request.filter,
                exclude_item_ids=history.seen_item_ids,
                boosts=self._popularity_boosts(trending, self.config.model_popularity_weight),
            )
            slots = int(request.k * self.config.new_item_share)
            if slots:
                search.reserved.CopyFrom(
                    retrieval_pb2.ReservedSlots(slots=slots, category=UNLEARNED_CATEGORY)
                )
            if self.config.model_content_weight > 0 and recent:
                profile = profile_weights(recent, self.config.profile_half_life_s)
                search.profile.CopyFrom(
                    retrieval_pb2.ProfileTerm(
                        index=CONTENT_INDEX,
                        items=[retrieval_pb2.WeightedItem(item_id=i, weight=w) for i, w in profile],
                        weight=self.config.model_content_weight,
                    )
                )
            reply = await self.retrieval.Search(
                search, timeout=deadline(context, self.config.call_timeout_s)
            )
            picks = [
                Pick(
                    scored(h.item_id, h.score), "", NEW_ITEM_REASON if h.reserved else MODEL_REASON
                )
                for h in reply.hits
            ]
        fallback = not picks
        if len(picks) < request.k:
            if not blend:
                trending = list((await self._trending_candidates(request, context)).items)
            picks += await self._trending(request, history, trending, picks, context)
        if request.explain:
            await self._explain(picks, recent, context)
        return gateway_pb2.RecommendResponse(
            items=[p.scored for p in picks],
            model_version=model.name if not fallback else CONTENT_MODEL,
            fallback=fallback,
        )

    async def _recommend_from_content(
        self, request: gateway_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecommendResponse:
        history, trending = await asyncio.gather(
            self._history(request, self.config.recent_history, context),
            self._trending_candidates(request, context),
        )
        recent = [interaction_from_proto(i) for i in history.recent]
        picks = await self._from_profile(request, history, recent, list(trending.items), context)
        fallback = not picks
        if len(picks) < request.k:
            picks += await self._trending(request, history, list(trending.items), picks, context)
        if request.explain:
            await self._explain(picks, recent, context)
        return gateway_pb2.RecommendResponse(
            items=[p.scored for p in picks], model_version=CONTENT_MODEL, fallback=fallback
        )

    def _popularity_boosts(
        self, trending: list[gateway_pb2.ScoredItem], weight: float
    ) -> list[retrieval_pb2.WeightedItem]:
        """Popularity on the scale of a similarity: the most popular item gets the weight."""
        top = max((t.score for t in trending), default=0.0)
        if top <= 0 or weight == 0:
            return []
        scale = weight / top
        return [
            retrieval_pb2.WeightedItem(item_id=t.item_id, weight=t.score * scale) for t in trending
        ]

    async def _from_profile(
        self,
        request: gateway_pb2.RecommendRequest,
        history: features_pb2.GetUserHistoryResponse,
        recent: list[Interaction],
        trending: list[gateway_pb2.ScoredItem],
        context: grpc.aio.ServicerContext,
    ) -> list[Pick]:
        profile = profile_weights(recent, self.config.profile_half_life_s)
        if not profile:
            return []
        reply = await self.retrieval.SearchByProfile(
            retrieval_pb2.SearchByProfileRequest(
                index=CONTENT_INDEX,
                profile=[retrieval_pb2.WeightedItem(item_id=i, weight=w) for i, w in profile],
                k=request.k,
                filter=request.filter,
                exclude_item_ids=history.seen_item_ids,
                boosts=self._popularity_boosts(trending, self.config.popularity_weight),
            ),
            timeout=deadline(context, self.config.call_timeout_s),
        )
        return [Pick(scored(h.item_id, h.score), h.closest_profile_item_id) for h in reply.hits]

    async def _trending(
        self,
        request: gateway_pb2.RecommendRequest,
        history: features_pb2.GetUserHistoryResponse,
        trending: list[gateway_pb2.ScoredItem],
        picks: list[Pick],
        context: grpc.aio.ServicerContext,
    ) -> list[Pick]:
        """Trending items the user has not seen, to fill the list; from the list fetched
        with the history, or, when the user has seen most of it, asked for again."""
        taken = set(history.seen_item_ids) | {p.scored.item_id for p in picks}
        wanted = request.k - len(picks)
        fresh = [Pick(t, "") for t in trending if t.item_id not in taken][:wanted]
        if len(fresh) == wanted or len(trending) < self.config.trending_candidates:
            return fresh
        reply = await self.features.GetTrending(
            features_pb2.GetTrendingRequest(
                k=wanted, filter=request.filter, exclude_item_ids=sorted(taken)
            ),
            timeout=deadline(context, self.config.call_timeout_s),
        )
        return [Pick(item, "") for item in reply.items]

    async def _explain(
        self,
        picks: list[Pick],
        recent: list[Interaction],
        context: grpc.aio.ServicerContext,
    ) -> None:
        because = list({p.because for p in picks if p.because})
        titles: dict[str, str] = {}
        if because:
            found = await self.features.GetItems(
                features_pb2.GetItemsRequest(item_ids=because, allow_missing=True),
                timeout=deadline(context, self.config.call_timeout_s),
            )
            titles = {item.item_id: item.title or item.item_id for item in found.items}
        actions = {i.item_id: i.type for i in reversed(recent)}  # the latest action wins
        for pick in picks:
            pick.scored.reasons.append(
                pick.reason or recommendation_reason(pick.because, titles, actions)
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
