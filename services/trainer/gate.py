"""The gate before publish: a candidate is compared with the live version on the same
events, ones neither had learned when it was scored, and is not published when it ranks
them worse by more than a margin, with confidence: the per-event differences are paired,
so that a few hundred noisy events do not reject a sound candidate by chance."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.trainer.continual_learner import Scores


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.05  # a candidate may score this share below the live version and pass
    min_events: int = 200  # fewer scored events than this say nothing either way
    k: int = 10
    confidence_z: float = 1.64  # one-sided 95%: how sure "worse by the margin" must be


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    candidate: dict[str, float]
    live: dict[str, float]


def decide(
    candidate: Scores, live: Scores | None, live_name: str, config: GateConfig
) -> GateDecision:
    """`live` is None when nothing serves yet: any sound candidate is better than none."""
    k = config.k
    mine = candidate.metrics(k)
    theirs = live.metrics(k) if live is not None else {}
    key = f"ndcg@{k}"
    if not all(math.isfinite(v) for v in mine.values()):
        return GateDecision(False, "rejected: the candidate's scores are not finite", mine, theirs)
    if live is None:
        return GateDecision(True, "accepted: no version was live to compare it with", mine, theirs)
    if candidate.events < config.min_events:
        return GateDecision(
            True,
            f"accepted: {candidate.events} scored events are too few to compare "
            f"(the gate needs {config.min_events})",
            mine,
            theirs,
        )
    allowed = theirs[key] * config.margin
    difference = mine[key] - theirs[key]
    bound = difference  # without per-event figures: the plain difference
    if candidate.per_event.size == live.per_event.size == candidate.events > 1:
        paired = candidate.per_event - live.per_event
        spread = float(paired.std(ddof=1)) / math.sqrt(paired.size)
        bound = difference + config.confidence_z * spread
    verdict = (
        f"{key} {mine[key]:.4f} vs {live_name}'s {theirs[key]:.4f} on {candidate.events} "
        f"events (at best {bound:+.4f}; margin {config.margin:.0%})"
    )
    if bound < -allowed:
        return GateDecision(False, f"rejected: {verdict}", mine, theirs)
    return GateDecision(True, f"accepted: {verdict}", mine, theirs)
