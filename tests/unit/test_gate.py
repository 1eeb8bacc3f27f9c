"""The gate's decision: worse by more than the margin is rejected, with the reason."""

from __future__ import annotations

import math

from services.trainer.continual_learner import Scores
from services.trainer.gate import GateConfig, decide

CONFIG = GateConfig(margin=0.05, min_events=100, k=10)


def scores(events: int, ndcg: float) -> Scores:
    return Scores(events, hits=events * ndcg * 2, ndcg=events * ndcg)


def test_candidate_worse_than_the_margin_is_rejected_with_both_figures() -> None:
    decision = decide(scores(500, 0.08), scores(500, 0.10), "two-tower-3", CONFIG)
    assert not decision.accepted
    assert decision.reason.startswith("rejected: ndcg@10 0.0800 vs two-tower-3's 0.1000")
    assert decision.candidate["events"] == 500 and decision.live["ndcg@10"] == 0.1


def test_candidate_within_the_margin_or_better_is_accepted() -> None:
    assert decide(scores(500, 0.096), scores(500, 0.10), "v", CONFIG).accepted
    assert decide(scores(500, 0.2), scores(500, 0.10), "v", CONFIG).accepted


def test_first_candidate_is_accepted_when_nothing_serves() -> None:
    decision = decide(scores(10, 0.01), None, "", CONFIG)
    assert decision.accepted and "no version was live" in decision.reason


def test_too_few_events_to_compare_do_not_block_freshness() -> None:
    decision = decide(scores(20, 0.0), scores(20, 0.5), "v", CONFIG)
    assert decision.accepted and "too few" in decision.reason


def test_candidate_with_non_finite_scores_is_rejected() -> None:
    assert not decide(Scores(500, math.nan, math.nan), scores(500, 0.1), "v", CONFIG).accepted


def paired(values: list[float]) -> Scores:
    import numpy as np

    per_event = np.asarray(values, dtype=np.float64)
    return Scores(len(values), float((per_event > 0).sum()), float(per_event.sum()), per_event)


def test_a_noisy_dip_within_chance_passes_but_a_sure_loss_is_rejected() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    live = rng.choice([0.0, 1.0], size=200, p=[0.9, 0.1])
    wobble = live.copy()
    wobble[np.flatnonzero(live)[:3]] = 0.0  # a few hits fewer: 15% lower, by chance
    decision = decide(paired(list(wobble)), paired(list(live)), "v", CONFIG)
    assert decision.accepted, decision.reason
    worse = np.where(rng.random(2000) < 0.03, 1.0, 0.0)
    better = np.where(rng.random(2000) < 0.10, 1.0, 0.0)
    assert not decide(paired(list(worse)), paired(list(better)), "v", CONFIG).accepted
