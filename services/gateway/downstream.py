"""The ranking policy's sources over gRPC: features for histories, trending and titles,
retrieval for searches, Triton for the user tower; each call within the caller's deadline."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import grpc
import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.gateway.config import GatewayConfig
from services.gateway.recommend import (
    Hit,
    InputsQuery,
    ModelSearch,
    ProfileSearch,
    RankingInputs,
    Related,
    Scored,
    TrendingQuery,
    UserHistory,
    UserVectorUnavailable,
)
from shared.clients import deadline
from shared.convert import interaction_from_proto
from shared.embedding_client import EmbeddingClient, EmbeddingUnavailable
from shared.items import ItemFilter
from shared.model_store import ServingInfo
from shared.streamed import StreamedCalls


def filter_to_proto(item_filter: ItemFilter) -> gateway_pb2.Filter:
    return gateway_pb2.Filter(
        include_categories=sorted(item_filter.include_categories),
        exclude_categories=sorted(item_filter.exclude_categories),
        exclude_item_ids=sorted(item_filter.exclude_item_ids),
    )


def _weighted(pairs: Sequence[tuple[str, float]]) -> list[retrieval_pb2.WeightedItem]:
    return [retrieval_pb2.WeightedItem(item_id=i, weight=w) for i, w in pairs]


def _item_weights(pairs: Sequence[tuple[str, float]]) -> retrieval_pb2.ItemWeights:
    return retrieval_pb2.ItemWeights(item_ids=[i for i, _ in pairs], weights=[w for _, w in pairs])


def _history_request(
    key: HistoryKey, held: tuple[str, UserHistory] | None
) -> features_pb2.GetUserHistoryRequest:
    user_id, limit, with_seen_ids = key
    return features_pb2.GetUserHistoryRequest(
        user_id=user_id,
        limit=limit,
        include_seen_item_ids=with_seen_ids,
        known_version=held[0] if held else "",
    )


def _history(reply: features_pb2.GetUserHistoryResponse) -> UserHistory:
    return UserHistory(
        tuple([interaction_from_proto(i) for i in reply.recent]),
        tuple(reply.seen_item_ids),
        reply.first_offset,
    )


HistoryKey = tuple[str, int, bool]  # user, limit, with seen ids


class KnownHistories:
    """The histories features sent, by user, limit and whether seen ids came with them,
    with the version features named each by: a request names the version held, and
    features sends the history again only when it changed (an event or a forget of the
    user), so that a user's repeated calls do not send and parse the same history again.
    At most `budget_ids` item ids in all (recent and seen), least recently used out
    first; 0 keeps none."""

    def __init__(self, budget_ids: int) -> None:
        self.budget_ids = budget_ids
        self._held: OrderedDict[HistoryKey, tuple[str, UserHistory]] = OrderedDict()
        self._keys: dict[str, set[HistoryKey]] = {}
        self._size = 0

    def get(self, key: HistoryKey) -> tuple[str, UserHistory] | None:
        return self._held.get(key)

    def answer(
        self,
        key: HistoryKey,
        held: tuple[str, UserHistory] | None,
        reply: features_pb2.GetUserHistoryResponse,
    ) -> UserHistory:
        """The history for `reply` to a request that named `held`'s version."""
        if reply.unchanged and held is not None and held[0] == reply.version:
            if key in self._held:
                self._held.move_to_end(key)
            return held[1]
        if reply.unchanged:
            raise RuntimeError(f"features called version {reply.version!r} unchanged, not held")
        history = _history(reply)
        if reply.version:
            self._put(key, reply.version, history)
        return history

    def forget(self, user_id: str) -> None:
        for key in self._keys.pop(user_id, set()):
            self._size -= _ids(self._held.pop(key)[1])

    def _put(self, key: HistoryKey, version: str, history: UserHistory) -> None:
        size = _ids(history)
        if size > self.budget_ids:
            return
        old = self._held.pop(key, None)
        if old is not None:
            self._size -= _ids(old[1])
        self._held[key] = (version, history)
        self._keys.setdefault(key[0], set()).add(key)
        self._size += size
        while self._size > self.budget_ids:
            gone, (_, evicted) = self._held.popitem(last=False)
            self._size -= _ids(evicted)
            users = self._keys[gone[0]]
            users.discard(gone)
            if not users:
                del self._keys[gone[0]]


