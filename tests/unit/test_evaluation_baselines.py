from __future__ import annotations

import pytest

from evaluation.baselines import (
    ItemKNN,
    MostPopular,
    RecentlyPopular,
    Recommender,
)
from suite.datasets import DatasetEvent


def events(*pairs: tuple[str, str]) -> list[DatasetEvent]:
    """Interactions one second apart, in the order given."""
    return [DatasetEvent(user, item, float(n), 4.0) for n, (user, item) in enumerate(pairs)]


# Item "a" is most popular (3), then "b" (2), then "c" (1).
POPULAR_HISTORY = events(
    ("u1", "a"), ("u2", "a"), ("u3", "a"), ("u1", "b"), ("u2", "b"), ("u3", "c")
)
ALL_ITEMS = {"a", "b", "c", "d"}


def all_baselines() -> list[Recommender]:
    return [MostPopular(), RecentlyPopular(window=100), ItemKNN(), ItemKNN(neighbours=2)]


@pytest.mark.parametrize("model", all_baselines(), ids=lambda m: f"{m.name}")
def test_recommend_respects_exclude_and_candidates_when_both_are_given(model: Recommender) -> None:
    model.fit(POPULAR_HISTORY)
    ranked = model.recommend("u9", 10, exclude={"a"}, candidates={"a", "b", "d"})
    assert ranked == ["b", "d"]


@pytest.mark.parametrize("model", all_baselines(), ids=lambda m: f"{m.name}")
def test_recommend_returns_k_items_when_enough_candidates_exist(model: Recommender) -> None:
    model.fit(POPULAR_HISTORY)
    assert len(model.recommend("u9", 3, set(), ALL_ITEMS)) == 3
    assert len(model.recommend("u1", 2, {"a", "b"}, ALL_ITEMS)) == 2


@pytest.mark.parametrize("model", all_baselines(), ids=lambda m: f"{m.name}")
def test_recommend_returns_empty_list_when_k_is_zero(model: Recommender) -> None:
    model.fit(POPULAR_HISTORY)
    assert model.recommend("u1", 0, set(), ALL_ITEMS) == []


def test_most_popular_ranks_by_count_when_fitted() -> None:
    model = MostPopular()
    model.fit(POPULAR_HISTORY)
    assert model.recommend("u9", 3, set(), ALL_ITEMS) == ["a", "b", "c"]


def test_most_popular_changes_next_recommendation_when_events_are_observed() -> None:
    model = MostPopular()
    model.fit(POPULAR_HISTORY)
    for n in range(4):
        model.observe(DatasetEvent(f"v{n}", "d", 100.0 + n, 4.0))
    assert model.recommend("u9", 1, set(), ALL_ITEMS) == ["d"]


def test_most_popular_sees_new_candidates_when_candidate_set_grows() -> None:
    model = MostPopular()
    model.fit(POPULAR_HISTORY)
    candidates = {"a"}
    assert model.recommend("u9", 5, set(), candidates) == ["a"]
    candidates.add("e")
    assert model.recommend("u9", 5, set(), candidates) == ["a", "e"]


def test_most_popular_counts_every_item_when_catalogue_outgrows_initial_capacity() -> None:
    model = MostPopular()
    items = [f"i{n}" for n in range(3000)]
    model.fit(events(*[("u1", item) for item in items], ("u2", "i2999")))
    assert model.recommend("u9", 2, set(), set(items)) == ["i2999", "i0"]


def test_recommend_uses_the_new_candidate_set_when_an_equal_sized_set_replaces_it() -> None:
    model = MostPopular()
    model.fit(POPULAR_HISTORY)
    assert model.recommend("u9", 2, set(), {"a", "b"}) == ["a", "b"]
    assert model.recommend("u9", 2, set(), {"c", "d"}) == ["c", "d"]


def test_most_popular_forgets_previous_state_when_fitted_again() -> None:
    model = MostPopular()
    model.fit(POPULAR_HISTORY)
    model.fit(events(("u1", "c")))
    assert model.recommend("u9", 1, set(), ALL_ITEMS) == ["c"]


def test_recently_popular_counts_only_the_last_window_when_fitted() -> None:
    model = RecentlyPopular(window=3)
    model.fit(events(("u1", "a"), ("u2", "a"), ("u3", "a"), ("u1", "b"), ("u2", "b"), ("u3", "c")))
    assert model.recommend("u9", 2, set(), ALL_ITEMS) == ["b", "c"]


