"""Training of the two-tower model: samples from the event log, sampled-softmax steps,
a held-out evaluation, and saving and loading what was trained.

Every event is a positive: the user, the history before the event and the event's item.
The loss is a softmax over the batch's items plus items drawn uniformly from the whole
catalogue, corrected by how often each candidate is drawn (logQ). The uniform draws are
what teach the content path to place items that nobody has touched yet.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from services.trainer.two_tower import (
    UNKNOWN_ROW,
    TowerConfig,
    TwoTowerModel,
    Vocabulary,
    left_padded,
)
from shared.events import LoggedEvent, interaction_weight
from shared.model_store import ServingInfo
from shared.ranking_metrics import hit_at_k, ndcg_at_k, recall_at_k

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
HistoryEntry = tuple[str, float]  # item id, interaction weight

WEIGHTS_FILE = "model.pt"
USERS_FILE = "users.json"
ITEMS_FILE = "items.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
EMBED_BATCH = 1024
REPLAN_EVERY = 20  # steps between checks that the planned steps still fit the time budget


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 256
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    id_dropout: float = 0.25  # share of candidate items seen through their content only
    # > 0: an item met more often than this is shown content-only proportionally less often,
    # so that content alone speaks for a typical item, not for the hits.
    id_dropout_count: float = 3.0
    user_dropout: float = 0.25  # share of samples that hide who the user is
    history_dropout: float = 0.1  # share of samples whose history is cut to a random length
    # A share of the samples lose their history from the current visit, so that the model
    # learns what a returning user does, not only what comes next within a visit.
    skip_visit_share: float = 0.0
    # Newcomer samples per regular one: a recent event shown with no user and no history.
    # The gateway answers a user the model knows nothing about from trending popularity, so
    # these samples teach the items what recent traffic likes rather than serve a vector.
    # On MovieLens (-m evaluation.offline_two_tower, 6 blocks) 0.5 instead of 2, with 3 epochs
    # in 90 s instead of 2 in 60 s, lifted NDCG@10 of users with a history from .172 to .185.
    newcomer_share: float = 0.5
    newcomer_window: int = 5000  # newcomer samples come from this many latest events
    newcomers_first_visits: bool = False  # ... only from events of a user's first visit
    recency_half_life: float = 0.15  # > 0: a share of the events; that much older, half as often
    uniform_negatives: int = 256  # extra negatives per batch, uniform over the catalogue
    logq_strength: float = 1.0  # 0: no popularity correction, 1: the full logQ correction
    mask_history_negatives: bool = True  # a user's seen items are never served, never push them
    holdout_fraction: float = 0.1
    holdout_epochs: float = 2.0  # passes over the held-out events once they are evaluated
    replay_ratio: float = 1.0  # earlier samples mixed in per held-out sample in that pass
    max_seconds: float = 90.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if self.batch_size < 2 or self.epochs <= 0 or self.lr <= 0 or self.max_seconds <= 0:
            raise ValueError("batch_size must be at least 2; epochs, lr, max_seconds positive")
        for name in ("id_dropout", "user_dropout", "history_dropout", "skip_visit_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")


@dataclass(frozen=True)
class Samples:
    """Training samples as columns: who, what they did before, and what they did next."""

    users: IntArray  # [N]
    history_rows: IntArray  # [N, L], left-padded with row 0, most recent last
    history_weights: FloatArray  # [N, L]
    targets: IntArray  # [N] item rows
    offsets: IntArray  # [N] log offsets of the events
    sessions: IntArray  # [N] latest history entries from the event's own visit

    def __len__(self) -> int:
        return int(self.targets.size)

    def take(self, indices: IntArray | slice) -> Samples:
        return Samples(
            self.users[indices],
            self.history_rows[indices],
            self.history_weights[indices],
            self.targets[indices],
            self.offsets[indices],
            self.sessions[indices],
        )

    @staticmethod
    def concat(parts: Sequence[Samples], history_len: int) -> Samples:
        if not parts:
            return empty_samples(history_len)
        return Samples(
            np.concatenate([p.users for p in parts]),
            np.concatenate([p.history_rows for p in parts]),
            np.concatenate([p.history_weights for p in parts]),
            np.concatenate([p.targets for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.sessions for p in parts]),
        )


def empty_samples(history_len: int, size: int = 0) -> Samples:
    return Samples(
        np.zeros(size, dtype=np.int64),
        np.zeros((size, history_len), dtype=np.int64),
        np.zeros((size, history_len), dtype=np.float32),
        np.zeros(size, dtype=np.int64),
        np.zeros(size, dtype=np.int64),
        np.zeros(size, dtype=np.int64),
    )


class SampleBuilder:
    """Turns events, in log order, into samples; adds new ids to the vocabularies, keeps
    each user's recent history and counts how often each item occurs (for logQ).

    Events of one user less than `visit_gap_s` apart belong to one visit.
    """

    def __init__(
        self,
        users: Vocabulary,
        items: Vocabulary,
        history_len: int,
        item_counts: IntArray | None = None,
        visit_gap_s: float = 3600.0,
    ) -> None:
        self.users = users
        self.items = items
        self.history_len = history_len
        self.visit_gap_s = visit_gap_s
        self.histories: dict[str, deque[tuple[int, float]]] = {}
        self._visits: dict[str, tuple[float, int]] = {}  # user -> last time, visit length
        self._counts = np.zeros(max(len(items), 1024), dtype=np.int64)
        if item_counts is not None:
            self._counts[: item_counts.size] = item_counts

    @property
    def item_counts(self) -> IntArray:
        """Occurrences per item row, one entry per row of the item vocabulary."""
        return self._counts[: len(self.items)].copy()

    def add(self, events: Sequence[LoggedEvent]) -> Samples:
        length = self.history_len
        samples = empty_samples(length, len(events))
        for i, logged in enumerate(events):
            event = logged.event
            self.users.add((event.user_id,))
            self.items.add((event.item_id,))
            target = self.items.row(event.item_id)
            history = self.histories.setdefault(event.user_id, deque(maxlen=length))
            samples.users[i] = self.users.row(event.user_id)
            samples.targets[i] = target
            samples.offsets[i] = logged.offset
            samples.sessions[i] = self._visit(event.user_id, event.timestamp)
            if history:
                rows, weights = zip(*history, strict=True)
                samples.history_rows[i, length - len(rows) :] = rows
                samples.history_weights[i, length - len(rows) :] = weights
            history.append((target, interaction_weight(event.type, event.value)))
            self._count(target)
        return samples

    def _visit(self, user_id: str, timestamp: float) -> int:
        """How many of the user's latest events belong to the visit of this one."""
        last, visit = self._visits.get(user_id, (-math.inf, 0))
        so_far = visit if timestamp - last < self.visit_gap_s else 0
        self._visits[user_id] = (timestamp, so_far + 1)
        return min(so_far, self.history_len)

    def _count(self, row: int) -> None:
        if row >= self._counts.size:
            self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
        self._counts[row] += 1


