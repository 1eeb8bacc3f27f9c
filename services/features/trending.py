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
from collections.abc import Iterable

import numpy as np

from shared.events import Event, interaction_weight

_GROWTH = 1.5
_NONE = -math.inf  # log2 of no popularity


def _log2_sum(a: float, b: float) -> float:
    """log2(2**a + 2**b) without overflow."""
    high, low = (a, b) if a >= b else (b, a)
    if low == _NONE:
        return high
    return high + math.log2(1.0 + 2.0 ** (low - high))


class Trending:
    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._log2 = np.full(0, _NONE)  # log2 of the popularity at time zero, per item
        self._events = np.zeros(0, dtype=np.int64)  # interactions it holds, per item
        self._lock = threading.Lock()
        self._changes = 0
        # The last answer of top(), by (changes, limit): Recommend asks for the same list
        # on every call, and events arrive far less often than calls.
        self._last_top: tuple[int, int, list[tuple[str, float]]] | None = None

    @property
    def changes(self) -> int:
        """Grows with every add and remove: the same count means the same popularity."""
        return self._changes

    def add(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                row = self._row(event.item_id)
                term = self._term(event)
                self._log2[row] = _log2_sum(float(self._log2[row]), term)
                self._events[row] += 1
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
                self._log2[row] = self._without(float(self._log2[row]), self._term(event), row)
            self._changes += 1

    def _term(self, event: Event) -> float:
        weight = interaction_weight(event.type, event.value)
        return math.log2(weight) + event.timestamp / self.half_life_s

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
                grown = np.full(size, _NONE)
                grown[: len(self._log2)] = self._log2
                self._log2 = grown
                self._events = np.resize(self._events, size)
            self._log2[row] = _NONE
            self._events[row] = 0
        return row

    def top(self, limit: int) -> list[tuple[str, float]]:
        """The `limit` most popular items, best first, each with its popularity relative to
        the first (only items with any); the list is shared between callers until the next
        change, so it must not be altered."""
        with self._lock:
            last = self._last_top
            if last is not None and last[:2] == (self._changes, limit):
                return last[2]
            current = self._log2[: len(self._ids)]
            if limit < current.size:
                best = np.argpartition(-current, limit)[:limit]
                order = best[np.argsort(-current[best], kind="stable")]
            else:
                order = np.argsort(-current, kind="stable")
            order = order[np.isfinite(current[order])]
            peak = current[order[0]] if order.size else 0.0
            ranked = [(self._ids[i], float(np.exp2(current[i] - peak))) for i in order]
            self._last_top = (self._changes, limit, ranked)
            return ranked
