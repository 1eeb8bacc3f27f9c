"""Reasons a person can read, attached to recommended items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.events import PAST_TENSE, EventType

MODEL_REASON = "picked for you from your recent activity"
# A place kept for an item the serving model has not learned: nobody had interacted with it
# when the model trained, so it was matched by its description alone.
NEW_ITEM_REASON = (
    "new or not yet rated by others: matched to your recent activity by its description"
)


def similar_item_reasons(shared_categories: Sequence[str]) -> list[str]:
    reasons = ["similar title and description"]
    if shared_categories:
        reasons.append("also in " + ", ".join(shared_categories))
    return reasons


def recommendation_reason(
    because: str, titles: Mapping[str, str], actions: Mapping[str, EventType]
) -> str:
    if not because:
        return "popular right now"
    action = PAST_TENSE.get(actions.get(because, EventType.VIEW), "viewed")
    return f"because you {action} {titles.get(because, because)}"


def together_reason(
    because: str, titles: Mapping[str, str], actions: Mapping[str, EventType]
) -> str:
    action = PAST_TENSE.get(actions.get(because, EventType.VIEW), "viewed")
    return f"people who {action} {titles.get(because, because)} also chose this"
