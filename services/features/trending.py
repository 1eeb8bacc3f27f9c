"""Recent item popularity: each interaction adds its weight, which halves every
`half_life_s` of event time (not arrival time, so a replay ranks as live traffic did)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from shared.events import Event, interaction_weight

_GROWTH = 1.5


class Trending:
    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._score = np.zeros(0)  # as of _when, per item
        self._when = np.zeros(0)
        self.now = 0.0  # the latest event time seen
        self._lock = threading.Lock()
        self._changes = 0
        # The last answer of top(), by (changes, limit): Recommend asks for the same list
        # on every call, and events arrive far less often than calls.
        self._last_top: tuple[int, int, list[tuple[str, float]]] | None = None

    def add(self, events: Iterable[Event], sign: float = 1.0) -> None:
        with self._lock:
            for event in events:
                row = self._row(event.item_id)
                weight = sign * interaction_weight(event.type, event.value)
                self._add(row, weight, event.timestamp)
                self.now = max(self.now, event.timestamp)
            self._changes += 1

    def remove(self, events: Iterable[Event]) -> None:
        """Takes back what `add` gave, exactly: the decay is linear in each weight."""
        self.add(events, sign=-1.0)

    def _add(self, row: int, weight: float, when: float) -> None:
        last = self._when[row]
        if when >= last:
            self._score[row] = self._score[row] * self._decay(when - last) + weight
            self._when[row] = when
        else:
            self._score[row] += weight * self._decay(last - when)

    def _decay(self, seconds: float | np.ndarray) -> float | np.ndarray:
        return np.exp2(-np.asarray(seconds) / self.half_life_s)

    def _row(self, item_id: str) -> int:
        row = self._rows.get(item_id)
        if row is None:
            row = self._rows[item_id] = len(self._ids)
            self._ids.append(item_id)
            if row >= len(self._score):
                size = max(1024, int(len(self._score) * _GROWTH))
                self._score = np.resize(self._score, size)
                self._when = np.resize(self._when, size)
            self._score[row] = 0.0
            self._when[row] = 0.0
        return row

    def top(self, limit: int) -> list[tuple[str, float]]:
        """The `limit` most popular items now, best first (only items with a score); the
        list is shared between callers until the next change, so it must not be altered."""
        with self._lock:
            last = self._last_top
            if last is not None and last[:2] == (self._changes, limit):
                return last[2]
            count = len(self._ids)
            current = self._score[:count] * self._decay(self.now - self._when[:count])
            if limit < count:
                best = np.argpartition(-current, limit)[:limit]
                order = best[np.argsort(-current[best], kind="stable")]
            else:
                order = np.argsort(-current, kind="stable")
            ranked = [(self._ids[i], float(current[i])) for i in order if current[i] > 1e-12]
            self._last_top = (self._changes, limit, ranked)
            return ranked
