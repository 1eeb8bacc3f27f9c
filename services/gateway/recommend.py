"""The ranking policy of `Recommend`, free of gRPC: every rule of what a user is shown.

Without a trained model (or when its user tower does not answer), the content profile: the
user's recent items, weighted by action and age, searched in the catalogue's text index,
plus trending popularity and the items other users acted on together with the profile's
(co-occurrence, item-kNN's similarity). With a model version: one search of the version's
index by the user tower's vector, plus the content profile's similarity, trending
popularity and co-occurrence, with the last places kept for items the version has not
learned. Whatever is short of `k` is
filled with trending items the user has not seen. The policy reaches the services through
`RankingSources`; the servicer passes gRPC-backed ones (`downstream.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.gateway.reasons import (
    MODEL_REASON,
    NEW_ITEM_REASON,
    recommendation_reason,
    together_reason,
)
from shared.events import Interaction, interaction_weight
from shared.items import CONTENT_INDEX, ItemFilter
from shared.model_store import UNLEARNED_CATEGORY, ServingInfo
from shared.profile import profile_weights

# What answers Recommend until a trained model is published.
CONTENT_MODEL = "content-profile"
log = logging.getLogger(__name__)


class UserVectorUnavailable(RuntimeError):
    """The user tower gave no vector (Triton down, past its deadline, version gone)."""


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    k: int
    item_filter: ItemFilter = ItemFilter()
    include_seen: bool = False
    explain: bool = False


@dataclass
class RankedItem:
    item_id: str
    score: float
    reasons: list[str] = field(default_factory=list)  # filled only when explaining


@dataclass
class Recommendation:
    items: list[RankedItem]
    model_version: str
    fallback: bool


@dataclass(frozen=True)
class RankingSettings:
    recent_history: int  # interactions that make a user's profile
    profile_half_life_s: float
    popularity_weight: float  # popularity added to the profile's similarity, at most this
    trending_candidates: int
    model_popularity_weight: float  # the same, added to the model's scores
    model_content_weight: float  # the content profile's similarity added to the model's
    new_item_share: float  # of k: places kept for items the serving version has not learned
    co_occurrence_weight: float = 0.0  # co-occurrence added to the profile's, at most this
    model_co_occurrence_weight: float = 0.0  # the same, added to the model's scores
    co_occurrence_candidates: int = 100  # related items asked for
    # How fast popularity fades, in event time: features ranks by the half-life it keeps
    # nearest to this (FeaturesConfig.trending_half_lives_s); 0: features' default.
    trending_half_life_s: float = 0.0
    # The same, for what a user with no history gets (their whole list); 0: the above, and
    # tuned with it. Configured only: a service's newcomers may take what has lasted where
    # its regulars follow what is new (docs/ranking.md: tuned apart, it cost the rest).
    newcomer_half_life_s: float = 0.0
    # TUNED_SETTINGS fixed by configuration: a version's published values do not change them.
    pinned: frozenset[str] = frozenset()

    def with_published(self, published: Mapping[str, float]) -> RankingSettings:
        """These settings with the values a model version was published with, where they
        are tuned settings and not pinned."""
        changes: dict[str, Any] = {
            name: float(value)
            for name, value in published.items()
            if name in TUNED_SETTINGS and name not in self.pinned
        }
        return dataclasses.replace(self, **changes) if changes else self


# What the trainer chooses from the data (services/trainer/ranking_tuner.py) and publishes
# with each model version: the terms added to the model's scores, the kept places and how
# the profile weighs a user's past.
TUNED_SETTINGS = (
    "model_popularity_weight",
    "model_content_weight",
    "model_co_occurrence_weight",
    "new_item_share",
    "profile_half_life_s",
    "trending_half_life_s",
)


# What the policy reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class UserHistory:
    recent: Sequence[Interaction]  # newest first
    seen_item_ids: Sequence[str]  # empty when the query includes seen items
    first_offset: int  # the log offset of the user's oldest event (0: none)


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float


@dataclass(frozen=True)
class Related:
    item_id: str
    score: float
    because: str  # the history item users acted on together with it most


@dataclass(frozen=True)
class RankingInputs:
    history: UserHistory
    trending: list[Scored]  # empty unless asked for
    related: list[Related]  # empty unless asked for


@dataclass(frozen=True)
class TrendingQuery:
    k: int
    item_filter: ItemFilter
    # How fast popularity fades, in event time: the nearest that features keeps; 0: its default.
    half_life_s: float = 0.0
    exclude_item_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputsQuery:
    user_id: str
    limit: int  # recent interactions
    with_seen_ids: bool
    item_filter: ItemFilter
    trending_k: int  # 0: no trending list
    related_k: int  # 0: no related items
    profile_half_life_s: float  # how the related items weigh the history
    trending_half_life_s: float = 0.0  # the trending list's (0: features' default)

    def trending(self) -> TrendingQuery:
        return TrendingQuery(self.trending_k, self.item_filter, self.trending_half_life_s)


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    closest_profile_item_id: str = ""
    reserved: bool = False  # it fills a kept place


@dataclass(frozen=True)
class ModelSearch:
    """A model version's index searched by the user's vector, hybrid-scored."""

    index: str
    vector: np.ndarray
    k: int
    item_filter: ItemFilter
    exclude_item_ids: Sequence[str]
    boosts: Sequence[tuple[str, float]]
    profile: Sequence[tuple[str, float]]  # (item, weight) in `profile_index`; empty: none
    profile_index: str
    profile_weight: float
    reserved_slots: int
    reserved_category: str


@dataclass(frozen=True)
class ProfileSearch:
    """The text index searched by a weighted sum of the profile items' vectors."""

    index: str
    profile: Sequence[tuple[str, float]]
    k: int
    item_filter: ItemFilter
    exclude_item_ids: Sequence[str]
    boosts: Sequence[tuple[str, float]]


