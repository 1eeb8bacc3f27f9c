"""Ranking metrics with binary relevance: the trainer's held-out evaluation and the
offline replay score with the same ones."""

from __future__ import annotations

import math
from collections.abc import Sequence


def recall_at_k(ranked: Sequence[str], truth: set[str], k: int) -> float:
    """Share of the relevant items that appear in the top k."""
    if not truth:
        return 0.0
    return len(set(ranked[:k]) & truth) / len(truth)


def ndcg_at_k(ranked: Sequence[str], truth: set[str], k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance."""
    if not truth:
        return 0.0
    dcg = sum(
        1.0 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1) if item in truth
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(truth), k) + 1))
    return dcg / ideal if ideal > 0 else 0.0


def hit_at_k(ranked: Sequence[str], truth: set[str], k: int) -> float:
    """1.0 when any of the top k is relevant."""
    return 1.0 if any(item in truth for item in ranked[:k]) else 0.0