@dataclass
class TrainedModel:
    model: TwoTowerModel
    users: Vocabulary
    items: Vocabulary
    tower: TowerConfig
    metrics: dict[str, float]
    trained_through_offset: int  # the last log offset learned; -1 when none
    training_seconds: float
    events_used: int
    item_counts: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    newest_event_appended_at: float = 0.0  # when the log acknowledged the newest event learned
    ranking: dict[str, float] = field(default_factory=dict)  # tuned settings published with it


@dataclass(frozen=True)
class TrainingProgress:
    phase: str  # "train" (before the held-out evaluation) or "catch-up" (after it)
    step: int
    steps: int
    loss: float


Progress = Callable[[TrainingProgress], None]


@dataclass(frozen=True)
class Catalogue:
    """The items negatives are drawn from: their rows (0 when untrained) and content."""

    ids: list[str]
    rows: Tensor  # [C] int64
    content: Tensor  # [C, content_dim]


def catalogue_of(items: Vocabulary, content: Mapping[str, np.ndarray], dim: int) -> Catalogue:
    """Every item with content, then every trained item without any."""
    ids = list(content) + [i for i in items.ids if i not in content]
    matrix = np.zeros((len(ids), dim), dtype=np.float32)
    for n, item_id in enumerate(ids):
        vector = content.get(item_id)
        if vector is not None:
            matrix[n] = vector
    return Catalogue(ids, torch.from_numpy(items.rows(ids)), torch.from_numpy(matrix))


def content_rows(
    items: Vocabulary, content: Mapping[str, np.ndarray], dim: int, fallback: Tensor | None
) -> Tensor:
    """[len(items), dim]: each trained item's content, or what the model had for it."""
    matrix = torch.zeros(len(items), dim)
    if fallback is not None:
        kept = min(fallback.shape[0], len(items))
        matrix[:kept] = fallback[:kept]
    for row, item_id in enumerate(items.ids, start=1):
        vector = content.get(item_id)
        if vector is not None:
            matrix[row] = torch.from_numpy(np.asarray(vector, dtype=np.float32))
    matrix[UNKNOWN_ROW] = 0.0
    return matrix


