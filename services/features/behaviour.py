"""What users do: the event log, their histories, what is trending and which items users
act on together, kept consistent: an append updates the log, the history (read from the
log), the popularity and the co-occurrences before it is acknowledged."""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.features.co_occurrence import CoOccurrence, Related
from services.features.event_log import AppendResult, SqliteEventLog
from services.features.trending import Trending
from shared.batching import Batched
from shared.errors import InvalidArgument
from shared.events import Event, Interaction, LoggedEvent
from shared.items import ItemFilter, validate_id, validate_k
from shared.profile import profile_weights

MAX_HISTORY = 1_000
MAX_SEEN = 20_000
MAX_READ = 10_000
HISTORY_CACHE_IDS = 500_000


@dataclass(frozen=True, eq=False)  # by identity: one read, held by the cache, is one key
class History:
    recent: list[Interaction]
    seen: list[str]
    first_offset: int  # of the user's oldest event in the log; 0: none


HistoryQuery = tuple[int, bool]  # (limit, include_seen)


class HistoryCache:
    """The histories read last, by user, so that a user asked about again reads no SQL;
    at most `capacity_ids` item ids held in all (recent and seen together), the least
    recently read going first. A write drops its users' histories after it is durable and
    before it is acknowledged, and a read that any write overlapped is not kept, so a
    history found here is the one the log would give."""

    def __init__(self, capacity_ids: int) -> None:
        self.capacity_ids = capacity_ids
        self._lock = threading.Lock()
        self._users: OrderedDict[str, dict[HistoryQuery, History]] = OrderedDict()
        self._held_ids = 0
        self._writes = 0

    def get(self, user_id: str, query: HistoryQuery) -> History | None:
        with self._lock:
            held = self._users.get(user_id)
            if held is None or query not in held:
                return None
            self._users.move_to_end(user_id)
            return held[query]

    def mark(self) -> int:
        """Taken before reading the log; put keeps the read only if no write came since."""
        with self._lock:
            return self._writes

    def put(self, user_id: str, query: HistoryQuery, history: History, mark: int) -> None:
        size = _ids_in(history)
        with self._lock:
            if mark != self._writes or size > self.capacity_ids:
                return
            held = self._users.setdefault(user_id, {})
            replaced = held.get(query)
            self._held_ids += size - (_ids_in(replaced) if replaced else 0)
            held[query] = history
            self._users.move_to_end(user_id)
            while self._held_ids > self.capacity_ids:
                _, evicted = self._users.popitem(last=False)
                self._held_ids -= sum(_ids_in(h) for h in evicted.values())

    def drop(self, user_ids: Iterable[str]) -> None:
        with self._lock:
            self._writes += 1
            for user_id in user_ids:
                dropped = self._users.pop(user_id, None)
                if dropped:
                    self._held_ids -= sum(_ids_in(h) for h in dropped.values())


def _ids_in(history: History) -> int:
    return len(history.recent) + len(history.seen) + 1  # an empty history holds a place too


