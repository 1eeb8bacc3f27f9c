from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import BlockScores, gini
from shared.ranking_metrics import hit_at_k, ndcg_at_k, recall_at_k

SUMMARY_KEYS = {
    "users",
    "recall@10",
    "recall@20",
    "ndcg@10",
    "ndcg@20",
    "hr@10",
    "cold_recall@20",
    "coverage@10",
    "gini@10",
}


def test_recall_at_k_counts_only_the_top_k_when_relevant_items_rank_lower() -> None:
    ranked = ["a", "x", "b", "c"]
    assert recall_at_k(ranked, {"a", "b", "c"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"a", "b", "c"}, 4) == pytest.approx(1.0)


def test_recall_at_k_is_zero_when_truth_is_empty() -> None:
    assert recall_at_k(["a"], set(), 10) == 0.0


def test_ndcg_at_k_is_one_when_ranking_is_perfect() -> None:
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 3) == pytest.approx(1.0)


def test_ndcg_at_k_discounts_by_log_rank_when_hit_is_second() -> None:
    assert ndcg_at_k(["x", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3))


def test_ndcg_at_k_caps_ideal_hits_at_k_when_truth_is_larger_than_k() -> None:
    assert ndcg_at_k(["a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)


def test_ndcg_at_k_ignores_hits_below_k_when_they_rank_lower() -> None:
    assert ndcg_at_k(["x", "y", "a"], {"a"}, 2) == 0.0


def test_ndcg_at_k_is_zero_when_truth_is_empty() -> None:
    assert ndcg_at_k(["a"], set(), 10) == 0.0


def test_hit_at_k_is_one_only_when_a_relevant_item_is_in_the_top_k() -> None:
    assert hit_at_k(["x", "a"], {"a"}, 2) == 1.0
    assert hit_at_k(["x", "a"], {"a"}, 1) == 0.0


def test_gini_is_zero_when_counts_are_equal() -> None:
    assert gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)


def test_gini_approaches_one_when_one_item_has_everything() -> None:
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(3 / 4)
    assert gini(np.array([0] * 999 + [5])) == pytest.approx(0.999)


def test_gini_matches_mean_absolute_difference_when_counts_differ() -> None:
    counts = np.array([1.0, 2.0, 3.0, 7.0])
    pairwise = np.abs(counts[:, None] - counts[None, :]).sum()
    expected = pairwise / (2 * counts.size**2 * counts.mean())
    assert gini(counts) == pytest.approx(expected)


def test_gini_is_zero_when_input_is_empty_or_all_zero() -> None:
    assert gini(np.array([])) == 0.0
    assert gini(np.zeros(5)) == 0.0


def test_block_scores_summary_has_zeros_when_no_users_were_added() -> None:
    summary = BlockScores(10).summary()
    assert set(summary) == SUMMARY_KEYS
    assert all(value == 0.0 for value in summary.values())


def test_block_scores_summary_averages_over_users_when_users_differ() -> None:
    scores = BlockScores(100)
    scores.add(["a", "b"], {"a"}, set())
    scores.add(["x", "y"], {"a", "b"}, set())
    summary = scores.summary()
    assert set(summary) == SUMMARY_KEYS
    assert summary["users"] == 2.0
    assert summary["recall@10"] == pytest.approx(0.5)
    assert summary["ndcg@10"] == pytest.approx(0.5)
    assert summary["hr@10"] == pytest.approx(0.5)


def test_block_scores_recall_at_10_uses_the_top_10_prefix_when_list_has_20() -> None:
    ranked = [f"i{n}" for n in range(20)]
    scores = BlockScores(20)
    scores.add(ranked, {"i15"}, set())
    summary = scores.summary()
    assert summary["recall@10"] == 0.0
    assert summary["hr@10"] == 0.0
    assert summary["recall@20"] == 1.0
    assert summary["ndcg@20"] == pytest.approx(1 / math.log2(17))


def test_block_scores_cold_recall_averages_only_users_with_new_items_when_some_have_none() -> None:
    scores = BlockScores(10)
    scores.add(["new1", "old"], {"new1", "new2", "old"}, {"new1", "new2"})
    scores.add(["x"], {"old"}, {"new1", "new2"})
    assert scores.summary()["cold_recall@20"] == pytest.approx(0.5)


def test_block_scores_cold_recall_is_zero_when_no_user_has_new_items() -> None:
    scores = BlockScores(10)
    scores.add(["a"], {"a"}, {"new"})
    assert scores.summary()["cold_recall@20"] == 0.0


def test_block_scores_coverage_and_gini_count_unrecommended_items_when_catalogue_is_larger() -> (
    None
):
    scores = BlockScores(4)
    scores.add(["a", "b"], {"a"}, set())
    scores.add(["a", "b"], {"b"}, set())
    summary = scores.summary()
    assert summary["coverage@10"] == pytest.approx(0.5)
    assert summary["gini@10"] == pytest.approx(gini(np.array([2, 2, 0, 0])))
    assert summary["gini@10"] == pytest.approx(0.5)


def test_block_scores_coverage_ignores_ranks_below_10_when_lists_are_longer() -> None:
    scores = BlockScores(20)
    scores.add([f"i{n}" for n in range(20)], {"i0"}, set())
    summary = scores.summary()
    assert summary["coverage@10"] == pytest.approx(0.5)
    assert summary["gini@10"] == pytest.approx(0.5)
