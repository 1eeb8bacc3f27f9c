"""The offline studies rank with the gateway's own policy (evaluation/served_policy.py):
replayed in process, a user gets what Recommend would give, and what is revealed counts
at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from evaluation.served_policy import ServedPolicySubject
from services.trainer import TowerConfig, TrainConfig, TrainedModel, train
from shared.events import LoggedEvent
from suite.datasets import DatasetEvent

TOWER = TowerConfig(dim=8, content_dim=6, history_len=4)
DAY = 24 * 3600.0


def planted() -> list[DatasetEvent]:
    """Half the users rate A then B, the others C then D, among a few other items."""
    rng = np.random.default_rng(0)
    events = []
    for user in range(60):
        first, then = ("A", "B") if user % 2 else ("C", "D")
        others = [f"i{n}" for n in rng.choice(12, size=3, replace=False)]
        for item in [*others[:2], first, then, others[2]]:
            events.append(DatasetEvent(f"u{user}", item, 1000.0 + len(events), 4.0))
    return events


def content() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = ["A", "B", "C", "D"] + [f"i{n}" for n in range(12)]
    vectors = {i: rng.standard_normal(TOWER.content_dim).astype(np.float32) for i in ids}
    vectors["twin"] = vectors["i0"] + 0.01  # what the content profile of i0 finds first
    return {i: v / np.linalg.norm(v) for i, v in vectors.items()}


class OneModel:
    def __init__(self, trained: TrainedModel) -> None:
        self.trained = trained
        self.asked: list[int] = []

    def get(self, history: Sequence[DatasetEvent]) -> TrainedModel:
        self.asked.append(len(history))
        return self.trained


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    torch.set_num_threads(1)
    config = TrainConfig(
        epochs=30,
        batch_size=32,
        lr=1e-2,
        warmup_steps=10,
        uniform_negatives=8,
        newcomer_share=0.0,
        holdout_fraction=0.1,
        max_seconds=30,
        threads=1,
    )
    events = [LoggedEvent(n + 1, e.to_event()) for n, e in enumerate(planted())]
    return train(events, content(), config, tower=TOWER)


def subject(models: OneModel | None, **settings: float) -> ServedPolicySubject:
    genres = {i: ("film",) for i in content()}
    return ServedPolicySubject("test", genres, content(), models, 365 * DAY, **settings)


def test_the_content_path_ranks_by_the_profile_and_drops_what_is_revealed() -> None:
    served = subject(None, popularity_weight=0.0, co_occurrence_weight=0.0)
    history = planted()
    served.start_block(history, {"twin"})
    newcomer = [DatasetEvent("new", "i0", 5000.0, 5.0)]
    served.reveal(newcomer)
    assert served.recommend("new", 3, {"i0"}, set())[0] == "twin"
    served.reveal([DatasetEvent("new", "twin", 5001.0, 5.0)])
    assert "twin" not in served.recommend("new", 3, {"i0", "twin"}, set())
    served.close()


def test_the_model_path_serves_the_blocks_model_and_publishes_as_the_trainer_does(
    trained: TrainedModel,
) -> None:
    models = OneModel(trained)
    served = subject(
        models,
        model_content_weight=0.0,
        model_popularity_weight=0.0,
        model_co_occurrence_weight=0.0,
    )
    history = planted()
    served.start_block(history, set())
    assert models.asked == [len(history)]
    assert served.model is not None and served.model.name == "two-tower-1"
    served.reveal([DatasetEvent("fresh", "A", 9000.0, 5.0)])
    assert served.recommend("fresh", 1, {"A"}, set()) == ["B"]  # what followed A
    served.serve(trained)  # a new version, as the continual learner publishes
    assert served.model.name == "two-tower-2"
    assert served.registry.stats("two-tower-2").size == len(served.behaviour.catalogue)
    with pytest.raises(Exception, match="no index"):
        served.registry.stats("two-tower-1")
    served.close()
