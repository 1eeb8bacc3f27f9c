"""The per-block aggregate of the "blocks" protocol: ranking metrics per user, coverage and
concentration of what was recommended."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from shared.ranking_metrics import hit_at_k, ndcg_at_k, recall_at_k


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts: 0 when equal, towards 1 when concentrated."""
    values = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    total = float(values.sum())
    if values.size == 0 or total <= 0.0:
        return 0.0
    n = values.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2.0 * np.dot(ranks, values) / (n * total) - (n + 1) / n)


class BlockScores:
    """Per-user results of one block, averaged into the block's summary."""

    def __init__(self, catalogue_size: int) -> None:
        self._catalogue_size = catalogue_size
        self._per_user: dict[str, list[float]] = {
            key: [] for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10")
        }
        self._cold_recall: list[float] = []
        self._top10_counts: Counter[str] = Counter()

    def add(self, ranked: Sequence[str], truth: set[str], new_items: set[str]) -> None:
        """One user: ranked is their top-20 list, truth their items in the block."""
        self._per_user["recall@10"].append(recall_at_k(ranked, truth, 10))
        self._per_user["recall@20"].append(recall_at_k(ranked, truth, 20))
        self._per_user["ndcg@10"].append(ndcg_at_k(ranked, truth, 10))
        self._per_user["ndcg@20"].append(ndcg_at_k(ranked, truth, 20))
        self._per_user["hr@10"].append(hit_at_k(ranked, truth, 10))
        cold_truth = truth & new_items
        if cold_truth:
            self._cold_recall.append(recall_at_k(ranked, cold_truth, 20))
        self._top10_counts.update(ranked[:10])

    def summary(self) -> dict[str, float]:
        result = {"users": float(len(self._per_user["hr@10"]))}
        result.update({key: _mean(values) for key, values in self._per_user.items()})
        result["cold_recall@20"] = _mean(self._cold_recall)
        result["coverage@10"] = self._coverage()
        result["gini@10"] = gini(self._catalogue_counts())
        return result

    def _coverage(self) -> float:
        if self._catalogue_size <= 0:
            return 0.0
        return len(self._top10_counts) / self._catalogue_size

    def _catalogue_counts(self) -> np.ndarray:
        # Items never recommended still belong to the catalogue: they count as zeros.
        recommended = np.fromiter(self._top10_counts.values(), dtype=np.float64)
        missing = max(self._catalogue_size - recommended.size, 0)
        return np.concatenate([recommended, np.zeros(missing)])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0