def test_recently_popular_orders_history_by_time_when_history_is_unsorted() -> None:
    model = RecentlyPopular(window=2)
    late = [DatasetEvent("u1", "b", 10.0, 4.0), DatasetEvent("u2", "b", 11.0, 4.0)]
    early = [DatasetEvent(f"v{n}", "a", float(n), 4.0) for n in range(5)]
    model.fit(late + early)
    assert model.recommend("u9", 1, set(), ALL_ITEMS) == ["b"]


def test_recently_popular_forgets_events_when_they_slide_out_of_the_window() -> None:
    model = RecentlyPopular(window=2)
    model.fit(events(("u1", "a"), ("u2", "a")))
    assert model.recommend("u9", 1, set(), ALL_ITEMS) == ["a"]
    model.observe(DatasetEvent("u3", "b", 10.0, 4.0))
    model.observe(DatasetEvent("u4", "b", 11.0, 4.0))
    assert model.recommend("u9", 2, set(), {"a", "b"}) == ["b", "a"]


def test_recently_popular_rejects_window_when_not_positive() -> None:
    with pytest.raises(ValueError):
        RecentlyPopular(window=0)


# u1 and u2 consume "a" with "b"; u3 and u4 consume "c" with "d"; "e" is popular but unrelated.
KNN_HISTORY = events(
    ("u1", "a"),
    ("u1", "b"),
    ("u2", "a"),
    ("u2", "b"),
    ("u3", "c"),
    ("u3", "d"),
    ("u4", "c"),
    ("u4", "d"),
    ("u5", "e"),
    ("u6", "e"),
    ("u7", "e"),
)
KNN_ITEMS = {"a", "b", "c", "d", "e"}


@pytest.mark.parametrize("neighbours", [None, 1])
def test_item_knn_recommends_the_co_consumed_item_when_user_has_one_item(
    neighbours: int | None,
) -> None:
    model = ItemKNN(neighbours)
    model.fit(KNN_HISTORY + events(("u8", "c")))
    assert model.recommend("u8", 1, {"c"}, KNN_ITEMS) == ["d"]


def test_item_knn_fills_with_popular_items_when_scores_run_out() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY + events(("u8", "c")))
    assert model.recommend("u8", 3, {"c"}, KNN_ITEMS) == ["d", "e", "a"]


def test_item_knn_falls_back_to_popularity_when_user_is_unknown() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY)
    assert model.recommend("stranger", 1, set(), KNN_ITEMS) == ["e"]


def test_item_knn_changes_next_recommendation_when_user_event_is_observed() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY)
    assert model.recommend("u9", 1, set(), KNN_ITEMS) == ["e"]
    model.observe(DatasetEvent("u9", "a", 100.0, 4.0))
    assert model.recommend("u9", 1, {"a"}, KNN_ITEMS) == ["b"]


def test_item_knn_fallback_follows_observed_popularity_when_events_arrive() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY)
    for n in range(5):
        model.observe(DatasetEvent(f"v{n}", "a", 100.0 + n, 4.0))
    assert model.recommend("stranger", 1, set(), KNN_ITEMS) == ["a"]


def test_item_knn_ignores_profile_items_when_they_were_unknown_at_fit() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY)
    model.observe(DatasetEvent("u9", "new", 100.0, 4.0))
    assert model.recommend("u9", 1, {"new"}, KNN_ITEMS | {"new"}) == ["e"]


def test_item_knn_can_recommend_items_when_they_arrived_after_fit() -> None:
    model = ItemKNN()
    model.fit(KNN_HISTORY)
    candidates = KNN_ITEMS | {"new"}
    ranked = model.recommend("u1", 10, {"a", "b"}, candidates)
    assert sorted(ranked) == ["c", "d", "e", "new"]
    assert ranked[-1] == "new"


def test_item_knn_recommends_nothing_when_fitted_on_empty_history() -> None:
    model = ItemKNN()
    model.fit([])
    assert model.recommend("u1", 3, set(), set()) == []
    assert model.recommend("u1", 3, set(), {"a"}) == ["a"]


def test_item_knn_rejects_neighbours_when_not_positive() -> None:
    with pytest.raises(ValueError):
        ItemKNN(neighbours=0)
