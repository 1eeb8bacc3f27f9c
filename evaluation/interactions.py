"""One interaction of a replayed data set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    timestamp: float  # seconds since the epoch (event time)
    rating: float
