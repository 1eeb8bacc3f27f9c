"""Which items users act on together, learned from each event as it is logged.

When a user acts on an item that is not among their last `window` distinct items, the
item and each of those items count one user more in common. Two items' similarity is
item-kNN's cosine on the binary user x item matrix: the users in common over the square
root of the product of each item's users. Each item keeps only its `neighbours` strongest
pairs (the weakest go when it holds twice as many), so memory is bounded per item.

Everything an event adds follows from the user's own earlier events, so replaying one
user's events takes back exactly what they gave (`remove`, for ForgetUser), and replaying
the log rebuilds the same state after a restart.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.events import Event

WINDOW = 50
NEIGHBOURS = 100
_DUST = 1e-9  # what a subtraction leaves of a count that is gone


@dataclass(frozen=True)
class Related:
    item_id: str
    score: float  # the profile's weighted similarity to the item
    because: str  # the profile item that contributed most


class CoOccurrence:
    def __init__(self, window: int = WINDOW, neighbours: int = NEIGHBOURS) -> None:
        self.window = window
        self.neighbours = neighbours
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._users = np.zeros(0)  # per row: users who acted on the item
        self._pairs: list[dict[int, float]] = []  # per row: neighbour row -> users in common
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # rows, counts; per row
        self._recent: dict[str, deque[int]] = {}  # per user: last distinct item rows
        self._lock = threading.Lock()
        self._changes = 0

    @property
    def changes(self) -> int:
        """Grows with every add and remove: the same count means the same answers."""
        return self._changes

    def add(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                recent = self._recent.setdefault(event.user_id, deque(maxlen=self.window))
                self._count(recent, self._row(event.item_id), 1.0)
            self._changes += 1

    def remove(self, user_events: Sequence[Event]) -> None:
        """Takes back what one user's events gave, replayed in the order they were logged;
        the user starts afresh."""
        with self._lock:
            recent: deque[int] = deque(maxlen=self.window)
            for event in user_events:
                row = self._rows.get(event.item_id)
                if row is not None:
                    self._count(recent, row, -1.0)
            if user_events:
                self._recent.pop(user_events[0].user_id, None)
            self._changes += 1

    def related(
        self,
        profile: Sequence[tuple[str, float]],
        k: int,
        admits: Callable[[str], bool],
    ) -> list[Related]:
        """The k items most similar to the weighted profile that `admits` lets through,
        best first; the profile's own items are never among them."""
        with self._lock:
            parts = [
                (self._rows[item], weight)
                for item, weight in profile
                if item in self._rows and weight > 0
            ]
            held = [self._neighbours_of(row) for row, _ in parts]
            sizes = np.array([rows.size for rows, _ in held])
            if not sizes.any():
                return []
            profile_rows = np.array([row for row, _ in parts])
            scale = np.array([w for _, w in parts]) / np.sqrt(
                np.maximum(self._users[profile_rows], 1.0)
            )
            rows = np.concatenate([rows for rows, _ in held])
            sources = np.repeat(np.arange(len(parts)), sizes)
            counts = np.concatenate([counts for _, counts in held])
            contributions = counts * scale[sources] / np.sqrt(np.maximum(self._users[rows], 1.0))
            chosen = self._top(rows, contributions, {row for row, _ in parts}, k, admits)
            strongest = _strongest_sources(rows, sources, contributions, chosen)
            return [
                Related(self._ids[row], score, self._ids[parts[source][0]])
                for (row, score), source in zip(chosen, strongest, strict=True)
            ]

    def _top(
        self,
        rows: np.ndarray,
        contributions: np.ndarray,
        own: set[int],
        k: int,
        admits: Callable[[str], bool],
    ) -> list[tuple[int, float]]:
        """(row, score) of the best k candidates, best first."""
        if len(self._ids) <= 20 * rows.size:  # a dense sum is cheaper than sorting rows
            totals = np.bincount(rows, weights=contributions, minlength=len(self._ids))
            candidates = np.flatnonzero(totals > 0)
            scores = totals[candidates]
        else:
            candidates, group = np.unique(rows, return_inverse=True)
            scores = np.bincount(group, weights=contributions)
        wanted = 2 * k + len(own)  # room for the ones skipped; all of them if too few
        for looked in (wanted, scores.size):
            best = np.argpartition(-scores, looked)[:looked] if looked < scores.size else None
            order = np.arange(scores.size) if best is None else best
            order = order[np.argsort(-scores[order], kind="stable")]
            found: list[tuple[int, float]] = []
            for position in order:
                row = int(candidates[position])
                if row not in own and admits(self._ids[row]):
                    found.append((row, float(scores[position])))
                    if len(found) == k:
                        return found
            if best is None:
                return found
        return found

    def _count(self, recent: deque[int], row: int, sign: float) -> None:
        if row in recent:
            return
        self._users[row] = max(0.0, self._users[row] + sign)
        for other in recent:
            self._pair(row, other, sign)
            self._pair(other, row, sign)
        recent.append(row)

    def _pair(self, row: int, other: int, sign: float) -> None:
        pairs = self._pairs[row]
        count = pairs.get(other, 0.0) + sign
        if count > _DUST:
            pairs[other] = count
        else:
            pairs.pop(other, None)
        self._arrays.pop(row, None)
        if len(pairs) > 2 * self.neighbours:
            kept = sorted(pairs.items(), key=lambda pair: -pair[1])[: self.neighbours]
            self._pairs[row] = dict(kept)

    def _neighbours_of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        held = self._arrays.get(row)
        if held is None:
            pairs = self._pairs[row]
            rows = np.fromiter(pairs.keys(), dtype=np.int64, count=len(pairs))
            counts = np.fromiter(pairs.values(), dtype=np.float64, count=len(pairs))
            if rows.size > self.neighbours:  # it holds up to twice as many between prunes
                strongest = np.argpartition(-counts, self.neighbours)[: self.neighbours]
                rows, counts = rows[strongest], counts[strongest]
            held = self._arrays[row] = (rows, counts)
        return held

    def _row(self, item_id: str) -> int:
        row = self._rows.get(item_id)
        if row is None:
            row = self._rows[item_id] = len(self._ids)
            self._ids.append(item_id)
            self._pairs.append({})
            if row >= self._users.size:
                grown = np.zeros(max(1024, int(self._users.size * 1.5)))
                grown[: self._users.size] = self._users
                self._users = grown
        return row


def _strongest_sources(
    rows: np.ndarray,
    sources: np.ndarray,
    contributions: np.ndarray,
    chosen: list[tuple[int, float]],
) -> list[int]:
    """For each chosen row, the profile source of its largest contribution."""
    if not chosen:
        return []
    wanted = np.array([row for row, _ in chosen])
    slot = np.full(int(max(rows.max(), wanted.max())) + 1, -1)
    slot[wanted] = np.arange(wanted.size)
    picked = np.flatnonzero(slot[rows] >= 0)
    slots, values = slot[rows[picked]], contributions[picked]
    order = np.lexsort((-values, slots))  # by chosen slot, then largest contribution first
    firsts = np.flatnonzero(np.r_[True, np.diff(slots[order]) != 0])
    strongest = np.empty(wanted.size, dtype=np.int64)
    strongest[slots[order[firsts]]] = sources[picked][order[firsts]]
    return [int(source) for source in strongest]
