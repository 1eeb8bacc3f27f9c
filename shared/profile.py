"""A user's content profile: their recent items, weighted by what they did and how long
ago in event time (relative to their latest event, so a replay weighs as live did)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.events import Interaction, interaction_weight


def profile_weights(recent: Sequence[Interaction], half_life_s: float) -> list[tuple[str, float]]:
    """(item_id, weight) per distinct item, heaviest first; repeated interactions add up."""
    if not recent:
        return []
    latest = max(i.timestamp for i in recent)
    weights: dict[str, float] = {}
    for interaction in recent:
        age = max(0.0, latest - interaction.timestamp)
        weight = interaction_weight(interaction.type, interaction.value) * 0.5 ** (
            age / half_life_s
        )
        weights[interaction.item_id] = weights.get(interaction.item_id, 0.0) + weight
    return sorted(weights.items(), key=lambda pair: -pair[1])
