"""Recent item popularity: each interaction adds its weight, which halves every
`half_life_s` of event time (not arrival time, so a replay ranks as live traffic did).

Decay is the same for every item, so the order of items never depends on the time it is
measured at. Each item keeps its popularity as a log2 at a fixed reference time (time
zero), which no span of event time can underflow, and `top` reports popularity relative
to the most popular item (1.0). An earlier version decayed every item to the newest
event time it had seen: once that event was forgotten, the clock stayed ahead, every
other item decayed to nothing, and a new user was recommended no items at all.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

import numpy as np

from shared.events import Event, interaction_weight

_GROWTH = 1.5
_NONE = -math.inf  # log2 of no popularity


class Trending:
    """Popularity at several half-lives at once (`half_lives_s`): the ranking asks for the
    one it was tuned to (services/trainer/ranking_tuner.py), `half_life_s` when it names
    none."""

    def __init__(self, half_life_s: float, half_lives_s: Sequence[float] = ()) -> None:
        if half_life_s <= 0 or any(h <= 0 for h in half_lives_s):
            raise ValueError("half-lives must be positive")
        self.half_life_s = half_life_s
        self.half_lives_s = tuple(sorted({half_life_s, *half_lives_s}))
        self._default = self.half_lives_s.index(half_life_s)
        self._inverse = 1.0 / np.asarray(self.half_lives_s)
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        # log2 of the popularity at time zero, per item and half-life
        self._log2 = np.full((0, len(self.half_lives_s)), _NONE)
        self._events = np.zeros(0, dtype=np.int64)  # interactions it holds, per item
        self._lock = threading.Lock()
        self._changes = 0
        # The last answers of top(), by (limit, half-life) while `changes` is the same:
        # Recommend asks for the same list on every call, and events arrive far less often.
        self._last_top: tuple[int, dict[tuple[int, int], list[tuple[str, float]]]] = (0, {})

    @property
    def changes(self) -> int:
        """Grows with every add and remove: the same count means the same popularity."""
        return self._changes

    def kept(self, half_life_s: float) -> float:
        """The half-life kept that `top` ranks by when asked for `half_life_s`: the nearest
        on a log scale; 0 names the default."""
        return self.half_lives_s[self._column(half_life_s)]

    def _column(self, half_life_s: float) -> int:
        if half_life_s < 0 or not math.isfinite(half_life_s):
            raise ValueError("a half-life must be positive, or 0 for the default")
        if half_life_s == 0:
            return self._default
        distances = [abs(math.log(h / half_life_s)) for h in self.half_lives_s]
        return distances.index(min(distances))

    def add(self, events: Iterable[Event]) -> None:
        with self._lock:
            batch = list(events)
            if batch:
                rows = np.fromiter((self._row(e.item_id) for e in batch), np.int64, len(batch))
                np.logaddexp2.at(self._log2, rows, self._terms(batch))
                np.add.at(self._events, rows, 1)
            self._changes += 1

    def remove(self, events: Iterable[Event]) -> None:
        """Takes back what `add` gave: an item left with no interaction has no popularity
        at all (not the rounding dust of a subtraction)."""
        with self._lock:
            for event in events:
                row = self._rows.get(event.item_id)
                if row is None or self._events[row] == 0:
                    continue
                self._events[row] -= 1
                terms = self._terms([event])[0]
                for column, term in enumerate(terms):
                    total = float(self._log2[row, column])
                    self._log2[row, column] = self._without(total, float(term), row)
            self._changes += 1

    def _terms(self, events: Sequence[Event]) -> np.ndarray:
        """log2 of each event's weight at time zero, per half-life."""
        log2_weights = np.fromiter(
            (math.log2(interaction_weight(e.type, e.value)) for e in events),
            np.float64,
            len(events),
        )
        timestamps = np.fromiter((e.timestamp for e in events), np.float64, len(events))
        return log2_weights[:, None] + timestamps[:, None] * self._inverse[None, :]

    def _without(self, total: float, term: float, row: int) -> float:
        if self._events[row] == 0:
            return _NONE
        left = 1.0 - 2.0 ** min(term - total, 0.0)
        # What remains is below float precision of the total: too little to rank by.
        return total + math.log2(left) if left > 1e-12 else _NONE

    def _row(self, item_id: str) -> int:
        row = self._rows.get(item_id)
        if row is None:
            row = self._rows[item_id] = len(self._ids)
            self._ids.append(item_id)
            if row >= len(self._log2):
                size = max(1024, int(len(self._log2) * _GROWTH))
                grown = np.full((size, len(self.half_lives_s)), _NONE)
                grown[: len(self._log2)] = self._log2
                self._log2 = grown
                self._events = np.resize(self._events, size)
            self._log2[row] = _NONE
            self._events[row] = 0
        return row

    def top(self, limit: int, half_life_s: float = 0.0) -> list[tuple[str, float]]:
        """The `limit` most popular items at the kept half-life nearest `half_life_s` (0:
        the default), best first, each with its popularity relative to the first (only
        items with any); the list is shared between callers until the next change, so it
        must not be altered."""
        column = self._column(half_life_s)
        with self._lock:
            changes, answers = self._last_top
            if changes != self._changes:
                answers = {}
                self._last_top = (self._changes, answers)
            held = answers.get((limit, column))
            if held is not None:
                return held
            current = self._log2[: len(self._ids), column]
            if limit < current.size:
                best = np.argpartition(-current, limit)[:limit]
                order = best[np.argsort(-current[best], kind="stable")]
            else:
                order = np.argsort(-current, kind="stable")
            order = order[np.isfinite(current[order])]
            peak = current[order[0]] if order.size else 0.0
            ranked = [(self._ids[i], float(np.exp2(current[i] - peak))) for i in order]
            answers[(limit, column)] = ranked
            return ranked
