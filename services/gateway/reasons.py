"""Reasons a person can read, attached to recommended items."""

from __future__ import annotations

from collections.abc import Sequence


def similar_item_reasons(shared_categories: Sequence[str]) -> list[str]:
    reasons = ["similar title and description"]
    if shared_categories:
        reasons.append("also in " + ", ".join(shared_categories))
    return reasons