def _ids(history: UserHistory) -> int:
    return len(history.recent) + len(history.seen_item_ids) + 1


class TrendingCache:
    """The trending lists features sent, by (k, filter, half-life), with the version it named them
    by: a request names the version it holds, and features sends the list again only when
    it changed (with every event), so that a read-heavy load does not rebuild, send and
    parse the same list on every call."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._lists: OrderedDict[TrendingQuery, tuple[str, list[Scored]]] = OrderedDict()

    def known_version(self, key: TrendingQuery) -> str:
        held = self._lists.get(key)
        return held[0] if held else ""

    def answer(self, key: TrendingQuery, reply: features_pb2.GetTrendingResponse) -> list[Scored]:
        held = self._lists.get(key)
        if reply.unchanged and held is not None and held[0] == reply.version:
            self._lists.move_to_end(key)
            return held[1]
        found = [Scored(item.item_id, item.score) for item in reply.items]
        if reply.version:
            self._lists[key] = (reply.version, found)
            self._lists.move_to_end(key)
            while len(self._lists) > self.capacity:
                self._lists.popitem(last=False)
        return found


class HotReads:
    """The two reads every Recommend makes, features' ranking inputs and retrieval's
    search, over long-lived streams (shared/streamed.py: a message on an open stream costs
    a fraction of a unary call's set-up), or as unary calls where `streamed` is off."""

    def __init__(
        self,
        features: features_pb2_grpc.FeaturesServiceStub,
        retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
        streamed: bool,
    ) -> None:
        self.features = features
        self.retrieval = retrieval
        self.streamed = streamed
        self._inputs: StreamedCalls[
            features_pb2.StreamRankingInputsRequest, features_pb2.StreamRankingInputsResponse
        ] = StreamedCalls(features.StreamRankingInputs)
        self._search: StreamedCalls[
            retrieval_pb2.StreamSearchRequest, retrieval_pb2.StreamSearchResponse
        ] = StreamedCalls(retrieval.StreamSearch)

    async def ranking_inputs(
        self, request: features_pb2.GetRankingInputsRequest, timeout: float
    ) -> features_pb2.GetRankingInputsResponse:
        if not self.streamed:
            return await self.features.GetRankingInputs(request, timeout=timeout)
        wrapped = features_pb2.StreamRankingInputsRequest(inputs=request)
        return (await self._inputs(wrapped, timeout)).inputs

    async def search(
        self, request: retrieval_pb2.SearchRequest, timeout: float
    ) -> retrieval_pb2.SearchResponse:
        if not self.streamed:
            return await self.retrieval.Search(request, timeout=timeout)
        return (
            await self._search(retrieval_pb2.StreamSearchRequest(search=request), timeout)
        ).search

    async def search_by_profile(
        self, request: retrieval_pb2.SearchByProfileRequest, timeout: float
    ) -> retrieval_pb2.SearchByProfileResponse:
        if not self.streamed:
            return await self.retrieval.SearchByProfile(request, timeout=timeout)
        wrapped = retrieval_pb2.StreamSearchRequest(by_profile=request)
        return (await self._search(wrapped, timeout)).by_profile

    def close(self) -> None:
        self._inputs.close()
        self._search.close()


class GrpcSources:
    """One request's sources: its deadline bounds every call."""

    def __init__(
        self,
        config: GatewayConfig,
        features: features_pb2_grpc.FeaturesServiceStub,
        reads: HotReads,
        embedding: EmbeddingClient | None,
        context: grpc.aio.ServicerContext,
        trending_cache: TrendingCache,
        histories: KnownHistories,
    ) -> None:
        self.config = config
        self.features = features
        self.reads = reads
        self.embedding = embedding
        self.context = context
        self.trending_cache = trending_cache
        self.histories = histories
        self._filters: dict[ItemFilter, gateway_pb2.Filter] = {}

    def _timeout(self) -> float:
        return deadline(self.context, self.config.call_timeout_s)

    def _filter(self, item_filter: ItemFilter) -> gateway_pb2.Filter:
        if item_filter not in self._filters:
            self._filters[item_filter] = filter_to_proto(item_filter)
        return self._filters[item_filter]

    async def history(self, user_id: str, limit: int, with_seen_ids: bool) -> UserHistory:
        key = (user_id, limit, with_seen_ids)
        held = self.histories.get(key)
        reply = await self.features.GetUserHistory(
            _history_request(key, held), timeout=self._timeout()
        )
        return self.histories.answer(key, held, reply)

    async def trending(self, query: TrendingQuery) -> list[Scored]:
        reply = await self.features.GetTrending(
            self._trending_request(query), timeout=self._timeout()
        )
        if query.exclude_item_ids:  # a list of its own: not kept
            return [Scored(item.item_id, item.score) for item in reply.items]
        return self.trending_cache.answer(query, reply)

    async def ranking_inputs(self, query: InputsQuery) -> RankingInputs:
        key = (query.user_id, query.limit, query.with_seen_ids)
        held = self.histories.get(key)
        request = features_pb2.GetRankingInputsRequest(history=_history_request(key, held))
        trending = query.trending()
        if query.trending_k:
            request.trending.CopyFrom(self._trending_request(trending))
        if query.related_k:
            request.related.CopyFrom(
                features_pb2.GetRelatedRequest(
                    k=query.related_k,
                    profile_half_life_s=query.profile_half_life_s,
                    filter=self._filter(query.item_filter),
                )
            )
        reply = await self.reads.ranking_inputs(request, self._timeout())
        return RankingInputs(
            self.histories.answer(key, held, reply.history),
            self.trending_cache.answer(trending, reply.trending) if query.trending_k else [],
            [Related(r.item_id, r.score, r.because_item_id) for r in reply.related],
        )

    def _trending_request(self, query: TrendingQuery) -> features_pb2.GetTrendingRequest:
        return features_pb2.GetTrendingRequest(
            k=query.k,
            filter=self._filter(query.item_filter),
            exclude_item_ids=query.exclude_item_ids,
            known_version=""
            if query.exclude_item_ids
            else self.trending_cache.known_version(query),
            half_life_s=query.half_life_s,
        )

    async def user_vector(
        self, model: ServingInfo, user_row: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        if self.embedding is None:
            raise UserVectorUnavailable("no embedding service is configured")
        try:
            return await self.embedding.user_vectors(
                model.version,
                user_row,
                rows,
                weights,
                deadline(self.context, self.config.embedding_timeout_s),
            )
        except EmbeddingUnavailable as error:
            raise UserVectorUnavailable(str(error)) from error

    async def search(self, query: ModelSearch) -> list[Hit]:
        request = retrieval_pb2.SearchRequest(
            index=query.index,
            vector=query.vector.tolist(),
            k=query.k,
            filter=self._filter(query.item_filter),
            exclude_item_ids=query.exclude_item_ids,
            boosts=_item_weights(query.boosts),
        )
        if query.reserved_slots:
            request.reserved.CopyFrom(
                retrieval_pb2.ReservedSlots(
                    slots=query.reserved_slots, category=query.reserved_category
                )
            )
        if query.profile:
            request.profile.CopyFrom(
                retrieval_pb2.ProfileTerm(
                    index=query.profile_index,
                    items=_weighted(query.profile),
                    weight=query.profile_weight,
                )
            )
        reply = await self.reads.search(request, self._timeout())
        return [Hit(h.item_id, h.score, reserved=h.reserved) for h in reply.hits]

    async def search_by_profile(self, query: ProfileSearch) -> list[Hit]:
        reply = await self.reads.search_by_profile(
            retrieval_pb2.SearchByProfileRequest(
                index=query.index,
                profile=_weighted(query.profile),
                k=query.k,
                filter=self._filter(query.item_filter),
                exclude_item_ids=query.exclude_item_ids,
                boosts=_item_weights(query.boosts),
            ),
            self._timeout(),
        )
        return [Hit(h.item_id, h.score, h.closest_profile_item_id) for h in reply.hits]

    async def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        found = await self.features.GetItems(
            features_pb2.GetItemsRequest(item_ids=item_ids, allow_missing=True),
            timeout=self._timeout(),
        )
        return {item.item_id: item.title or item.item_id for item in found.items}
