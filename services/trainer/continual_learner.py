"""Continual learning, free of gRPC and Ray: the model learns the event log in micro-batches.

Every micro-batch is first scored (the model ranks each event's item before it learns it,
and so does the live version, on the same events), then learned: the fresh samples, mixed
with `replay_ratio` samples per fresh one drawn from a reservoir of everything learned so
far, so that the model keeps what older events taught it. New users and items get rows as
their ids appear. The learner's whole state, its accounting of which offsets it learned
included, is one checkpoint written atomically: a learner restored from it resumes at the
next offset and has learned every event exactly once.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from services.trainer.model_training import (
    Catalogue,
    SampleBuilder,
    Samples,
    TrainConfig,
    TrainedModel,
    catalogue_of,
    content_rows,
    embed_items,
    embed_users,
    empty_samples,
    forget_users,
    make_optimizer,
    update,
    write_atomically,
)
from services.trainer.two_tower import TowerConfig, TwoTowerModel, Vocabulary
from shared.events import LoggedEvent

IntArray = npt.NDArray[np.int64]
CHECKPOINT_FILE = "learner.pt"
RECENT_EVENTS = 10_000  # fresh samples kept with their scores, for comparing a full retrain


@dataclass(frozen=True)
class ContinualConfig:
    # lr and passes: the best of the settings `make eval-continual` compared on MovieLens
    # within a tenth of a full retrain's compute (docs/eval/continual.md).
    lr: float = 3e-3
    batch_size: int = 256
    replay_ratio: float = 1.0  # replayed samples per fresh one, in every step
    replay_capacity: int = 50_000  # samples the reservoir keeps, uniformly over the past
    passes: float = 1.0  # how often each fresh sample is learned, on average
    max_batch_events: int = 2_000  # events per micro-batch, at most
    k: int = 10  # the cut-off of the scores the gate compares
    # Events of a micro-batch scored for the gate, at most: a random sample of a larger one.
    # Scoring ranks the whole catalogue for each event, twice (candidate and live), and
    # cost as much as the learning itself on 2,000-event batches.
    gate_sample: int = 500

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 2 or self.passes <= 0:
            raise ValueError("lr and passes must be positive, batch_size at least 2")
        if self.replay_ratio < 0 or self.replay_capacity < 0 or self.max_batch_events < 1:
            raise ValueError("replay_ratio and replay_capacity must be >= 0")
        if self.gate_sample < 1:
            raise ValueError("gate_sample must be at least 1")


@dataclass
class Accounting:
    """Which offsets the model learned: a replay that skipped or repeated an event shows in
    the count or the sum."""

    last_offset: int = 0
    events_learned: int = 0
    offset_sum: int = 0
    newest_appended_at: float = 0.0

    def add(self, events: Sequence[LoggedEvent]) -> None:
        for logged in events:
            if logged.offset <= self.last_offset:
                raise ValueError(f"offset {logged.offset} was learned already")
            self.last_offset = logged.offset
            self.events_learned += 1
            self.offset_sum += logged.offset
            self.newest_appended_at = max(self.newest_appended_at, logged.appended_at)


@dataclass
class Scores:
    """Ranking figures of a model on events it had not learned: sums, so windows add up."""

    events: int = 0
    hits: float = 0.0
    ndcg: float = 0.0
    # Each event's NDCG, in scoring order: two models scored on the same events pair up.
    per_event: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def add(self, other: Scores) -> None:
        self.events += other.events
        self.hits += other.hits
        self.ndcg += other.ndcg
        self.per_event = np.concatenate([self.per_event, other.per_event])

    def metrics(self, k: int) -> dict[str, float]:
        n = max(self.events, 1)
        return {f"hr@{k}": self.hits / n, f"ndcg@{k}": self.ndcg / n, "events": self.events}


@dataclass
class GateWindow:
    """The candidate's and the live version's scores on the same events since the last
    publish; what the gate compares."""

    candidate: Scores = field(default_factory=Scores)
    live: Scores = field(default_factory=Scores)


class ReplayBuffer:
    """A reservoir sample of every sample added so far (each kept with equal chance)."""

    def __init__(self, capacity: int, history_len: int) -> None:
        self.capacity = capacity
        self.samples = empty_samples(history_len, 0)
        self.seen = 0

    def __len__(self) -> int:
        return len(self.samples)

    def add(self, fresh: Samples, rng: np.random.Generator) -> None:
        if self.capacity == 0 or not len(fresh):
            return
        room = max(0, self.capacity - len(self.samples))
        head = fresh.take(slice(0, room))
        if len(head):
            self.samples = Samples.concat([self.samples, head], fresh.history_rows.shape[1])
        seen = self.seen + len(head)
        for n in range(len(head), len(fresh)):
            seen += 1
            slot = int(rng.integers(0, seen))
            if slot < self.capacity:
                _put(self.samples, slot, fresh, n)
        self.seen = seen

    def drop_users(self, rows: set[int]) -> dict[int, int]:
        """Removes every sample of these user rows; returns how many each had."""
        users = self.samples.users
        gone = np.isin(users, list(rows))
        if not gone.any():
            return {}
        counts = np.bincount(users[gone])
        self.samples = self.samples.take(np.flatnonzero(~gone))
        return {row: int(counts[row]) for row in rows if row < counts.size and counts[row]}

    def draw(self, count: int, rng: np.random.Generator) -> Samples:
        if not len(self.samples) or count <= 0:
            return empty_samples(self.samples.history_rows.shape[1], 0)
        return self.samples.take(rng.integers(0, len(self.samples), count))


def _put(target: Samples, slot: int, source: Samples, n: int) -> None:
    target.users[slot] = source.users[n]
    target.history_rows[slot] = source.history_rows[n]
    target.history_weights[slot] = source.history_weights[n]
    target.targets[slot] = source.targets[n]
    target.offsets[slot] = source.offsets[n]
    target.sessions[slot] = source.sessions[n]


@dataclass(frozen=True)
class Forgotten:
    """What one user left in a learner: its id row, and its samples in the reservoir."""

    row: int
    replay_samples: int


@dataclass(frozen=True)
class LearnReport:
    events: int
    steps: int
    loss: float
    seconds: float
    candidate: Scores
    live: Scores


class ContinualLearner:
    """The current model and everything needed to go on learning it."""

    def __init__(
        self,
        trained: TrainedModel,
        builder: SampleBuilder,
        config: ContinualConfig,
        train_config: TrainConfig,
        content: Mapping[str, np.ndarray] | None = None,
        accounting: Accounting | None = None,
        buffer: ReplayBuffer | None = None,
        seed: int = 0,
    ) -> None:
        self.trained = trained
        self.builder = builder
        self.config = config
        self.train_config = replace(train_config, lr=config.lr, batch_size=config.batch_size)
        self.content: dict[str, np.ndarray] = dict(content or {})
        self.accounting = accounting or Accounting(last_offset=trained.trained_through_offset)
        if buffer is None:
            buffer = ReplayBuffer(config.replay_capacity, trained.tower.history_len)
        self.buffer = buffer
        self.rng = np.random.default_rng(seed)
        self.steps_done = 0
        self.optimizer = make_optimizer(trained.model, self.train_config)
        self.window = GateWindow()
        # The latest fresh samples with this model's score on each before it learned it:
        # what a full retrain that stopped short of them is compared on.
        self.recent: deque[tuple[Samples, Scores]] = deque()

    @classmethod
    def start(
        cls,
        trained: TrainedModel,
        events: Sequence[LoggedEvent],
        config: ContinualConfig,
        train_config: TrainConfig,
        content: Mapping[str, np.ndarray] | None = None,
    ) -> ContinualLearner:
        """A learner that goes on from `trained`, which learned exactly `events` (a full
        training): its users' histories and its replay reservoir are rebuilt from them."""
        users, items = Vocabulary(trained.users.ids), Vocabulary(trained.items.ids)
        builder = SampleBuilder(users, items, trained.tower.history_len)
        samples = builder.add(events)
        if len(users) != len(trained.users) or len(items) != len(trained.items):
            raise ValueError("the events hold ids the trained model does not know")
        accounting = Accounting()
        accounting.add(events)
        learner = cls(trained, builder, config, train_config, content, accounting)
        learner.trained.users, learner.trained.items = users, items
        learner.buffer.add(samples, learner.rng)
        return learner

    @property
    def offset(self) -> int:
        return self.accounting.last_offset

    def lacks_content(self) -> bool:
        """Whether an item the model has a row for has no content vector here."""
        return any(item_id not in self.content for item_id in self.builder.items.ids)

    def add_content(self, content: Mapping[str, np.ndarray]) -> None:
        """Content vectors of catalogue items (new or changed), for rows added later and for
        the uniform negatives."""
        self.content.update(content)

    def learn(self, events: Sequence[LoggedEvent], live: TrainedModel | None = None) -> LearnReport:
        """Scores the events (this model and `live`, before either learns them), then
        learns them. Events must continue the log exactly where the learner stands."""
        started = time.monotonic()
        events = [e for e in events if e.offset > self.offset]
        if not events:
            return LearnReport(0, 0, math.nan, 0.0, Scores(), Scores())
        # Torch's own generator (new rows, dropout) is seeded from the learner's, so that a
        # learner restored from a checkpoint repeats exactly what this one does.
        with torch.random.fork_rng():
            torch.manual_seed(int(self.rng.integers(0, 2**31)))
            return self._learn(events, live, started)

    def _learn(
        self, events: list[LoggedEvent], live: TrainedModel | None, started: float
    ) -> LearnReport:
        fresh = self.builder.add(events)
        self._grow()
        scored = fresh
        if len(fresh) > self.config.gate_sample:
            chosen = self.rng.choice(len(fresh), self.config.gate_sample, replace=False)
            scored = fresh.take(np.sort(chosen))
        candidate = self.score(scored, self.trained)
        live_scores = self.score(scored, live) if live else Scores()
        self.window.candidate.add(candidate)
        self._keep_recent(scored, candidate)
        self.window.live.add(live_scores)
        self.trained.item_counts = self.builder.item_counts
        replayed = self.buffer.draw(int(round(len(fresh) * self.config.replay_ratio)), self.rng)
        combined = Samples.concat([replayed, fresh], self.trained.tower.history_len)
        steps = max(1, math.ceil(len(combined) * self.config.passes / self.config.batch_size))
        config = replace(self.train_config, seed=int(self.rng.integers(0, 2**31)))
        loss = update(
            self.trained,
            combined,
            config,
            steps,
            self.optimizer,
            self._catalogue(),
            self.steps_done,
        )
        self.steps_done += steps
        self.buffer.add(fresh, self.rng)
        self.accounting.add(events)
        self.trained.trained_through_offset = self.accounting.last_offset
        self.trained.newest_event_appended_at = self.accounting.newest_appended_at
        self.trained.events_used = self.accounting.events_learned
        return LearnReport(
            len(events), steps, loss, time.monotonic() - started, candidate, live_scores
        )

    def _grow(self) -> None:
        """Rows for the ids the builder added; the optimizer keeps its state for old rows."""
        model = self.trained.model
        users, items = len(self.builder.users), len(self.builder.items)
        if users == model.n_users and items == model.n_items:
            return
        before = dict(model.named_parameters())
        content = content_rows(
            self.builder.items, self.content, model.config.content_dim, model.item_content
        )
        model.grow(users, items, content)
        self.optimizer = _regrown(self.optimizer, before, model, self.train_config)

    def _catalogue(self) -> Catalogue:
        return catalogue_of(self.builder.items, self.content, self.trained.tower.content_dim)

    def score(self, samples: Samples, model: TrainedModel | None) -> Scores:
        """How `model` ranks each sample's item among every item, before learning it."""
        if model is None or not len(samples):
            return Scores()
        item_ids = self.builder.items.ids
        catalogue = item_ids + [i for i in self.content if i not in self.builder.items]
        return score_samples(
            model,
            samples,
            self.builder.users.ids,
            item_ids,
            catalogue,
            self._content_of(catalogue),
            self.config.k,
        )

    def _content_of(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        buffer = self.trained.model.item_content
        out: dict[str, np.ndarray] = {}
        for item_id in item_ids:
            vector = self.content.get(item_id)
            if vector is None:
                row = self.builder.items.row(item_id)
                if 0 < row < buffer.shape[0]:
                    vector = buffer[row].numpy()
            if vector is not None:
                out[item_id] = vector
        return out

    def reset_window(self) -> None:
        self.window = GateWindow()

    def _keep_recent(self, fresh: Samples, scores: Scores) -> None:
        self.recent.append((fresh, scores))
        kept = sum(len(samples) for samples, _ in self.recent)
        while len(self.recent) > 1 and kept - len(self.recent[0][0]) >= RECENT_EVENTS:
            kept -= len(self.recent.popleft()[0])

    def compare_after(self, offset: int, model: TrainedModel) -> tuple[Scores, Scores]:
        """`model` (which learned the log up to `offset`) and this learner, scored on the
        events after `offset` that this learner scored before learning them."""
        challenger, incumbent = Scores(), Scores()
        item_ids = self.builder.items.ids
        catalogue = item_ids + [i for i in self.content if i not in self.builder.items]
        content = self._content_of(catalogue)
        users = self.builder.users.ids
        for samples, scores in self.recent:
            later = np.flatnonzero(samples.offsets > offset)
            if not later.size:
                continue
            chosen = samples.take(later)
            challenger.add(
                score_samples(model, chosen, users, item_ids, catalogue, content, self.config.k)
            )
            ndcg = scores.per_event[later]
            incumbent.add(Scores(later.size, float((ndcg > 0).sum()), float(ndcg.sum()), ndcg))
        return challenger, incumbent

    def snapshot(self) -> TrainedModel:
        """A copy of the current model to publish or serve as the live reference."""
        return copy_trained(self.trained)

    def forget(self, user_ids: Iterable[str]) -> dict[str, Forgotten]:
        """Drops users from everything the learner holds: their id rows (zeroed, with the
        optimizer's moments for them), histories, visits, and samples in the replay
        reservoir and in the recent samples kept for comparing a full retrain; later events
        of the same id start a new row. Returns what each user the learner knew left."""
        rows = forget_users(self.trained, user_ids)
        if not rows:
            return {}
        for user in rows:
            if self.builder.users is not self.trained.users:
                self.builder.users.forget(user)
            self.builder.histories.pop(user, None)
            self.builder._visits.pop(user, None)
        self._clear_optimizer_rows(list(rows.values()))
        dropped = self.buffer.drop_users(set(rows.values()))
        self.recent = deque(_without_users(part, set(rows.values())) for part in self.recent)
        return {user: Forgotten(row, dropped.get(row, 0)) for user, row in rows.items()}

    def _clear_optimizer_rows(self, rows: list[int]) -> None:
        table = self.trained.model.user_tower.user_embedding.weight
        state = self.optimizer.state.get(table, {})
        with torch.no_grad():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == table.shape:
                    value[rows] = 0.0

    # Checkpoints --------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Writes the whole state into `directory` atomically: it appears complete or not
        at all. A checkpoint written again (without a forgotten user) has its file replaced
        by one rename."""
        trained = self.trained
        state = {
            "model": trained.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "tower": asdict(trained.tower),
            "users": trained.users.ids,
            "items": trained.items.ids,
            "metrics": trained.metrics,
            "item_counts": self.builder.item_counts,
            "histories": {u: list(h) for u, h in self.builder.histories.items()},
            "visits": dict(self.builder._visits),
            "visit_gap_s": self.builder.visit_gap_s,
            "buffer": asdict_samples(self.buffer.samples),
            "buffer_seen": self.buffer.seen,
            "accounting": asdict(self.accounting),
            "rng": self.rng.bit_generator.state,
            "steps_done": self.steps_done,
            "training_seconds": trained.training_seconds,
        }
        raw = io.BytesIO()
        torch.save(state, raw)
        if directory.exists():
            write_atomically(directory / CHECKPOINT_FILE, raw.getvalue())
            return
        temporary = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        write_atomically(temporary / CHECKPOINT_FILE, raw.getvalue())
        os.replace(temporary, directory)

    @classmethod
    def load(
        cls,
        directory: Path,
        config: ContinualConfig,
        train_config: TrainConfig,
        content: Mapping[str, np.ndarray] | None = None,
    ) -> ContinualLearner:
        state = torch.load(directory / CHECKPOINT_FILE, weights_only=False)
        tower = TowerConfig(**state["tower"])
        users, items = Vocabulary(state["users"]), Vocabulary(state["items"])
        item_content = state["model"]["user_tower.item_content"]
        model = TwoTowerModel(len(users), len(items), torch.zeros_like(item_content), tower)
        model.load_state_dict(state["model"])
        model.eval()
        accounting = Accounting(**state["accounting"])
        counts = np.asarray(state["item_counts"], dtype=np.int64)
        trained = TrainedModel(
            model,
            users,
            items,
            tower,
            dict(state["metrics"]),
            accounting.last_offset,
            float(state["training_seconds"]),
            accounting.events_learned,
            counts,
            accounting.newest_appended_at,
        )
        builder = SampleBuilder(users, items, tower.history_len, counts, state["visit_gap_s"])
        builder.histories = {
            u: deque((tuple(e) for e in h), maxlen=tower.history_len)
            for u, h in state["histories"].items()
        }
        builder._visits = dict(state["visits"])
        buffer = ReplayBuffer(config.replay_capacity, tower.history_len)
        buffer.samples = Samples(**state["buffer"])
        buffer.seen = int(state["buffer_seen"])
        learner = cls(trained, builder, config, train_config, content, accounting, buffer)
        learner.rng.bit_generator.state = state["rng"]
        learner.optimizer.load_state_dict(state["optimizer"])
        learner.steps_done = int(state["steps_done"])
        return learner


def _without_users(part: tuple[Samples, Scores], rows: set[int]) -> tuple[Samples, Scores]:
    samples, scores = part
    keep = np.flatnonzero(~np.isin(samples.users, list(rows)))
    if keep.size == len(samples):
        return part
    ndcg = scores.per_event[keep]
    return samples.take(keep), Scores(keep.size, float((ndcg > 0).sum()), float(ndcg.sum()), ndcg)


def checkpoint_users(directory: Path) -> list[str]:
    """The user ids a checkpoint holds rows for; its tensors are mapped, not read."""
    state = torch.load(directory / CHECKPOINT_FILE, weights_only=False, mmap=True)
    return list(state["users"])


def forget_in_checkpoint(
    directory: Path, user_ids: Collection[str], config: ContinualConfig, train_config: TrainConfig
) -> set[str]:
    """Writes the checkpoint again without these users; returns those it held."""
    learner = ContinualLearner.load(directory, config, train_config)
    found = learner.forget(user_ids)
    if found:
        learner.save(directory)
    return set(found)


def copy_trained(trained: TrainedModel) -> TrainedModel:
    """An independent copy: later learning does not change it."""
    model = TwoTowerModel(
        trained.model.n_users, trained.model.n_items, trained.model.item_content, trained.tower
    )
    model.load_state_dict(trained.model.state_dict())
    model.eval()
    return replace(
        trained,
        model=model,
        users=Vocabulary(trained.users.ids),
        items=Vocabulary(trained.items.ids),
        metrics=dict(trained.metrics),
        item_counts=trained.item_counts.copy(),
        ranking=dict(trained.ranking),
    )


def score_samples(
    model: TrainedModel,
    samples: Samples,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    catalogue: Sequence[str],
    content: Mapping[str, np.ndarray],
    k: int,
) -> Scores:
    """How `model` ranks each sample's item among every catalogue item, the user's history
    left out: hits in the top k and NDCG. Samples hold rows of `user_ids`/`item_ids` (row r
    is id r - 1; `catalogue` starts with `item_ids`); ids are mapped through `model`'s own
    vocabularies, so any version can be scored on the same samples."""
    if not len(samples):
        return Scores()
    item_vectors = embed_items(model, catalogue, content)
    users = [user_ids[int(row) - 1] if row else "" for row in samples.users]
    histories = [
        [
            (item_ids[int(row) - 1], float(weight))
            for row, weight in zip(rows, weights, strict=True)
            if row
        ]
        for rows, weights in zip(samples.history_rows, samples.history_weights, strict=True)
    ]
    scores = embed_users(model, users, histories) @ item_vectors.T
    columns = np.arange(len(samples))
    targets = samples.targets - 1  # item row r sits in column r - 1
    target_scores = scores[columns, targets].copy()
    present = samples.history_rows > 0
    sample_of = np.broadcast_to(columns[:, None], present.shape)
    scores[sample_of[present], samples.history_rows[present] - 1] = -np.inf
    scores[columns, targets] = target_scores  # an item seen before may come again
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return Scores(len(samples), float(hits.sum()), float(ndcg.sum()), ndcg.astype(np.float64))


def asdict_samples(samples: Samples) -> dict[str, np.ndarray]:
    return {
        "users": samples.users,
        "history_rows": samples.history_rows,
        "history_weights": samples.history_weights,
        "targets": samples.targets,
        "offsets": samples.offsets,
        "sessions": samples.sessions,
    }


def _regrown(
    optimizer: torch.optim.Optimizer,
    before: Mapping[str, torch.nn.Parameter],
    model: TwoTowerModel,
    config: TrainConfig,
) -> torch.optim.Optimizer:
    """A new optimizer over the grown model that keeps every old row's moments (new rows
    start from zero), so growing does not reset what Adam learned about the step sizes."""
    fresh = make_optimizer(model, config)
    old_state = optimizer.state
    for name, parameter in model.named_parameters():
        old = before.get(name)
        if old is None or old not in old_state:
            continue
        state = old_state[old]
        if old.shape == parameter.shape:
            fresh.state[parameter] = state
            continue
        grown: dict[str, Any] = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == old.shape:
                padded = torch.zeros_like(parameter)
                padded[: old.shape[0]] = value
                grown[key] = padded
            else:
                grown[key] = value
        fresh.state[parameter] = grown
    return fresh
