"""The ranking policy of Recommend, driven through the gateway's own seams (RankingSources)
with an in-memory catalogue: what a user is shown, and what it asks the services for."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from services.gateway.reasons import MODEL_REASON, NEW_ITEM_REASON
from services.gateway.recommend import (
    CONTENT_MODEL,
    Hit,
    InputsQuery,
    ModelSearch,
    ProfileSearch,
    RankingInputs,
    RankingSettings,
    Recommendation,
    Recommender,
    RecommendQuery,
    Related,
    Scored,
    TrendingQuery,
    UserHistory,
    UserVectorCache,
    UserVectorUnavailable,
)
from shared.events import EventType, Interaction
from shared.items import CONTENT_INDEX, ItemFilter
from shared.model_store import UNLEARNED_CATEGORY, ServingInfo

SETTINGS = RankingSettings(
    recent_history=50,
    profile_half_life_s=7 * 24 * 3600.0,
    popularity_weight=1.0,
    trending_candidates=4,
    model_popularity_weight=0.5,
    model_content_weight=1.0,
    new_item_share=0.2,
)
TRENDING = [Scored("hot", 8.0), Scored("warm", 4.0), Scored("mild", 2.0), Scored("cool", 1.0)]


@dataclass
class Catalogue:
    """History, trending and search answers as the services would give them; records the
    requests the policy makes."""

    histories: dict[str, UserHistory] = field(default_factory=dict)
    trending_items: list[Scored] = field(default_factory=lambda: list(TRENDING))
    model_hits: list[Hit] = field(default_factory=list)
    profile_hits: list[Hit] = field(default_factory=list)
    tower_down: bool = False
    searches: list[ModelSearch] = field(default_factory=list)
    profile_searches: list[ProfileSearch] = field(default_factory=list)
    trending_asks: list[TrendingQuery] = field(default_factory=list)
    history_asks: list[tuple[str, int, bool]] = field(default_factory=list)
    related: dict[str, list[Related]] = field(default_factory=dict)
    input_asks: list[InputsQuery] = field(default_factory=list)
    tower_asks: int = 0

    async def history(self, user_id: str, limit: int, with_seen_ids: bool) -> UserHistory:
        self.history_asks.append((user_id, limit, with_seen_ids))
        found = self.histories.get(user_id, UserHistory([], [], 0))
        return UserHistory(found.recent[:limit], found.seen_item_ids if with_seen_ids else [], 1)

    async def trending(self, query: TrendingQuery) -> list[Scored]:
        self.trending_asks.append(query)
        excluded = query.exclude_item_ids
        return [t for t in self.trending_items if t.item_id not in excluded][: query.k]

    async def ranking_inputs(self, query: InputsQuery) -> RankingInputs:
        self.input_asks.append(query)
        history = await self.history(query.user_id, query.limit, query.with_seen_ids)
        trending = await self.trending(query.trending())
        related = self.related.get(query.user_id, [])[: query.related_k]
        return RankingInputs(history, trending if query.trending_k else [], related)

    async def user_vector(
        self, model: ServingInfo, user_row: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        self.tower_asks += 1
        if self.tower_down:
            raise UserVectorUnavailable("Triton is down")
        return np.ones((1, 4), dtype=np.float32)

    async def search(self, query: ModelSearch) -> list[Hit]:
        self.searches.append(query)
        return self.model_hits[: query.k]

    async def search_by_profile(self, query: ProfileSearch) -> list[Hit]:
        self.profile_searches.append(query)
        return [h for h in self.profile_hits if h.item_id not in query.exclude_item_ids][: query.k]

    async def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: f"Title of {i}" for i in item_ids}


def rated(*item_ids: str) -> list[Interaction]:
    """Newest first, as features returns a history."""
    return [Interaction(i, EventType.RATE, 5.0, 1000.0 - n) for n, i in enumerate(item_ids)]


def model_version(
    items: Sequence[str] = ("liked", "other"), users: Sequence[str] = ()
) -> ServingInfo:
    return ServingInfo(
        version=3,
        history_len=4,
        dimension=4,
        users={u: n + 1 for n, u in enumerate(users)},
        items={i: n + 1 for n, i in enumerate(items)},
        trained_through_offset=100,
    )


def recommend(
    catalogue: Catalogue, query: RecommendQuery, model: ServingInfo | None = None
) -> Recommendation:
    return asyncio.run(Recommender(SETTINGS, catalogue).recommend(query, model))


def test_content_profile_then_trending_fill_with_reasons() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked", "hot"), ["liked", "hot"], 1)},
        profile_hits=[Hit("sequel", 0.9, "liked"), Hit("remake", 0.7, "liked")],
    )
    answer = recommend(catalogue, RecommendQuery("u", 4, explain=True))
    assert [i.item_id for i in answer.items] == ["sequel", "remake", "warm", "mild"]
    assert answer.items[0].reasons == ["because you rated Title of liked"]
    assert answer.items[2].reasons == ["popular right now"]
    assert answer.model_version == CONTENT_MODEL and not answer.fallback
    search = catalogue.profile_searches[0]
    assert search.index == CONTENT_INDEX and search.exclude_item_ids == ["liked", "hot"]
    assert search.boosts[0] == ("hot", 1.0)  # the most popular item gets the whole weight
    assert search.boosts[1] == ("warm", 0.5)


def test_a_user_with_no_history_gets_trending_as_a_fallback() -> None:
    answer = recommend(Catalogue(), RecommendQuery("new", 3))
    assert [i.item_id for i in answer.items] == ["hot", "warm", "mild"]
    assert answer.fallback and answer.items[0].reasons == []


def test_the_filter_is_passed_as_parsed() -> None:
    only = ItemFilter(include_categories=frozenset({"shoes"}))
    catalogue = Catalogue()
    recommend(catalogue, RecommendQuery("new", 2, item_filter=only))
    assert catalogue.trending_asks[0].item_filter is only


def test_trending_is_asked_again_when_the_user_has_seen_most_of_it() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("hot", "warm", "mild"), ["hot", "warm", "mild"], 1)},
        trending_items=[*TRENDING, Scored("cold", 0.5)],
    )
    answer = recommend(catalogue, RecommendQuery("u", 2))
    assert [i.item_id for i in answer.items] == ["cool", "cold"]
    assert catalogue.trending_asks[-1] == TrendingQuery(
        2, ItemFilter(), 0.0, ("hot", "mild", "warm")
    )


def test_include_seen_asks_for_no_seen_ids() -> None:
    catalogue = Catalogue(histories={"u": UserHistory(rated("hot"), ["hot"], 1)})
    answer = recommend(catalogue, RecommendQuery("u", 2, include_seen=True))
    assert catalogue.history_asks[0] == ("u", 50, False)
    assert answer.items[0].item_id == "hot"


def test_the_model_search_carries_every_term_of_the_ranking() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked"), ["liked"], 1)},
        model_hits=[
            Hit("a", 2.0),
            Hit("b", 1.5),
            Hit("c", 1.2),
            Hit("d", 1.0),
            Hit("fresh", 0.4, reserved=True),
        ],
    )
    answer = recommend(catalogue, RecommendQuery("u", 5, explain=True), model_version())
    assert [i.item_id for i in answer.items] == ["a", "b", "c", "d", "fresh"]
    assert answer.items[0].reasons == [MODEL_REASON]
    assert answer.items[4].reasons == [NEW_ITEM_REASON]
    assert answer.model_version == "two-tower-3" and not answer.fallback
    search = catalogue.searches[0]
    assert search.index == "two-tower-3" and search.exclude_item_ids == ["liked"]
    assert search.reserved_slots == 1 and search.reserved_category == UNLEARNED_CATEGORY
    assert search.boosts[0] == ("hot", 0.5)
    assert search.profile_index == CONTENT_INDEX and search.profile[0][0] == "liked"


def test_a_user_the_model_knows_nothing_of_gets_trending_as_a_fallback() -> None:
    catalogue = Catalogue(histories={"u": UserHistory(rated("unknown-item"), [], 1)})
    answer = recommend(catalogue, RecommendQuery("u", 2), model_version())
    assert catalogue.searches == []
    assert [i.item_id for i in answer.items] == ["hot", "warm"]
    assert answer.fallback and answer.model_version == CONTENT_MODEL


def test_the_content_profile_answers_when_the_user_tower_does_not() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked"), ["liked"], 1)},
        profile_hits=[Hit("sequel", 0.9, "liked")],
        tower_down=True,
    )
    answer = recommend(catalogue, RecommendQuery("u", 1), model_version())
    assert [i.item_id for i in answer.items] == ["sequel"]
    assert answer.fallback and answer.model_version == CONTENT_MODEL


@pytest.mark.parametrize("slots_share, expected", [(0.0, 0), (0.2, 2), (0.15, 1)])
def test_kept_places_are_a_share_of_k_rounded_down(slots_share: float, expected: int) -> None:
    catalogue = Catalogue(histories={"u": UserHistory(rated("liked"), [], 1)})
    settings = RankingSettings(**{**SETTINGS.__dict__, "new_item_share": slots_share})
    asyncio.run(
        Recommender(settings, catalogue).recommend(RecommendQuery("u", 10), model_version())
    )
    assert catalogue.searches[0].reserved_slots == expected


def test_the_user_tower_is_asked_again_only_when_its_inputs_change() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked"), [], 1)}, model_hits=[Hit("a", 1.0)]
    )
    recommender = Recommender(SETTINGS, catalogue, UserVectorCache(100))
    served = model_version()

    def ask(model: ServingInfo) -> list[str]:
        answer = asyncio.run(recommender.recommend(RecommendQuery("u", 1), model))
        return [i.item_id for i in answer.items]

    assert ask(served) == ask(served) == ["a"]
    assert catalogue.tower_asks == 1
    catalogue.histories["u"] = UserHistory(rated("other", "liked"), [], 1)  # a new event
    assert ask(served) == ["a"]
    assert catalogue.tower_asks == 2
    ask(model_version())  # a version loaded anew
    assert catalogue.tower_asks == 3


TOGETHER = replace(SETTINGS, co_occurrence_weight=2.0, model_co_occurrence_weight=0.5)


def test_items_acted_on_together_are_boosted_and_named_as_such() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked", "hot"), ["liked", "hot"], 1)},
        profile_hits=[Hit("sequel", 0.9, "liked"), Hit("remake", 0.7, "liked")],
        related={"u": [Related("remake", 0.6, "hot"), Related("warm", 0.3, "liked")]},
    )
    query = RecommendQuery("u", 2, explain=True)
    answer = asyncio.run(Recommender(TOGETHER, catalogue).recommend(query, None))
    asked = catalogue.input_asks[0]
    assert asked.related_k == TOGETHER.co_occurrence_candidates
    assert asked.profile_half_life_s == TOGETHER.profile_half_life_s
    boosts = dict(catalogue.profile_searches[0].boosts)
    assert boosts["remake"] == 2.0  # the most related item gets the whole weight
    assert boosts["warm"] == 1.0 + 0.5  # half as related, and half as popular as "hot"
    assert answer.items[0].reasons == ["because you rated Title of liked"]
    assert answer.items[1].reasons == ["people who rated Title of hot also chose this"]

    catalogue.model_hits = [Hit("remake", 1.0)]
    recommend_model = Recommender(TOGETHER, catalogue).recommend(query, model_version())
    answer = asyncio.run(recommend_model)
    assert dict(catalogue.searches[0].boosts)["remake"] == 0.5
    assert answer.items[0].reasons == ["people who rated Title of hot also chose this"]


def test_no_related_items_are_asked_for_while_their_weight_is_zero() -> None:
    catalogue = Catalogue(histories={"u": UserHistory(rated("liked"), ["liked"], 1)})
    recommend(catalogue, RecommendQuery("u", 2))
    assert catalogue.input_asks[0].related_k == 0


def test_a_version_is_served_with_the_settings_it_was_published_with_but_pins_hold() -> None:
    catalogue = Catalogue(
        histories={"u": UserHistory(rated("liked"), ["liked"], 1)},
        model_hits=[Hit("a", 2.0), Hit("b", 1.5)],
    )
    published = {
        "model_popularity_weight": 2.0,
        "model_content_weight": 0.25,
        "new_item_share": 0.5,
        "recent_history": 1.0,  # not a tuned setting: a version cannot change it
    }
    model = replace(model_version(), ranking=published)
    pinned = replace(SETTINGS, pinned=frozenset({"model_content_weight"}))
    recommender = Recommender(pinned, catalogue)
    asyncio.run(recommender.recommend(RecommendQuery("u", 4), model))
    search = catalogue.searches[0]
    assert search.boosts[0] == ("hot", 2.0)  # the version's popularity weight
    assert search.profile_weight == 1.0  # pinned by configuration
    assert search.reserved_slots == 2  # half of k
    assert catalogue.input_asks[0].limit == 50
    asyncio.run(recommender.recommend(RecommendQuery("u", 4), model_version()))
    assert catalogue.searches[1].boosts[0] == ("hot", 0.5)  # a version without: the config


LASTING_S = 365 * 86_400.0
CLASSICS = [Scored("classic", 9.0), Scored("evergreen", 5.0), Scored("hot", 1.0)]


@dataclass
class TwoPopularities(Catalogue):
    """Popularity over a year names other items than the trending list's."""

    async def trending(self, query: TrendingQuery) -> list[Scored]:
        if query.half_life_s != LASTING_S:
            return await super().trending(query)
        self.trending_asks.append(query)
        return [t for t in CLASSICS if t.item_id not in query.exclude_item_ids][: query.k]


@pytest.mark.parametrize("model", [None, model_version()], ids=["content", "model"])
def test_newcomers_get_the_popularity_of_their_own_half_life_and_the_others_trending(
    model: ServingInfo | None,
) -> None:
    settings = replace(SETTINGS, newcomer_half_life_s=LASTING_S)
    catalogue = TwoPopularities(histories={"u": UserHistory(rated("liked"), ["liked"], 1)})

    def shown(user: str) -> list[str]:
        answer = asyncio.run(
            Recommender(settings, catalogue).recommend(RecommendQuery(user, 2), model)
        )
        return [i.item_id for i in answer.items]

    assert shown("new") == ["classic", "evergreen"]
    assert shown("u") == ["hot", "warm"]  # filled from the trending list
    assert [q.half_life_s for q in catalogue.trending_asks].count(LASTING_S) == 1
