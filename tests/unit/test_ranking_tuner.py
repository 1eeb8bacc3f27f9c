"""The ranking tuner on synthetic streams built so that one term is what predicts the next
item: it must move that term's weight up, and the settings it chose as it went must have
hit the revealed items more often than the fixed defaults on the same events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from services.gateway import GatewayConfig
from services.gateway.recommend import TUNED_SETTINGS, RankingSettings
from services.trainer.model_training import TrainConfig, TrainedModel, train
from services.trainer.ranking_tuner import (
    RankingTuner,
    Signals,
    Step,
    TunerConfig,
    confident_steps,
    steps_from,
)
from services.trainer.two_tower import TowerConfig
from shared.events import Event, EventType, LoggedEvent

SMALL = TowerConfig(dim=16, content_dim=8, content_hidden=16, history_len=6, feedforward=32)
WEAK = TrainConfig(
    epochs=1,
    batch_size=64,
    lr=1e-3,
    warmup_steps=1,
    uniform_negatives=16,
    newcomer_share=0.0,
    holdout_fraction=0.0,
    max_seconds=30,
    threads=1,
)
ITEMS = [f"x{n}" for n in range(120)]
STEP_S = 60.0
HOUR_S, MONTH_S = 3600.0, 30 * 86_400.0
SIGNALS = Signals(
    trending_half_life_s=HOUR_S,
    co_occurrence_window=50,
    co_occurrence_neighbours=20,
    trending_half_lives_s=(HOUR_S, MONTH_S),
)
TUNING = TunerConfig(sample=40, window=120)
TRAINED_ON = 400


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def content() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {i: rng.standard_normal(SMALL.content_dim).astype(np.float32) for i in ITEMS}


def logged(pairs: list[tuple[str, str]]) -> list[LoggedEvent]:
    return [
        LoggedEvent(
            n,
            Event(f"e{n}", user, item, EventType.RATE, 4.0, n * STEP_S),
            appended_at=n * STEP_S,
        )
        for n, (user, item) in enumerate(pairs, start=1)
    ]


def partners_stream(events: int) -> list[LoggedEvent]:
    """Each user takes an item, then its partner (x0 then x1, x2 then x3, ...); nothing else
    about the items (their text, their popularity) says which comes next."""
    rng = np.random.default_rng(1)
    pairs: list[tuple[str, str]] = []
    user = 0
    while len(pairs) < events:
        user += 1
        for _ in range(3):
            first = 2 * int(rng.integers(len(ITEMS) // 2))
            pairs += [(f"u{user}", ITEMS[first]), (f"u{user}", ITEMS[first + 1])]
    return logged(pairs[:events])


def trending_stream(events: int) -> list[LoggedEvent]:
    """Most events go to a handful of items that everyone takes for a while and then leaves
    for another handful: what is popular now predicts the next item."""
    rng = np.random.default_rng(2)
    pairs = []
    for n in range(events):
        hot = ITEMS[(n // 300) * 5 % len(ITEMS) :][:5]
        item = hot[int(rng.integers(5))] if rng.random() < 0.8 else ITEMS[int(rng.integers(120))]
        pairs.append((f"u{int(rng.integers(150))}", item))
    return logged(pairs)


def classics_stream(events: int) -> list[LoggedEvent]:
    """New users arrive one after another and take a few of ten lasting favourites, the
    first ones most; meanwhile a few users view whatever is the passing hit again and
    again, so that popularity over the last hour names the hit: popularity over months is
    what predicts what a newcomer takes."""
    rng = np.random.default_rng(3)
    classics, hits = ITEMS[:10], ITEMS[100:]
    liking = np.arange(10, 0, -1) / np.arange(10, 0, -1).sum()
    pairs: list[tuple[str, str]] = []
    newcomer, taken = 0, 0
    for n in range(events):
        if rng.random() < 0.6:
            pairs.append((f"fan{int(rng.integers(4))}", hits[(n // 50) % len(hits)]))
            continue
        if taken == 3:
            newcomer, taken = newcomer + 1, 0
        pairs.append((f"new{newcomer}", classics[int(rng.choice(10, p=liking))]))
        taken += 1
    return logged(pairs)


def replay(
    stream: list[LoggedEvent], model: TrainedModel, settings: RankingSettings, tmp: Path
) -> RankingTuner:
    tuner = RankingTuner(settings, TUNING, SIGNALS, tmp)
    tuner.use_content(content())
    tuner.observe(stream[:TRAINED_ON], model, 1)
    for start in range(TRAINED_ON, len(stream), 100):
        tuner.observe(stream[start : start + 100], model, 1)
    return tuner


LOWEST = {"trending_half_life_s": HOUR_S}  # where each search starts; else 0


def hit_rate(tuner: RankingTuner) -> float:
    return tuner.choice_hits / tuner.choice_events


def defaults(**changes: float) -> RankingSettings:
    return GatewayConfig.from_env({}).ranking().with_published(changes)


@pytest.mark.parametrize(
    ("stream", "setting"),
    [
        (partners_stream, "model_co_occurrence_weight"),
        (trending_stream, "model_popularity_weight"),
        (classics_stream, "trending_half_life_s"),
    ],
)
def test_the_tuner_moves_towards_the_term_that_predicts_the_next_item(
    stream: Callable[[int], list[LoggedEvent]], setting: str, tmp_path: Path
) -> None:
    events = stream(2_400)
    model = train(events[:TRAINED_ON], content(), WEAK, tower=SMALL)
    start = defaults(**{setting: LOWEST.get(setting, 0.0)})
    tuned = replay(events, model, start, tmp_path / "tuned")
    fixed = replay(
        events, model, replace(start, pinned=frozenset(TUNED_SETTINGS)), tmp_path / "fixed"
    )
    assert tuned.changes >= 1
    assert getattr(tuned.chosen, setting) > LOWEST.get(setting, 0.0), tuned.status()
    assert fixed.changes == 0 and getattr(fixed.chosen, setting) == LOWEST.get(setting, 0.0)
    assert tuned.choice_events == fixed.choice_events > 0
    assert hit_rate(tuned) > hit_rate(fixed), (tuned.status(), fixed.status())
    tuned.close()
    fixed.close()


def test_newcomers_rank_every_half_life_and_the_others_its_neighbours() -> None:
    ladders = {**SIGNALS.ladders(), "trending_half_life_s": (1.0, 2.0, 3.0, 4.0)}
    steps = steps_from(defaults(trending_half_life_s=1.0), ladders)
    half_lives = [(s.value, s.neighbour) for s in steps if s.setting == "trending_half_life_s"]
    assert half_lives == [(2.0, True), (3.0, False), (4.0, False)]


def test_a_pinned_setting_is_never_a_step() -> None:
    pinned = replace(defaults(), pinned=frozenset(TUNED_SETTINGS[:2]))
    names = {step.setting for step in steps_from(pinned, SIGNALS.ladders())}
    assert names == set(TUNED_SETTINGS[2:])
    assert pinned.with_published({TUNED_SETTINGS[0]: 3.0}) == pinned


def windows(events: int, advantage: float, noise: float) -> np.ndarray:
    """`events` ranked events: the choice's NDCG@10 and a step's, ahead of it by
    `advantage` give or take `noise` (in turn, so that any even number of the first events
    has that very mean and spread)."""
    choice = np.random.default_rng(5).uniform(0.0, 0.5, events)
    signs = np.where(np.arange(events) % 2 == 0, 1.0, -1.0)
    return np.stack([choice, choice + advantage + noise * signs], axis=1)


def test_a_step_far_ahead_is_taken_early_and_one_a_little_ahead_waits_for_the_window() -> None:
    config = TunerConfig(window=300, min_window=100, confidence_z=1.0)
    step = [Step("model_popularity_weight", 0.5)]
    far, near = windows(300, 0.2, 0.15), windows(300, 0.02, 0.15)
    assert confident_steps(far[:100], step, config) == {
        "model_popularity_weight": (pytest.approx(0.2 - 0.015 * 3**0.5, abs=1e-3), 1)
    }
    # Ahead after 100 events by more than a standard error (0.015), not by the early margin.
    assert confident_steps(near[:100], step, config) == {}
    assert confident_steps(near, step, config) == {
        "model_popularity_weight": (pytest.approx(0.02 - 0.15 / 300**0.5, abs=1e-3), 1)
    }
    assert confident_steps(windows(300, -0.05, 0.15), step, config) == {}


def test_early_looks_come_at_fixed_points_of_the_window_however_small_the_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay one event a batch (the prequential protocol's) looks twice before a
    window's end, after 40 and 80 ranked events, not after every batch from 40 on."""
    events = partners_stream(TRAINED_ON + 300)
    model = train(events[:TRAINED_ON], content(), WEAK, tower=SMALL)
    config = replace(TUNING, window=120, min_window=40)
    tuner = RankingTuner(defaults(), config, SIGNALS, tmp_path)
    tuner.use_content(content())
    looks: list[tuple[list[np.ndarray], bool, int]] = []
    decide = tuner._decide

    def looking(final: bool) -> None:
        looks.append((tuner._window, final, len(tuner._window)))
        decide(final)

    tuner.observe(events[:TRAINED_ON], model, 1)  # its newcomers' first events ranked at once
    monkeypatch.setattr(tuner, "_decide", looking)
    for logged_event in events[TRAINED_ON:]:
        tuner.observe([logged_event], model, 1)
    early = [(window, ranked) for window, final, ranked in looks if not final]
    assert early, looks
    for window in {id(w): w for w, _ in early}.values():
        points = [ranked for w, ranked in early if w is window]
        assert points in ([40], [80], [40, 80]), points
    tuner.close()


def test_the_history_a_bootstrap_learned_fits_the_half_life_before_any_new_event(
    tmp_path: Path,
) -> None:
    """A suite starts with a model trained on its whole log: no event is left that the
    model has not learned, but the newcomers' first events in it still say which
    popularity predicts what a newcomer takes."""
    history = classics_stream(1_200)
    model = train(history, content(), WEAK, tower=SMALL)
    tuner = RankingTuner(defaults(**LOWEST), TUNING, SIGNALS, tmp_path)
    tuner.use_content(content())
    tuner.observe(history, model, 1)
    assert tuner.changes == 1, tuner.status()
    assert tuner.chosen.trending_half_life_s == MONTH_S
    tuner.close()
