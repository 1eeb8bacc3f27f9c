"""The ranking's tuned settings (the gateway's TUNED_SETTINGS), chosen from the events.

The gateway's policy adds terms to the model's scores (trending popularity, the content
profile's similarity, co-occurrence), keeps places for items the model has not learned and
weighs a user's past by a half-life. No one value of these fits every data set, so the
trainer chooses them from its own log as it learns. Before it follows a batch of events,
it ranks, for a sample of them, exactly as `Recommend` would have ranked for the event's
user just before the event: the gateway's own `Recommender`, over features' and
retrieval's domain code in this process (fed the same log), with the live model version,
which has not learned these events. It ranks once with the settings chosen now and once
with each neighbour (one setting one step along its ladder), and scores each list by the
NDCG@10 of what the user went on to take: the event's item and the user's next ones in the
batch, up to `horizon` (what a user does next is rarely one item, and what fits a session
of them is what a block-by-block evaluation rewards too). A user's first event has no past:
every setting ranks it alike but the popularity's half-life, so it is ranked for that one
alone, with every value features keeps, every time (new users are few among the events,
and popularity is all they get), the history's too: the first events a bootstrap learned
are ranked without the model, and looked at once ranked, so that the half-life fits the
data before any new event comes. After each batch, once enough events are scored, it
moves each setting to its candidate that beat the choice by the most, if its paired
advantage is positive with confidence (confident_steps: early on only a step far ahead
is), and starts a new window: a
coordinate search, one step per window, that goes on following the data as it changes.
The trainer publishes each new version with the choice of the moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import shutil
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.features import Behaviour, CoOccurrence, SqliteEventLog, Trending
from services.gateway import (
    TUNED_SETTINGS,
    RankingSettings,
    Recommender,
    RecommendQuery,
    UserVectorCache,
)
from services.retrieval import IndexRegistry, IndexSettings, Record, VectorStore
from services.trainer.in_process_sources import InProcessSources
from services.trainer.model_training import TrainedModel, embed_items, serving_info
from shared.events import Event, LoggedEvent
from shared.items import CONTENT_INDEX
from shared.model_store import ServingInfo, index_categories, model_name

log = logging.getLogger(__name__)

DAY_S = 86_400.0
WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # terms on the scale of a cosine
# The values each tuned setting may take, in order: a step is to the next one either way.
# The popularity's half-life takes those features keeps (Signals.trending_half_lives_s).
LADDERS: dict[str, tuple[float, ...]] = {
    "model_popularity_weight": WEIGHTS,
    "model_content_weight": WEIGHTS,
    "model_co_occurrence_weight": WEIGHTS,
    "new_item_share": (0.0, 0.1, 0.2, 0.3),
    "profile_half_life_s": (DAY_S, 3 * DAY_S, 7 * DAY_S, 30 * DAY_S, 90 * DAY_S, 365 * DAY_S),
}
TRENDING = "trending_half_life_s"
assert set(LADDERS) | {TRENDING} == set(TUNED_SETTINGS), "every tuned setting needs a ladder"
# Settings whose every value is a candidate, not only the neighbours, on the events of
# users with no past: what they get is a trending list, cheap to rank four ways, and the
# popularity's half-life is the one setting that changes it, so the search may jump there.
WHOLE_LADDER = frozenset({TRENDING})
UPSERT_BATCH = 1_000


@dataclass(frozen=True)
class TunerConfig:
    enabled: bool = True
    # Events of each batch followed that are ranked, at most: each costs a Recommend per
    # candidate (about 10 ms for all), against about 1 ms per event for the learning.
    sample: int = 100
    window: int = 300  # ranked events behind a decision, at most
    # An early look after each of this many ranked events (confident_steps): a step far
    # ahead of the choice is taken there, so that a setting gone badly wrong does not stay
    # so for a whole window; at fixed points, since looking after every batch of a replay
    # one event a batch stepped on noise. The window itself by default (no early look): at
    # 100, MovieLens' prequential HR@10 fell by a twentieth, and its blocks protocol's gain
    # was within the run-to-run noise (docs/ranking.md).
    min_window: int = 300
    confidence_z: float = 1.0  # how sure (one-sided, in standard errors) a step must be
    k: int = 10
    horizon: int = 10  # the event's item and the user's next ones in its batch, at most


@dataclass(frozen=True)
class Signals:
    """How the features service keeps popularity and co-occurrence (FeaturesConfig): the
    replay keeps them the same way, or the settings tuned would not be the ones served."""

    trending_half_life_s: float
    co_occurrence_window: int
    co_occurrence_neighbours: int
    trending_half_lives_s: tuple[float, ...] = ()

    def trending(self) -> Trending:
        return Trending(self.trending_half_life_s, self.trending_half_lives_s)

    def ladders(self) -> dict[str, tuple[float, ...]]:
        return {**LADDERS, TRENDING: self.trending().half_lives_s}


@dataclass(frozen=True)
class Step:
    setting: str
    value: float
    neighbour: bool = True  # one step along the ladder (else ranked for newcomers alone)


def steps_from(settings: RankingSettings, ladders: Mapping[str, Sequence[float]]) -> list[Step]:
    """The neighbours of `settings`: each setting not pinned, one step down and one up
    (and every other value of those in WHOLE_LADDER, not neighbours)."""
    steps = []
    for name, ladder in ladders.items():
        if name in settings.pinned:
            continue
        current = getattr(settings, name)
        below = [v for v in ladder if v < current]
        above = [v for v in ladder if v > current]
        near = below[-1:] + above[:1]
        steps += [Step(name, v) for v in near]
        if name in WHOLE_LADDER:
            steps += [
                Step(name, v, neighbour=False) for v in ladder if v != current and v not in near
            ]
    return steps


def confident_steps(
    table: np.ndarray, steps: Sequence[Step], config: TunerConfig
) -> dict[str, tuple[float, int]]:
    """For each setting, its step (a column of `table`, 1 onwards) whose paired advantage
    over the choice (column 0) is surest to be positive, as (bound, column); none where no
    step's bound is. A row is one ranked event, its NDCG@k under each candidate (NaN: not
    ranked, events it cannot change). The bound is the advantage less a margin of doubt
    that is the same on the advantage summed over the events so far, whatever their
    number: at the full window `confidence_z` standard errors of the mean, earlier wider by
    sqrt(window / events), as a group-sequential test widens its early looks, so that
    looking after every batch takes steps on noise not much more often than looking once
    at the window's end, while a step far ahead is taken at once."""
    choice = table[:, 0]
    early = math.sqrt(max(config.window / table.shape[0], 1.0))
    best: dict[str, tuple[float, int]] = {}
    for column, step in enumerate(steps, start=1):
        paired = table[:, column] - choice
        paired = paired[~np.isnan(paired)]
        if paired.size < 2:
            continue
        spread = float(paired.std(ddof=1)) / math.sqrt(paired.size)
        bound = float(paired.mean()) - config.confidence_z * early * spread
        if bound > best.get(step.setting, (0.0, 0))[0]:
            best[step.setting] = (bound, column)
    return best