class Behaviour:
    def __init__(
        self,
        log: SqliteEventLog,
        trending: Trending,
        catalogue: Mapping[str, Sequence[str]],
        catalogue_revision: Callable[[], int] = lambda: 0,
        history_cache_ids: int = HISTORY_CACHE_IDS,
        co_occurrence: CoOccurrence | None = None,
    ) -> None:
        self.log = log
        self.trending = trending
        self.co_occurrence = co_occurrence or CoOccurrence()
        self.catalogue = catalogue  # item id -> categories, of every item that exists
        self.catalogue_revision = catalogue_revision  # grows with every catalogue write
        self.histories = HistoryCache(history_cache_ids)
        # A kept history's last related items, while neither it nor the co-occurrences
        # changed: a user's repeated calls between events rank the same.
        self._related: weakref.WeakKeyDictionary[History, tuple[object, list[Related]]]
        self._related = weakref.WeakKeyDictionary()
        self._write_lock = threading.Lock()
        # A restart rebuilds the popularity and restarts its count of changes.
        self._incarnation = secrets.token_hex(4)

    def trending_version(self) -> str:
        """Names what trending_items ranks from: the same version, the same answers. Read
        it before ranking, so that a write meanwhile leaves the label older, never newer,
        than the state the list came from."""
        return f"{self._incarnation}.{self.trending.changes}.{self.catalogue_revision()}"

    def restore(self) -> None:
        """Rebuilds the in-memory popularity and co-occurrences from the durable log."""
        chunk: list[Event] = []
        for logged in self.log.scan():
            chunk.append(logged.event)
            if len(chunk) == 10_000:
                self._learn(chunk)
                chunk = []
        self._learn(chunk)

    def _learn(self, events: Sequence[Event]) -> None:
        self.trending.add(events)
        self.co_occurrence.add(events)

    def append(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Writes batches already validated (validate_events) in one durable commit."""
        with self._write_lock:
            results = self.log.append(batches)
            stored = [e.event for r in results for e in r.stored]
            self._learn(stored)
            self.histories.drop({e.user_id for e in stored})
        return results

    def read(self, from_offset: int, limit: int) -> tuple[list[LoggedEvent], int]:
        if from_offset < 0:
            raise InvalidArgument("from_offset", "must not be negative")
        if not 1 <= limit <= MAX_READ:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_READ}")
        return self.log.read(max(from_offset, 1), limit), self.log.end_offset()

    def cached_history(self, user_id: str, limit: int, include_seen: bool) -> History | None:
        """The history, if it is at hand without reading the log; else None."""
        validate_id(user_id, "user_id")
        if not 0 <= limit <= MAX_HISTORY:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_HISTORY}")
        return self.histories.get(user_id, (limit, include_seen))

    def history(self, user_id: str, limit: int, include_seen: bool) -> History:
        """The user's latest `limit` interactions, newest first, and with include_seen
        every item the user acted on."""
        held = self.cached_history(user_id, limit, include_seen)
        if held is not None:
            return held
        mark = self.histories.mark()
        recent = self.log.history(user_id, limit) if limit else []
        seen = self.log.seen_items(user_id, MAX_SEEN) if include_seen else []
        history = History(recent, seen, self.log.first_offset(user_id) if recent else 0)
        self.histories.put(user_id, (limit, include_seen), history, mark)
        return history

    def trending_half_life(self, asked_s: float) -> float:
        """The half-life kept that a trending list asked for `asked_s` is ranked by (the
        nearest; 0: the default)."""
        if asked_s < 0 or not math.isfinite(asked_s):
            raise InvalidArgument("half_life_s", "must be positive, or 0 for the default")
        return self.trending.kept(asked_s)

    def trending_items(
        self, k: int, item_filter: ItemFilter, exclude: Sequence[str], half_life_s: float = 0.0
    ) -> list[tuple[str, float]]:
        """The k most popular catalogue items now that pass the filter, popularity halving
        every `half_life_s` (the kept one nearest; 0: the default); while fewer have any
        popularity, catalogue items nobody interacted with fill the list (score 0), so
        that a new user gets k items whenever the catalogue holds them."""
        validate_k(k)
        kept = self.trending_half_life(half_life_s)
        skip = set(exclude) | item_filter.exclude_item_ids
        limit = 4 * k + len(skip)
        while True:
            ranked = self.trending.top(limit, kept)
            found = self._keep_catalogue_items(ranked, item_filter, skip, k)
            if len(found) >= k:
                return found
            if len(ranked) < limit:
                wanted = k - len(found)
                return found + self._unranked(item_filter, skip | {i for i, _ in ranked}, wanted)
            limit *= 4

    def related(
        self, history: History, k: int, profile_half_life_s: float, item_filter: ItemFilter
    ) -> list[Related]:
        """The k catalogue items users acted on together with the history's recent items
        (weighted as the gateway's content profile weighs them), best first; none the
        history has seen, none the filter refuses."""
        validate_k(k)
        if profile_half_life_s <= 0:
            raise InvalidArgument("profile_half_life_s", "must be positive")
        # Read before ranking, so that a write meanwhile leaves the key older, never newer,
        # than the state the answer came from.
        key = (
            self.co_occurrence.changes,
            self.catalogue_revision(),
            k,
            profile_half_life_s,
            item_filter,
        )
        held = self._related.get(history)
        if held is not None and held[0] == key:
            return held[1]
        skip = set(history.seen) | item_filter.exclude_item_ids

        def admits(item_id: str) -> bool:
            categories = self.catalogue.get(item_id)
            return (
                item_id not in skip
                and categories is not None
                and item_filter.admits_categories(categories)
            )

        profile = profile_weights(history.recent, profile_half_life_s)
        found = self.co_occurrence.related(profile, k, admits)
        self._related[history] = (key, found)
        return found

    def _unranked(self, flt: ItemFilter, skip: set[str], k: int) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        # A copy: upserts change the catalogue from another thread.
        for item_id, categories in list(self.catalogue.items()):
            if len(found) == k:
                break
            if item_id not in skip and flt.admits_categories(categories):
                found.append((item_id, 0.0))
        return found

    def _keep_catalogue_items(
        self, ranked: list[tuple[str, float]], flt: ItemFilter, skip: set[str], k: int
    ) -> list[tuple[str, float]]:
        found = []
        for item_id, score in ranked:
            categories = self.catalogue.get(item_id)
            if item_id in skip or categories is None or not flt.admits_categories(categories):
                continue
            found.append((item_id, score))
            if len(found) == k:
                break
        return found

    def forget(self, user_id: str) -> int:
        validate_id(user_id, "user_id")
        with self._write_lock:
            removed = self.log.forget_user(user_id)
            self.trending.remove(removed)
            self.co_occurrence.remove(removed)
            self.histories.drop([user_id])
        return len(removed)


GroupCommit = Batched[Sequence[Event], AppendResult]


def group_commit(behaviour: Behaviour) -> GroupCommit:
    """Appends from concurrent callers share one durable commit: while one write is on its
    way to disk, the batches that arrive queue up and go together in the next."""

    async def write(batches: list[Sequence[Event]]) -> list[AppendResult]:
        return await asyncio.to_thread(behaviour.append, batches)

    return Batched(write)