class RankingSources(Protocol):
    async def trending(self, query: TrendingQuery) -> list[Scored]: ...

    async def ranking_inputs(self, query: InputsQuery) -> RankingInputs:
        """The history, and the trending list and related items where asked for, as one
        call where it can."""
        ...

    async def user_vector(
        self, model: ServingInfo, user_row: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """The user tower's vector for these inputs (user_inputs); raises
        UserVectorUnavailable."""
        ...

    async def search(self, query: ModelSearch) -> list[Hit]: ...

    async def search_by_profile(self, query: ProfileSearch) -> list[Hit]: ...

    async def titles(self, item_ids: Sequence[str]) -> dict[str, str]: ...


# The policy ---------------------------------------------------------------------------------


class UserVectorCache:
    """The user tower's last answer for each user, with the inputs it was given: the same
    inputs to the same loaded version give the same vector, so a user who comes back with
    no new event costs no call to the user tower. An event changes the inputs and a new version is
    a new ServingInfo, so neither can be answered from here; ForgetUser drops the user."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._vectors: OrderedDict[str, tuple[ServingInfo, bytes, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def inputs(user_row: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> bytes:
        return user_row.tobytes() + rows.tobytes() + weights.tobytes()

    def get(self, model: ServingInfo, user_id: str, inputs: bytes) -> np.ndarray | None:
        held = self._vectors.get(user_id)
        if held is None or held[0] is not model or held[1] != inputs:
            self.misses += 1
            return None
        self._vectors.move_to_end(user_id)
        self.hits += 1
        return held[2]

    def put(self, model: ServingInfo, user_id: str, inputs: bytes, vector: np.ndarray) -> None:
        if self.capacity == 0:
            return
        vector.flags.writeable = False  # shared by every request that hits it
        self._vectors[user_id] = (model, inputs, vector)
        self._vectors.move_to_end(user_id)
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._vectors.pop(user_id, None)


def user_inputs(
    model: ServingInfo, user_id: str, recent: Sequence[Interaction], first_offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user tower's inputs for one user: recent is newest first (as features returns
    it); the tower wants the latest `history_len` items oldest first, left-padded with 0.
    Items the version does not know are left out (row 0 is padding). The user's own row
    only when the version learned from the user's events in the log (`first_offset`, the
    oldest of them): a user forgotten since is new to every version, whatever its rows."""
    length = model.history_len
    rows = np.zeros((1, length), dtype=np.int64)
    weights = np.zeros((1, length), dtype=np.float32)
    known = [i for i in recent if i.item_id in model.items][:length]
    for position, interaction in enumerate(reversed(known), start=length - len(known)):
        rows[0, position] = model.items[interaction.item_id]
        weights[0, position] = interaction_weight(interaction.type, interaction.value)
    user_row = np.array([[model.user_row(user_id, first_offset)]], dtype=np.int64)
    return user_row, rows, weights


def score_boosts(
    trending: Sequence[Scored],
    popularity_weight: float,
    related: Sequence[Related],
    co_occurrence_weight: float,
) -> list[tuple[str, float]]:
    """Popularity and co-occurrence on the scale of a similarity: the most popular item
    gets `popularity_weight`, the most related `co_occurrence_weight`; an item with both
    gets their sum."""
    boosts: dict[str, float] = {}
    terms: tuple[tuple[Sequence[Scored] | Sequence[Related], float], ...] = (
        (trending, popularity_weight),
        (related, co_occurrence_weight),
    )
    for scored, weight in terms:
        top = max((s.score for s in scored), default=0.0)
        if top <= 0 or weight == 0:
            continue
        scale = weight / top
        for s in scored:
            boosts[s.item_id] = boosts.get(s.item_id, 0.0) + s.score * scale
    return list(boosts.items())


@dataclass
class _Pick:
    item_id: str
    score: float
    because: str = ""  # the history item it is closest to; "" for the others
    reason: str = ""  # a fixed reason, where there is no single history item to name
    together: str = ""  # the history item users acted on together with it, if any


class Recommender:
    def __init__(
        self,
        settings: RankingSettings,
        sources: RankingSources,
        user_vectors: UserVectorCache | None = None,
    ) -> None:
        """`user_vectors`: kept across requests (the caller owns it); None keeps none."""
        self.settings = settings
        self.sources = sources
        self.user_vectors = user_vectors or UserVectorCache(0)
        self._published: tuple[ServingInfo, RankingSettings] | None = None

    def settings_for(self, model: ServingInfo | None) -> RankingSettings:
        """The settings a request answered by `model` ranks by: its published ones over
        the configured ones."""
        if model is None or not model.ranking:
            return self.settings
        held = self._published
        if held is None or held[0] is not model:
            held = self._published = (model, self.settings.with_published(model.ranking))
        return held[1]

    async def recommend(self, query: RecommendQuery, model: ServingInfo | None) -> Recommendation:
        """From `model` (read once by the caller, so the request never mixes versions), or
        from the content profile without one or when its user tower does not answer."""
        settings = self.settings_for(model)
        if model is not None:
            try:
                return await self._from_model(query, model, settings)
            except UserVectorUnavailable as error:
                log.warning(
                    "model unavailable, answering from content profile",
                    extra={"model": model.name, "why": str(error)},
                )
                answer = await self._from_content(query, settings)
                answer.fallback = True
                return answer
        return await self._from_content(query, settings)

    async def _from_model(
        self, query: RecommendQuery, model: ServingInfo, settings: RankingSettings
    ) -> Recommendation:
        limit = max(settings.recent_history, model.history_len)
        blend = settings.model_popularity_weight > 0
        inputs = await self._inputs(
            query, settings, limit, blend, settings.model_co_occurrence_weight
        )
        history, trending = inputs.history, inputs.trending
        user_row, rows, weights = user_inputs(
            model, query.user_id, history.recent, history.first_offset
        )
        picks: list[_Pick] = []
        if user_row[0, 0] or rows.any():
            vector = await self._user_vector(query.user_id, model, user_row, rows, weights)
            with_profile = settings.model_content_weight > 0 and history.recent
            hits = await self.sources.search(
                ModelSearch(
                    index=model.name,
                    vector=vector[0],
                    k=query.k,
                    item_filter=query.item_filter,
                    exclude_item_ids=history.seen_item_ids,
                    boosts=score_boosts(
                        trending,
                        settings.model_popularity_weight,
                        inputs.related,
                        settings.model_co_occurrence_weight,
                    ),
                    profile=(
                        profile_weights(history.recent, settings.profile_half_life_s)
                        if with_profile
                        else []
                    ),
                    profile_index=CONTENT_INDEX,
                    profile_weight=settings.model_content_weight,
                    reserved_slots=int(query.k * settings.new_item_share),
                    reserved_category=UNLEARNED_CATEGORY,
                )
            )
            together = _together(inputs.related)
            picks = [
                _Pick(
                    h.item_id,
                    h.score,
                    reason=NEW_ITEM_REASON if h.reserved else MODEL_REASON,
                    together=together.get(h.item_id, ""),
                )
                for h in hits
            ]
        fallback = not picks
        if len(picks) < query.k:
            half_life = self._fill_half_life(settings, history)
            if not blend or half_life != settings.trending_half_life_s:
                trending = await self._trending_candidates(query, settings, half_life)
            picks += await self._trending_fill(query, settings, history, trending, picks, half_life)
        return await self._answer(
            query, picks, history, CONTENT_MODEL if fallback else model.name, fallback
        )

    async def _user_vector(
        self,
        user_id: str,
        model: ServingInfo,
        user_row: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray,
    ) -> np.ndarray:
        inputs = UserVectorCache.inputs(user_row, rows, weights)
        held = self.user_vectors.get(model, user_id, inputs)
        if held is not None:
            return held
        vector = await self.sources.user_vector(model, user_row, rows, weights)
        self.user_vectors.put(model, user_id, inputs, vector)
        return vector

    async def _from_content(
        self, query: RecommendQuery, settings: RankingSettings
    ) -> Recommendation:
        inputs = await self._inputs(
            query, settings, settings.recent_history, True, settings.co_occurrence_weight
        )
        history, trending = inputs.history, inputs.trending
        picks: list[_Pick] = []
        profile = profile_weights(history.recent, settings.profile_half_life_s)
        if profile:
            hits = await self.sources.search_by_profile(
                ProfileSearch(
                    index=CONTENT_INDEX,
                    profile=profile,
                    k=query.k,
                    item_filter=query.item_filter,
                    exclude_item_ids=history.seen_item_ids,
                    boosts=score_boosts(
                        trending,
                        settings.popularity_weight,
                        inputs.related,
                        settings.co_occurrence_weight,
                    ),
                )
            )
            together = _together(inputs.related)
            picks = [
                _Pick(
                    h.item_id,
                    h.score,
                    because=h.closest_profile_item_id,
                    together=together.get(h.item_id, ""),
                )
                for h in hits
            ]
        fallback = not picks
        if len(picks) < query.k:
            half_life = self._fill_half_life(settings, history)
            if half_life != settings.trending_half_life_s:
                trending = await self._trending_candidates(query, settings, half_life)
            picks += await self._trending_fill(query, settings, history, trending, picks, half_life)
        return await self._answer(query, picks, history, CONTENT_MODEL, fallback)

    async def _inputs(
        self,
        query: RecommendQuery,
        settings: RankingSettings,
        limit: int,
        trending: bool,
        co_occurrence_weight: float,
    ) -> RankingInputs:
        return await self.sources.ranking_inputs(
            InputsQuery(
                user_id=query.user_id,
                limit=limit,
                with_seen_ids=not query.include_seen,
                item_filter=query.item_filter,
                trending_k=settings.trending_candidates if trending else 0,
                related_k=settings.co_occurrence_candidates if co_occurrence_weight > 0 else 0,
                profile_half_life_s=settings.profile_half_life_s,
                trending_half_life_s=settings.trending_half_life_s,
            )
        )

    @staticmethod
    def _fill_half_life(settings: RankingSettings, history: UserHistory) -> float:
        """The popularity's half-life of the trending items that fill the list."""
        if not history.recent and settings.newcomer_half_life_s:
            return settings.newcomer_half_life_s
        return settings.trending_half_life_s

    async def _trending_candidates(
        self, query: RecommendQuery, settings: RankingSettings, half_life_s: float
    ) -> list[Scored]:
        return await self.sources.trending(
            TrendingQuery(settings.trending_candidates, query.item_filter, half_life_s)
        )

    async def _trending_fill(
        self,
        query: RecommendQuery,
        settings: RankingSettings,
        history: UserHistory,
        trending: Sequence[Scored],
        picks: Sequence[_Pick],
        half_life_s: float,
    ) -> list[_Pick]:
        """Trending items the user has not seen, to fill the list; from the list fetched
        with the history, or, when the user has seen most of it, asked for again."""
        taken = set(history.seen_item_ids) | {p.item_id for p in picks}
        wanted = query.k - len(picks)
        fresh = [_Pick(t.item_id, t.score) for t in trending if t.item_id not in taken][:wanted]
        if len(fresh) == wanted or len(trending) < settings.trending_candidates:
            return fresh
        more = await self.sources.trending(
            TrendingQuery(wanted, query.item_filter, half_life_s, tuple(sorted(taken)))
        )
        return [_Pick(t.item_id, t.score) for t in more]

    async def _answer(
        self,
        query: RecommendQuery,
        picks: list[_Pick],
        history: UserHistory,
        model_version: str,
        fallback: bool,
    ) -> Recommendation:
        items = [RankedItem(p.item_id, p.score) for p in picks]
        if query.explain:
            because = list({i for p in picks for i in (p.because, p.together) if i})
            titles = await self.sources.titles(because) if because else {}
            actions = {i.item_id: i.type for i in reversed(history.recent)}  # latest wins
            for pick, item in zip(picks, items, strict=True):
                if pick.together:
                    item.reasons.append(together_reason(pick.together, titles, actions))
                else:
                    item.reasons.append(
                        pick.reason or recommendation_reason(pick.because, titles, actions)
                    )
        return Recommendation(items, model_version, fallback)


def _together(related: Sequence[Related]) -> dict[str, str]:
    return {r.item_id: r.because for r in related}