def tuned_values(settings: RankingSettings) -> dict[str, float]:
    return {name: float(getattr(settings, name)) for name in TUNED_SETTINGS}


class RankingTuner:
    """Follows the log in order (`observe`), ranking a sample as it goes; `chosen` is the
    choice of the moment. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        settings: RankingSettings,
        config: TunerConfig,
        signals: Signals,
        directory: Path,
        seed: int = 0,
    ) -> None:
        """`settings`: where the search starts (the configuration, with the live version's
        published values over it); `directory`: the replay's scratch, emptied first (it is
        rebuilt from the log on every start)."""
        self.config = config
        self._ladders = signals.ladders()
        if not settings.trending_half_life_s:  # features' default, named
            settings = dataclasses.replace(
                settings, trending_half_life_s=signals.trending_half_life_s
            )
        self.chosen = settings
        self.changes = 0
        self.last_change = ""
        self.last_window: dict[str, float] = {}  # NDCG@k of the choice and its best step
        self.offset = 0  # the last log offset followed
        # How the settings chosen at each moment did on the events ranked (prequentially).
        self.choice_events = 0
        self.choice_hits = 0
        self._rng = random.Random(seed)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self._catalogue: dict[str, tuple[str, ...]] = {}
        self._log = SqliteEventLog(directory / "events.sqlite3")
        self.behaviour = Behaviour(
            self._log,
            signals.trending(),
            self._catalogue,
            co_occurrence=CoOccurrence(
                signals.co_occurrence_window, signals.co_occurrence_neighbours
            ),
        )
        self._vectors = VectorStore(directory / "vectors.sqlite3")
        self._registry = IndexRegistry(self._vectors, directory / "snapshots", IndexSettings())
        self._sources = InProcessSources(self.behaviour, self._registry, {}, None)
        # One user-tower call per ranked event: every candidate gives the tower the same inputs.
        self._user_vectors = UserVectorCache(1_000)
        self._loop = asyncio.new_event_loop()
        self._content: Mapping[str, np.ndarray] = {}
        self._content_indexed: frozenset[str] = frozenset()
        self._model: ServingInfo | None = None
        self._model_source: TrainedModel | None = None
        self._window: list[np.ndarray] = []
        self._looked = 0  # ranked events in the window at its last early look
        self._restart_search()

    # What the trainer tells it -----------------------------------------------------------

    def use_content(self, content: Mapping[str, np.ndarray]) -> None:
        """The catalogue's content vectors (the text index the content profile searches)."""
        self._content = content
        for item_id in content:
            self._catalogue.setdefault(item_id, ())

    def adopt(self, published: Mapping[str, float]) -> None:
        """Starts again from a version's published values (a rollback made it live)."""
        self.chosen = self.chosen.with_published(published)
        self._restart_search()

    def observe(
        self, events: Sequence[LoggedEvent], live: TrainedModel | None, live_version: int
    ) -> None:
        """Follows `events` (the log's next, in order), ranking a sample of those the live
        model has not learned before following each."""
        events = [e for e in events if e.offset > self.offset]  # a rollback relearns some
        if not events:
            return
        if live is not None and live is not self._model_source:
            self._serve(live, live_version)
        scored: set[int] = set()
        learned = self._model.trained_through_offset if self._model is not None else 0
        if self._model is not None:
            unseen = [n for n, e in enumerate(events) if e.offset > learned]
            scored = set(self._rng.sample(unseen, min(self.config.sample, len(unseen))))
        # A user's first event is ranked by popularity alone, so it is ranked even where the
        # model learned it (ranked then without the model, which learned the user from it)
        # or there is none: the history a bootstrap learned, all a suite has when it
        # starts, fits the popularity's half-life before the first new event comes.
        scored |= self._firsts(events)
        upcoming = _upcoming(events, scored, self.config.horizon)
        pending: list[Event] = []
        history_ranked = False
        for n, logged in enumerate(events):
            if n in scored:
                self._follow(pending)
                pending = []
                known = logged.offset <= learned or self._model is None
                history_ranked |= known
                self._rank(logged.event, upcoming[n], None if known else self._model)
            pending.append(logged.event)
        self._follow(pending)
        self.offset = events[-1].offset
        ranked = len(self._window)
        if ranked >= self.config.window:
            self._decide(final=True)
        elif (
            ranked // self.config.min_window > self._looked // self.config.min_window
            # A look at the end of a history: it may be all the newcomers for a long while.
            or (history_ranked and ranked > self._looked)
        ):
            self._looked = ranked
            self._decide(final=False)

    def forget(self, user_ids: Collection[str]) -> None:
        for user_id in user_ids:
            self.behaviour.forget(user_id)
            self._user_vectors.forget(user_id)

    def status(self) -> dict[str, object]:
        return {
            "weights": tuned_values(self.chosen),
            "changes": self.changes,
            "last_change": self.last_change,
            "ranked": self.choice_events,
            "hit_rate": self.choice_hits / self.choice_events if self.choice_events else 0.0,
            "ranked_in_window": len(self._window),
            "last_window": dict(self.last_window),
        }

    def close(self) -> None:
        self._loop.close()
        self._log.close()
        self._vectors.close()

    # The search ---------------------------------------------------------------------------

    def _restart_search(self) -> None:
        self._steps = steps_from(self.chosen, self._ladders)
        settings = [self.chosen] + [
            self.chosen.with_published({s.setting: s.value}) for s in self._steps
        ]
        self._recommenders = [Recommender(s, self._sources, self._user_vectors) for s in settings]
        # What ranks a user with no past: the choice, and every value of the popularity's
        # half-life (none where newcomers have a half-life of their own, configured); the
        # neighbours rank users with a past.
        follows = not self.chosen.newcomer_half_life_s
        self._for_newcomers = [0] + [
            n for n, step in enumerate(self._steps, start=1) if step.setting == TRENDING and follows
        ]
        self._for_returning = [0] + [
            n for n, step in enumerate(self._steps, start=1) if step.neighbour
        ]
        self._window = []
        self._looked = 0

    def _firsts(self, events: Sequence[LoggedEvent]) -> set[int]:
        """The events of users with none before them."""
        first: dict[str, int] = {}
        for n, logged in enumerate(events):
            first.setdefault(logged.event.user_id, n)
        return {n for user, n in first.items() if not self._log.first_offset(user)}

    def _rank(self, event: Event, upcoming: Sequence[str], model: ServingInfo | None) -> None:
        """`model`: None only for a user's first event (observe)."""
        limit = max(self.chosen.recent_history, model.history_len if model else 0)
        history = self.behaviour.history(event.user_id, limit, True)
        seen = set(history.seen)
        # An item seen before is ranked by none.
        if event.item_id in seen:
            return
        truth = {event.item_id} | {i for i in upcoming if i not in seen}
        columns = self._for_returning if history.recent else self._for_newcomers
        query = RecommendQuery(event.user_id, self.config.k)
        gains = np.full(len(self._recommenders), np.nan)
        for n in columns:
            recommender = self._recommenders[n]
            answer = self._loop.run_until_complete(recommender.recommend(query, model))
            ranked = [item.item_id for item in answer.items]
            gains[n] = _ndcg(ranked, truth, self.config.k)
            if n == 0:
                self.choice_events += 1
                self.choice_hits += int(event.item_id in ranked)
        self._window.append(gains)

    def _decide(self, final: bool) -> None:
        """Each setting takes its better step where that step beat the choice with
        confidence; the others stay. Then a new window, around the new choice. Before the
        window is full (not `final`), nothing happens unless some step is confidently
        better already."""
        table = np.stack(self._window)
        events = table.shape[0]
        choice = table[:, 0]
        best = confident_steps(table, self._steps, self.config)
        if not final and not best:
            return  # the window goes on
        key = f"ndcg@{self.config.k}"
        self.last_window = {key: float(choice.mean()), "events": float(events)}
        moves = []
        for _, column in best.values():
            step = self._steps[column - 1]
            moves.append(
                f"{step.setting} {getattr(self.chosen, step.setting):g} -> {step.value:g} "
                f"({key} {np.nanmean(table[:, column]):.4f} alone)"
            )
        if moves:
            self.chosen = self.chosen.with_published(
                {self._steps[c - 1].setting: self._steps[c - 1].value for _, c in best.values()}
            )
            self.changes += 1
            self.last_change = (
                f"{'; '.join(moves)}: from {key} {choice.mean():.4f} on {events} events"
            )
            log.info(
                "ranking settings changed",
                extra={"change": self.last_change, "settings": tuned_values(self.chosen)},
            )
        self._restart_search()

    # The replay of what features and retrieval hold ---------------------------------------

    def _follow(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for event in events:
            self._catalogue.setdefault(event.item_id, ())
        # Its own offsets: where a forget left gaps in the real log, they can run behind it.
        self.behaviour.append([events])

    def _serve(self, trained: TrainedModel, version: int) -> None:
        """The live version as retrieval holds it: the catalogue's vectors in its own index,
        those it has not learned marked so; and the text index, when the content changed."""
        content = self._content
        if frozenset(content) != self._content_indexed:
            self._upsert(CONTENT_INDEX, [Record(i, v.tolist(), ()) for i, v in content.items()])
            self._content_indexed = frozenset(content)
        previous = self._model
        items = sorted(self._catalogue)
        vectors = embed_items(trained, items, content)
        rows = trained.items.rows(items)
        name = model_name(version)
        self._upsert(
            name,
            [
                Record(i, vectors[n].tolist(), index_categories((), int(rows[n])))
                for n, i in enumerate(items)
            ],
        )
        self._sources.user_tower = trained.model.user_tower
        # Ranked with the candidates' own settings, not those it was published with.
        self._model = dataclasses.replace(serving_info(trained, version), ranking={})
        self._model_source = trained
        if previous is not None and previous.name != name:
            self._loop.run_until_complete(self._registry.drop(previous.name))

    def _upsert(self, index: str, records: list[Record]) -> None:
        for start in range(0, len(records), UPSERT_BATCH):
            self._loop.run_until_complete(
                self._registry.upsert(index, records[start : start + UPSERT_BATCH])
            )


def _upcoming(
    events: Sequence[LoggedEvent], at: Collection[int], horizon: int
) -> dict[int, list[str]]:
    """For each index in `at`, the items its user takes next in `events`, up to
    `horizon` - 1 of them."""
    places: dict[str, list[int]] = defaultdict(list)
    for n, logged in enumerate(events):
        places[logged.event.user_id].append(n)
    found: dict[int, list[str]] = {}
    for n in at:
        mine = places[events[n].event.user_id]
        after = mine[mine.index(n) + 1 :][: max(horizon - 1, 0)]
        found[n] = [events[m].event.item_id for m in after]
    return found


def _ndcg(ranked: Sequence[str], truth: Collection[str], k: int) -> float:
    gain = sum(1.0 / math.log2(n + 2) for n, item in enumerate(ranked[:k]) if item in truth)
    ideal = sum(1.0 / math.log2(n + 2) for n in range(min(len(truth), k)))
    return gain / ideal if ideal else 0.0
