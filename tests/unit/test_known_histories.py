"""The gateway's copies of users' histories, kept while features says they are current."""

from __future__ import annotations

import pytest

from recsys.features.v1 import features_pb2
from services.gateway.downstream import KnownHistories
from shared.convert import timestamp_of


def reply(version: str, *items: str) -> features_pb2.GetUserHistoryResponse:
    return features_pb2.GetUserHistoryResponse(
        recent=[
            features_pb2.Interaction(item_id=i, type=1, timestamp=timestamp_of(1000.0 + n))
            for n, i in enumerate(items)
        ],
        seen_item_ids=list(items),
        first_offset=1,
        version=version,
    )


UNCHANGED = features_pb2.GetUserHistoryResponse


def test_an_unchanged_reply_answers_with_the_history_held() -> None:
    histories = KnownHistories(budget_ids=100)
    key = ("u", 50, True)
    first = histories.answer(key, histories.get(key), reply("v1", "a", "b"))
    held = histories.get(key)
    assert held is not None and held[0] == "v1"
    again = histories.answer(key, held, UNCHANGED(version="v1", unchanged=True))
    assert again is first and [i.item_id for i in again.recent] == ["a", "b"]
    changed = histories.answer(key, held, reply("v2", "c"))
    assert [i.item_id for i in changed.recent] == ["c"]
    assert histories.get(key) == ("v2", changed)


def test_an_unchanged_reply_to_a_version_not_held_is_an_error_not_an_empty_history() -> None:
    histories = KnownHistories(budget_ids=100)
    with pytest.raises(RuntimeError):
        histories.answer(("u", 50, True), None, UNCHANGED(version="v1", unchanged=True))


def test_the_budget_keeps_the_most_recently_used_and_forget_drops_every_query_of_a_user() -> None:
    histories = KnownHistories(budget_ids=11)  # a history of n items takes 2n + 1
    for user in ("a", "b", "c"):
        histories.answer((user, 50, True), None, reply(f"{user}1", "x", "y"))  # 5 each
    assert histories.get(("a", 50, True)) is None  # 15 > 11: the oldest went
    assert histories.get(("b", 50, True)) and histories.get(("c", 50, True))
    histories.answer(("c", 20, False), None, reply("c2"))  # 1 more, for the same user
    histories.forget("c")
    assert histories.get(("c", 50, True)) is None and histories.get(("c", 20, False)) is None
    assert histories.get(("b", 50, True)) is not None
    histories.answer(("big", 50, True), None, reply("big1", *"abcdef"))  # 13: never kept
    assert histories.get(("big", 50, True)) is None

    nothing = KnownHistories(budget_ids=0)
    nothing.answer(("a", 50, True), None, reply("a1"))
    assert nothing.get(("a", 50, True)) is None
