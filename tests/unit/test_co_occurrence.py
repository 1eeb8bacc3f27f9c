"""Items acted on together: item-kNN's cosine, learned per event, taken back per user."""

from __future__ import annotations

import math
import random

import numpy as np

from services.features.co_occurrence import CoOccurrence
from shared.events import Event, EventType


def act(user: str, item: str, n: int = 0) -> Event:
    return Event(f"{user}-{item}-{n}", user, item, EventType.VIEW, 0.0, 1000.0 + n)


def everything(item_id: str) -> bool:
    return True


def cosine(profiles: dict[str, set[str]], a: str, b: str) -> float:
    users_a = {u for u, items in profiles.items() if a in items}
    users_b = {u for u, items in profiles.items() if b in items}
    return len(users_a & users_b) / math.sqrt(len(users_a) * len(users_b))


def test_the_similarity_is_item_knn_cosine_and_names_the_strongest_profile_item() -> None:
    rng = random.Random(3)
    items = [f"i{n}" for n in range(12)]
    profiles = {f"u{n}": set(rng.sample(items, 5)) for n in range(30)}
    together = CoOccurrence(window=50, neighbours=100)
    together.add(act(user, item) for user, chosen in profiles.items() for item in sorted(chosen))

    profile = [("i0", 1.0), ("i1", 0.5)]
    found = together.related(profile, k=20, admits=everything)

    expected = {
        other: cosine(profiles, "i0", other) + 0.5 * cosine(profiles, "i1", other)
        for other in items[2:]
    }
    assert {r.item_id for r in found} == {i for i, score in expected.items() if score > 0}
    for related in found:
        assert math.isclose(related.score, expected[related.item_id], rel_tol=1e-9)
        strongest = max(
            ("i0", 1.0), ("i1", 0.5), key=lambda p: p[1] * cosine(profiles, p[0], related.item_id)
        )
        assert related.because == strongest[0]
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)


def test_a_removed_user_leaves_exactly_what_the_others_gave() -> None:
    rng = random.Random(5)
    items = [f"i{n}" for n in range(40)]
    events = [act(f"u{rng.randrange(15)}", rng.choice(items), n) for n in range(600)]
    with_everyone, without = CoOccurrence(window=8, neighbours=1000), CoOccurrence(8, 1000)
    with_everyone.add(events)
    without.add(e for e in events if e.user_id != "u3")

    with_everyone.remove([e for e in events if e.user_id == "u3"])

    profile = [(item, 1.0) for item in items[:5]]
    assert _answers(with_everyone, profile) == _answers(without, profile)
    # The user comes back as new: their first event pairs with nothing of before.
    with_everyone.add([act("u3", "i39", 999)])
    without.add([act("u3", "i39", 999)])
    assert _answers(with_everyone, [("i39", 1.0)]) == _answers(without, [("i39", 1.0)])


def _answers(together: CoOccurrence, profile: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(r.item_id, round(r.score, 9)) for r in together.related(profile, 50, everything)]


def test_the_profile_items_and_what_the_filter_refuses_are_never_answered() -> None:
    together = CoOccurrence()
    together.add([act("u1", "a"), act("u1", "b"), act("u1", "c"), act("u2", "a"), act("u2", "d")])
    found = together.related([("a", 1.0), ("b", 1.0)], k=10, admits=lambda item: item != "d")
    assert [r.item_id for r in found] == ["c"]
    assert together.related([("unknown", 1.0)], k=10, admits=everything) == []


def test_each_item_keeps_a_bounded_number_of_neighbours_the_strongest_first() -> None:
    together = CoOccurrence(window=1000, neighbours=5)
    # "hub" is with every item once, and with "close" in many users' histories.
    together.add(act(f"u{n}", item) for n in range(20) for item in ("hub", "close"))
    together.add(act("many", item) for item in ["hub", *(f"x{n}" for n in range(200))])
    held = together._pairs[together._rows["hub"]]
    assert len(held) <= 2 * 5
    found = together.related([("hub", 1.0)], k=1, admits=everything)
    assert found[0].item_id == "close"
    assert np.isfinite(found[0].score)