class _Negatives:
    """Uniform catalogue negatives, and the logQ term of every candidate row: the log of
    how many times a batch is expected to hold the item."""

    def __init__(
        self,
        catalogue: Catalogue,
        per_batch: npt.NDArray[np.float64],
        counts: IntArray,
        config: TrainConfig,
    ) -> None:
        """`per_batch`: how often each item row is a batch's target on average; rows past
        its end are not trained yet and count as content only."""
        known_rows = per_batch.size
        self.rows = torch.where(catalogue.rows < known_rows, catalogue.rows, UNKNOWN_ROW)
        self.content = catalogue.content
        self.count = min(config.uniform_negatives, self.rows.numel())
        uniform = self.count / max(self.rows.numel(), 1)
        expected = per_batch + uniform
        expected[UNKNOWN_ROW] = uniform  # untrained items only ever come as uniform draws
        known = np.zeros(known_rows)
        known[: min(known_rows, counts.size)] = counts[:known_rows]
        self.log_expected = torch.from_numpy(np.log(np.maximum(expected, 1e-12))).float()
        dropout = np.full(known_rows, config.id_dropout)
        if config.id_dropout_count > 0:
            dropout *= np.minimum(1.0, config.id_dropout_count / np.maximum(known, 1.0))
        self.id_dropout = torch.from_numpy(dropout).float()

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.count >= self.rows.numel():
            return self.rows, self.content  # the whole catalogue: an exact softmax
        picks = torch.randint(0, self.rows.numel(), (self.count,), generator=generator)
        return self.rows[picks], self.content[picks]


@dataclass
class _Run:
    model: TwoTowerModel
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    negatives: _Negatives
    generator: torch.Generator
    rng: np.random.Generator


@dataclass(frozen=True)
class _Batch:
    indices: IntArray  # the regular samples first, then `newcomers` more
    newcomers: int  # samples shown as from a newcomer: no user, no history


def _visible(batch: Samples, run: _Run) -> tuple[Tensor, Tensor, Tensor]:
    """Users, history rows and weights as the model sees them: some samples hide the user,
    some lose the entries of the current visit, some keep only their last k entries."""
    config, rng = run.config, run.rng
    size, length = batch.history_rows.shape
    users = np.where(rng.random(size) < config.user_dropout, UNKNOWN_ROW, batch.users)
    present = np.count_nonzero(batch.history_rows, axis=1)
    skip = np.where(rng.random(size) < config.skip_visit_share, batch.sessions, 0)
    source = torch.arange(length).unsqueeze(0) - torch.from_numpy(skip).unsqueeze(1)
    shifted = source >= 0
    source = source.clamp_min(0)
    rows = torch.where(shifted, torch.from_numpy(batch.history_rows).gather(1, source), 0)
    weights = torch.from_numpy(batch.history_weights).gather(1, source)
    present = present - skip
    cut = rng.random(size) < config.history_dropout
    keep = np.where(cut, np.floor(rng.random(size) * present), length).astype(np.int64)
    kept = torch.arange(length).unsqueeze(0) >= torch.from_numpy(length - keep).unsqueeze(1)
    kept &= shifted
    return torch.from_numpy(users), torch.where(kept, rows, 0), torch.where(kept, weights, 0.0)


def _user_vectors_for(run: _Run, batch: Samples, newcomers: int) -> Tensor:
    """Every newcomer has the same vector, so it is computed once."""
    tower, regular = run.model.user_tower, len(batch) - newcomers
    users, rows, weights = _visible(batch.take(slice(0, regular)), run)
    parts = [tower(users.unsqueeze(1), rows, weights)] if regular else []
    if newcomers:
        length = rows.shape[1]
        empty = tower(
            torch.zeros(1, 1, dtype=torch.int64),
            torch.zeros(1, length, dtype=torch.int64),
            torch.zeros(1, length),
        )
        parts.append(empty.expand(newcomers, -1))
    return torch.cat(parts)


def _loss(run: _Run, batch: Samples, newcomers: int) -> Tensor:
    config, model, negatives = run.config, run.model, run.negatives
    user_vectors = _user_vectors_for(run, batch, newcomers)
    targets = torch.from_numpy(batch.targets)
    seen_rows = torch.from_numpy(batch.history_rows).clone()
    seen_rows[len(batch) - newcomers :] = UNKNOWN_ROW
    uniform_rows, uniform_content = negatives.draw(run.generator)
    candidates = torch.cat([targets, uniform_rows])
    content = torch.cat([model.item_content[targets], uniform_content])
    draws = torch.rand(candidates.numel(), generator=run.generator)
    shown = draws >= negatives.id_dropout[candidates]
    item_vectors = model.item_tower(torch.where(shown, candidates, 0).unsqueeze(1), content)
    logits = user_vectors @ item_vectors.T / model.config.temperature
    logits = logits - config.logq_strength * negatives.log_expected[candidates]
    logits = logits.masked_fill(_false_negatives(targets, candidates, seen_rows, config), -1e9)
    return F.cross_entropy(logits, torch.arange(targets.numel()))


def _false_negatives(
    targets: Tensor, candidates: Tensor, seen_rows: Tensor, config: TrainConfig
) -> Tensor:
    """[B, C]: candidates that must not count against a sample: another copy of its
    positive, and (optionally) items the user has already seen."""
    masked = candidates.unsqueeze(0) == targets.unsqueeze(1)
    if config.mask_history_negatives:
        rows = int(max(int(candidates.max()), int(seen_rows.max()))) + 1
        seen = torch.zeros(targets.numel(), rows, dtype=torch.bool)
        seen.scatter_(1, seen_rows, True)
        seen[:, UNKNOWN_ROW] = False
        masked |= seen[:, candidates]
    positives = torch.arange(targets.numel())
    masked[positives, positives] = False
    return masked


def _warmed_up(step: int, config: TrainConfig, peak: float) -> float:
    """The rate at `step` of a linear warm-up to `peak` over `warmup_steps`."""
    return peak * min(1.0, (step + 1) / max(config.warmup_steps, 1))


def _learning_rate(step: int, steps: int, config: TrainConfig, peak: float) -> float:
    if step < config.warmup_steps:
        return _warmed_up(step, config, peak)
    progress = (step - config.warmup_steps) / max(1, steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak * (config.min_lr_fraction + (1.0 - config.min_lr_fraction) * cosine)


def make_optimizer(model: TwoTowerModel, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _step(run: _Run, samples: Samples, batch: _Batch, lr: float) -> float:
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss = _loss(run, samples.take(batch.indices), batch.newcomers)
    run.optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    return float(loss.detach())


def _plan(
    order: IntArray, newcomers: IntArray, config: TrainConfig, rng: np.random.Generator
) -> list[_Batch]:
    """Batches over `order`, each topped up with samples drawn from `newcomers` and shown
    as a newcomer's: what recent traffic did is the best guess for someone unknown."""
    extra = int(round(config.newcomer_share * config.batch_size)) if newcomers.size else 0
    batches = []
    for start in range(0, order.size, config.batch_size):
        chosen = order[start : start + config.batch_size]
        if chosen.size + extra < 2:
            continue  # a softmax over one candidate learns nothing
        drawn = newcomers[rng.integers(0, newcomers.size, extra)]
        batches.append(_Batch(np.concatenate([chosen, drawn]), extra))
    return batches


def _newcomer_pool(samples: Samples, end: int, config: TrainConfig) -> IntArray:
    """The latest `newcomer_window` samples before `end`; with `newcomers_first_visits`,
    only those from a user's first visit, whose history holds nothing older."""
    indices = np.arange(end, dtype=np.int64)
    if config.newcomers_first_visits:
        present = np.count_nonzero(samples.history_rows[:end], axis=1)
        indices = indices[present <= samples.sessions[:end]]
    return indices[-config.newcomer_window :]


class _Clock:
    """Cuts the planned steps, from the time the steps so far took, to end within the
    budget; under a passing load the cut is undone as the pace recovers."""

    def __init__(self, seconds: float, started: float) -> None:
        self.deadline = started + seconds

    def affordable(self, planned: int, done: int, step_started: float, reserve: float) -> int:
        per_step = (time.monotonic() - step_started) / max(done, 1)
        left = self.deadline - time.monotonic() - reserve
        return max(done, min(planned, done + int(left / max(per_step, 1e-6))))


def _fit(
    run: _Run,
    samples: Samples,
    batches: list[_Batch],
    phase: str,
    clock: _Clock,
    reserve: float,
    progress: Progress | None,
) -> float:
    planned = steps = len(batches)
    loss, started = math.nan, time.monotonic()
    run.model.train()
    for step, batch in enumerate(batches):
        if step and step % REPLAN_EVERY == 0:
            steps = clock.affordable(planned, step, started, reserve)
        if step >= steps:
            break
        loss = _step(run, samples, batch, _learning_rate(step, steps, run.config, run.config.lr))
        if progress is not None and (step % 50 == 0 or step == steps - 1):
            progress(TrainingProgress(phase, step + 1, steps, loss))
    return loss


def _order(
    n: int, fresh_start: int, epochs: float, config: TrainConfig, rng: np.random.Generator
) -> IntArray:
    """`epochs` passes over the fresh samples (those from `fresh_start` on), each mixed with
    `replay_ratio` older samples per fresh one so that the model does not forget them.
    With a recency half-life, fresh samples are drawn with replacement, recent ones more."""
    fresh = n - fresh_start
    if fresh <= 0:
        return np.zeros(0, dtype=np.int64)
    weights = None
    if config.recency_half_life > 0:
        age = np.arange(fresh)[::-1] / (config.recency_half_life * fresh)
        weights = np.power(0.5, age)
        weights /= weights.sum()
    parts = []
    left = epochs
    while left > 1e-9:
        take = int(round(min(left, 1.0) * fresh))
        if weights is None:
            chosen = fresh_start + rng.permutation(fresh)[:take]
        else:
            chosen = fresh_start + rng.choice(fresh, size=take, p=weights)
        replayed = rng.integers(0, max(fresh_start, 1), int(take * config.replay_ratio))
        if not fresh_start:
            replayed = replayed[:0]
        parts.append(rng.permutation(np.concatenate([chosen, replayed]).astype(np.int64)))
        left -= 1.0
    return np.concatenate(parts)


def update(
    trained: TrainedModel,
    samples: Samples,
    config: TrainConfig,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    catalogue: Catalogue | None = None,
    steps_before: int = 0,
) -> float:
    """`steps` optimisation steps on batches drawn from `samples`; the model must already
    hold every row the samples use. Returns the last loss.

    The learning rate warms up over the optimizer's first `warmup_steps` (`steps_before`:
    the steps it took already), then stays constant: a fresh Adam's first steps move every
    weight by the full rate whatever its gradient, which undid part of what a trained model
    knew. The logQ term is the rate at which these very batches hold each item, as in
    `train`: the fresh events' items come far more often than their share of the whole
    log, and a correction from the log's counts pushed exactly the items trending now down.
    Negatives come from `catalogue`, by default every item the model has trained on.
    """
    if steps <= 0 or len(samples) < 2:
        return math.nan
    model = trained.model
    if catalogue is None:
        rows = torch.arange(1, model.n_items)
        catalogue = Catalogue(trained.items.ids, rows, model.item_content[rows])
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    newcomers = _newcomer_pool(samples, len(samples), config)
    batches: list[_Batch] = []
    while len(batches) < steps:
        batches += _plan(rng.permutation(len(samples)), newcomers, config, rng)
    batches = batches[:steps]
    rates = _per_batch(samples, batches, model.n_items)
    negatives = _Negatives(catalogue, rates, trained.item_counts, config)
    run = _Run(model, optimizer or make_optimizer(model, config), config, negatives, generator, rng)
    model.train()
    loss = math.nan
    for n, batch in enumerate(batches):
        loss = _step(run, samples, batch, _warmed_up(steps_before + n, config, config.lr))
    model.eval()
    return loss


def _starting_point(
    previous: TrainedModel | None, tower: TowerConfig | None
) -> tuple[Vocabulary, Vocabulary, TowerConfig, TwoTowerModel | None, IntArray | None]:
    if previous is None:
        return Vocabulary(), Vocabulary(), tower or TowerConfig(), None, None
    if tower is not None and tower != previous.tower:
        raise ValueError("a warm start keeps the previous model's tower configuration")
    users = Vocabulary(previous.users.ids)
    items = Vocabulary(previous.items.ids)
    model = TwoTowerModel(
        previous.model.n_users, previous.model.n_items, previous.model.item_content, previous.tower
    )
    model.load_state_dict(previous.model.state_dict())
    return users, items, previous.tower, model, previous.item_counts


def train(
    events: Sequence[LoggedEvent],
    content: Mapping[str, np.ndarray],
    config: TrainConfig | None = None,
    previous: TrainedModel | None = None,
    tower: TowerConfig | None = None,
    progress: Progress | None = None,
    holdout_events: int | None = None,
    at_cut: Callable[[TrainedModel], None] | None = None,
) -> TrainedModel:
    """Learns every event, in log order. The latest `holdout_fraction` of them is first held
    out to measure the model trained on the rest (`metrics`), then learned as well.

    `content` holds the catalogue's content vectors, items nobody touched yet included.
    With `previous`, training starts from its weights and vocabularies (tables grow for the
    new ids); `previous` itself is left as it was. `holdout_events` holds out that many
    events instead of the fraction; `at_cut` sees the model trained on the rest, before it
    learns them.
    """
    config = config or TrainConfig()
    started = time.monotonic()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    users, items, tower, model, counts = _starting_point(previous, tower)
    builder = SampleBuilder(users, items, tower.history_len, counts)
    fresh_start = _first_fresh(events, previous)
    held = int(round((len(events) - fresh_start) * config.holdout_fraction))
    if holdout_events is not None:
        held = max(0, min(holdout_events, len(events) - fresh_start - 1))
    cut = len(events) - held
    early = builder.add(events[:cut])
    known_users, known_items, early_counts = len(users), len(items), builder.item_counts
    held_out = _HeldOut.capture(builder, events[:cut], events[cut:])
    everything = Samples.concat([early, builder.add(events[cut:])], tower.history_len)
    model = _sized(model, users, items, content, tower)
    catalogue = catalogue_of(items, content, tower.content_dim)
    trained = TrainedModel(
        model, users, items, tower, {}, -1, 0.0, len(events), builder.item_counts
    )
    plan = _plan(
        _order(cut, fresh_start, config.epochs, config, rng),
        _newcomer_pool(everything, cut, config),
        config,
        rng,
    )
    no_recency = replace(config, recency_half_life=0.0)
    catch_up = _plan(
        _order(len(events), cut, config.holdout_epochs, no_recency, rng),
        _newcomer_pool(everything, len(events), config),
        config,
        rng,
    )
    early_rates = _per_batch(everything, plan, known_items)
    run = _Run(
        model,
        make_optimizer(model, config),
        config,
        _Negatives(catalogue, early_rates, early_counts, config),
        torch.Generator().manual_seed(config.seed),
        rng,
    )
    clock = _Clock(config.max_seconds, started)
    reserve = config.max_seconds * len(catch_up) / max(len(plan) + len(catch_up), 1)
    _fit(run, everything, plan, "train", clock, reserve, progress)
    if cut < len(events):
        trained.metrics = held_out.evaluate(trained, catalogue, known_users, known_items)
        if at_cut is not None:
            at_cut(trained)
        rates = _per_batch(everything, catch_up, len(items))
        run.negatives = _Negatives(catalogue, rates, trained.item_counts, config)
        _fit(run, everything, catch_up, "catch-up", clock, 0.0, progress)
    model.eval()
    trained.trained_through_offset = events[-1].offset if events else -1
    trained.newest_event_appended_at = max((e.appended_at for e in events), default=0.0)
    trained.training_seconds = time.monotonic() - started
    return trained


def _sized(
    model: TwoTowerModel | None,
    users: Vocabulary,
    items: Vocabulary,
    content: Mapping[str, np.ndarray],
    tower: TowerConfig,
) -> TwoTowerModel:
    """A new model for the vocabularies, or `model` grown to them."""
    fallback = None if model is None else model.item_content
    item_content = content_rows(items, content, tower.content_dim, fallback)
    if model is None:
        return TwoTowerModel(len(users), len(items), item_content, tower)
    model.grow(len(users), len(items), item_content)
    return model


def _per_batch(samples: Samples, batches: list[_Batch], rows: int) -> npt.NDArray[np.float64]:
    """How often each item row is a target in one of these batches, on average: the exact
    rate at which the plan draws it, recency and replay included, for the logQ term."""
    if not batches:
        return np.zeros(rows)
    targets = samples.targets[np.concatenate([batch.indices for batch in batches])]
    return np.bincount(targets, minlength=rows)[:rows] / len(batches)


def _first_fresh(events: Sequence[LoggedEvent], previous: TrainedModel | None) -> int:
    """The index of the first event `previous` has not learned (0 without one)."""
    if previous is None:
        return 0
    offsets = [logged.offset for logged in events]
    return int(np.searchsorted(np.asarray(offsets), previous.trained_through_offset, side="right"))


@dataclass
class _HeldOut:
    """The held-out users as the training part left them, and their new items after it."""

    users: list[str]
    histories: list[list[tuple[int, float]]]
    seen: list[set[str]]
    truth: list[set[str]]

    @classmethod
    def capture(
        cls, builder: SampleBuilder, before: Sequence[LoggedEvent], after: Sequence[LoggedEvent]
    ) -> _HeldOut:
        later: dict[str, set[str]] = {}
        for logged in after:
            later.setdefault(logged.event.user_id, set()).add(logged.event.item_id)
        seen: dict[str, set[str]] = {user: set() for user in later}
        for logged in before:
            if logged.event.user_id in seen:
                seen[logged.event.user_id].add(logged.event.item_id)
        users = sorted(u for u in later if later[u] - seen[u])
        return cls(
            users,
            [list(builder.histories.get(u, ())) for u in users],
            [seen[u] for u in users],
            [later[u] - seen[u] for u in users],
        )

    def evaluate(
        self, trained: TrainedModel, catalogue: Catalogue, known_users: int, known_items: int
    ) -> dict[str, float]:
        """Full ranking of the catalogue, the user's seen items left out."""
        if not self.users:
            return {}
        model, length = trained.model, trained.tower.history_len
        item_rows = torch.where(catalogue.rows < known_items, catalogue.rows, UNKNOWN_ROW)
        item_vectors = _item_vectors(model, item_rows, catalogue.content)
        user_rows = trained.users.rows(self.users)
        user_rows = np.where(user_rows < known_users, user_rows, UNKNOWN_ROW)
        histories = [left_padded(*_unzip(h), length) for h in self.histories]
        user_vectors = _user_vectors(model, user_rows, histories)
        column = {item_id: n for n, item_id in enumerate(catalogue.ids)}
        cold = {i for i in catalogue.ids if trained.items.row(i) >= known_items}
        scores = np.zeros((len(self.users), 6))
        cold_recall: list[float] = []
        for n, vector in enumerate(user_vectors):
            ranking = item_vectors @ vector
            ranking[[column[i] for i in self.seen[n] if i in column]] = -np.inf
            top = [catalogue.ids[c] for c in _top(ranking, 20)]
            scores[n] = _ranking_metrics(top, self.truth[n])
            if self.truth[n] & cold:
                cold_recall.append(recall_at_k(top, self.truth[n] & cold, 20))
        names = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "hr@20")
        metrics = dict(zip(names, (float(v) for v in scores.mean(axis=0)), strict=True))
        metrics["cold_recall@20"] = float(np.mean(cold_recall)) if cold_recall else 0.0
        metrics["users"] = float(len(self.users))
        return metrics


def _unzip(history: Sequence[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [row for row, _ in history], [weight for _, weight in history]


def _top(scores: npt.NDArray[np.float32], k: int) -> IntArray:
    k = min(k, scores.size)
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


def _ranking_metrics(ranked: Sequence[str], truth: set[str]) -> list[float]:
    return [
        recall_at_k(ranked, truth, 10),
        recall_at_k(ranked, truth, 20),
        ndcg_at_k(ranked, truth, 10),
        ndcg_at_k(ranked, truth, 20),
        hit_at_k(ranked, truth, 10),
        hit_at_k(ranked, truth, 20),
    ]


@torch.no_grad()
def _item_vectors(model: TwoTowerModel, rows: Tensor, content: Tensor) -> npt.NDArray[np.float32]:
    was_training = model.training
    model.eval()
    parts = [
        model.item_tower(rows[i : i + EMBED_BATCH].unsqueeze(1), content[i : i + EMBED_BATCH])
        for i in range(0, rows.numel(), EMBED_BATCH)
    ]
    model.train(was_training)
    if not parts:
        return np.zeros((0, model.config.dim), dtype=np.float32)
    return torch.cat(parts).numpy()


@torch.no_grad()
def _user_vectors(
    model: TwoTowerModel,
    user_rows: IntArray,
    histories: Sequence[tuple[IntArray, FloatArray]],
) -> npt.NDArray[np.float32]:
    was_training = model.training
    model.eval()
    parts = []
    for i in range(0, len(histories), EMBED_BATCH):
        chunk = histories[i : i + EMBED_BATCH]
        rows = torch.from_numpy(np.stack([rows for rows, _ in chunk]))
        weights = torch.from_numpy(np.stack([weights for _, weights in chunk]))
        users = torch.from_numpy(user_rows[i : i + EMBED_BATCH]).unsqueeze(1)
        parts.append(model.user_tower(users, rows, weights))
    model.train(was_training)
    if not parts:
        return np.zeros((0, model.config.dim), dtype=np.float32)
    return torch.cat(parts).numpy()


def embed_items(
    trained: TrainedModel, item_ids: Sequence[str], content: Mapping[str, np.ndarray]
) -> npt.NDArray[np.float32]:
    """[len(item_ids), dim] unit vectors; an item the model never trained on (or one without
    content, which then counts as zeros) is placed by what it has."""
    rows = torch.from_numpy(trained.items.rows(item_ids))
    matrix = np.zeros((len(item_ids), trained.tower.content_dim), dtype=np.float32)
    buffer = trained.model.item_content
    for n, item_id in enumerate(item_ids):
        vector = content.get(item_id)
        if vector is not None:
            matrix[n] = vector
        elif 0 < rows[n] < buffer.shape[0]:
            matrix[n] = buffer[rows[n]].numpy()
    return _item_vectors(trained.model, rows, torch.from_numpy(matrix))


def serving_info(trained: TrainedModel, version: int) -> ServingInfo:
    """What a gateway reads from the version's serving.json, for a model held here."""
    return ServingInfo(
        version=version,
        history_len=trained.tower.history_len,
        dimension=trained.tower.dim,
        users={user: row for row, user in enumerate(trained.users.ids, start=1)},
        items={item: row for row, item in enumerate(trained.items.ids, start=1)},
        trained_through_offset=trained.trained_through_offset,
        ranking=dict(trained.ranking),
    )


def embed_users(
    trained: TrainedModel, user_ids: Sequence[str], histories: Sequence[Sequence[HistoryEntry]]
) -> npt.NDArray[np.float32]:
    """[len(user_ids), dim] unit vectors; a history is (item id, interaction weight) pairs,
    oldest first. Items the model does not know are left out of it."""
    if len(user_ids) != len(histories):
        raise ValueError("one history per user")
    items, length = trained.items, trained.tower.history_len
    padded = []
    for history in histories:
        known = [(items.row(i), w) for i, w in history if i in items]
        padded.append(left_padded(*_unzip(known), length))
    return _user_vectors(trained.model, trained.users.rows(user_ids), padded)


def forget_users(trained: TrainedModel, user_ids: Iterable[str]) -> dict[str, int]:
    """Takes the users out of a trained model: their ids leave the vocabulary (the rows
    stay, unused, so other users keep theirs) and their rows are zeroed. Returns each
    forgotten user's former row; users the model did not know are left out."""
    rows = {user: trained.users.forget(user) for user in user_ids}
    rows = {user: row for user, row in rows.items() if row}
    trained.model.clear_user_rows(list(rows.values()))
    return rows


def write_atomically(path: Path, data: bytes) -> None:
    """The file holds the old bytes or the new ones, never a part: a rename replaces it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def save_trained(trained: TrainedModel, directory: Path) -> None:
    """Each file is replaced whole, so a version written again (without a forgotten user)
    is never left half old, half new."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "model": trained.model.state_dict(),
        "item_counts": torch.from_numpy(trained.item_counts),
    }
    weights = io.BytesIO()
    torch.save(state, weights)
    config = {
        "tower": asdict(trained.tower),
        "trained_through_offset": trained.trained_through_offset,
        "training_seconds": trained.training_seconds,
        "events_used": trained.events_used,
        "newest_event_appended_at": trained.newest_event_appended_at,
    }
    files = {
        WEIGHTS_FILE: weights.getvalue(),
        USERS_FILE: trained.users.to_json().encode("utf-8"),
        ITEMS_FILE: trained.items.to_json().encode("utf-8"),
        CONFIG_FILE: json.dumps(config, indent=2).encode("utf-8"),
        METRICS_FILE: json.dumps(trained.metrics, indent=2).encode("utf-8"),
    }
    for name, data in files.items():
        write_atomically(directory / name, data)


def load_vocabulary(directory: Path, name: str) -> Vocabulary:
    """USERS_FILE or ITEMS_FILE of a saved model, without loading the rest."""
    return Vocabulary.from_json((directory / name).read_text(encoding="utf-8"))


def load_trained(directory: Path) -> TrainedModel:
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    tower = TowerConfig(**config["tower"])
    users = load_vocabulary(directory, USERS_FILE)
    items = load_vocabulary(directory, ITEMS_FILE)
    state = torch.load(directory / WEIGHTS_FILE, weights_only=True)
    content = state["model"]["user_tower.item_content"]
    model = TwoTowerModel(len(users), len(items), torch.zeros_like(content), tower)
    model.load_state_dict(state["model"])
    model.eval()
    return TrainedModel(
        model,
        users,
        items,
        tower,
        json.loads((directory / METRICS_FILE).read_text(encoding="utf-8")),
        int(config["trained_through_offset"]),
        float(config["training_seconds"]),
        int(config["events_used"]),
        state["item_counts"].numpy().astype(np.int64),
        float(config.get("newest_event_appended_at", 0.0)),
    )
