"""What users do: the event log, their histories and what is trending, kept consistent:
an append updates the log, the history (read from the log) and the popularity before it
is acknowledged."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.features.event_log import AppendResult, SqliteEventLog
from services.features.trending import Trending
from shared.batching import Batched
from shared.errors import InvalidArgument
from shared.events import Event, Interaction, LoggedEvent
from shared.items import ItemFilter, validate_id, validate_k

MAX_HISTORY = 1_000
MAX_SEEN = 20_000
MAX_READ = 10_000


@dataclass(frozen=True)
class History:
    recent: list[Interaction]
    seen: list[str]
    first_offset: int  # of the user's oldest event in the log; 0: none


class Behaviour:
    def __init__(
        self,
        log: SqliteEventLog,
        trending: Trending,
        catalogue: Mapping[str, Sequence[str]],
        catalogue_revision: Callable[[], int] = lambda: 0,
    ) -> None:
        self.log = log
        self.trending = trending
        self.catalogue = catalogue  # item id -> categories, of every item that exists
        self.catalogue_revision = catalogue_revision  # grows with every catalogue write
        self._write_lock = threading.Lock()
        # A restart rebuilds the popularity and restarts its count of changes.
        self._incarnation = secrets.token_hex(4)

    def trending_version(self) -> str:
        """Names what trending_items ranks from: the same version, the same answers. Read
        it before ranking, so that a write meanwhile leaves the label older, never newer,
        than the state the list came from."""
        return f"{self._incarnation}.{self.trending.changes}.{self.catalogue_revision()}"

    def restore(self) -> None:
        """Rebuilds the in-memory popularity from the durable log."""
        self.trending.add(logged.event for logged in self.log.scan())

    def append(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Writes batches already validated (validate_events) in one durable commit."""
        with self._write_lock:
            results = self.log.append(batches)
            self.trending.add(e.event for r in results for e in r.stored)
        return results

    def read(self, from_offset: int, limit: int) -> tuple[list[LoggedEvent], int]:
        if from_offset < 0:
            raise InvalidArgument("from_offset", "must not be negative")
        if not 1 <= limit <= MAX_READ:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_READ}")
        return self.log.read(max(from_offset, 1), limit), self.log.end_offset()

    def history(self, user_id: str, limit: int, include_seen: bool) -> History:
        validate_id(user_id, "user_id")
        if not 0 <= limit <= MAX_HISTORY:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_HISTORY}")
        recent = self.log.history(user_id, limit) if limit else []
        seen = self.log.seen_items(user_id, MAX_SEEN) if include_seen else []
        return History(recent, seen, self.log.first_offset(user_id) if recent else 0)

    def trending_items(
        self, k: int, item_filter: ItemFilter, exclude: Sequence[str]
    ) -> list[tuple[str, float]]:
        """The k most popular catalogue items now that pass the filter; while fewer have
        any popularity, catalogue items nobody interacted with fill the list (score 0), so
        that a new user gets k items whenever the catalogue holds them."""
        validate_k(k)
        skip = set(exclude) | item_filter.exclude_item_ids
        limit = 4 * k + len(skip)
        while True:
            ranked = self.trending.top(limit)
            found = self._keep_catalogue_items(ranked, item_filter, skip, k)
            if len(found) >= k:
                return found
            if len(ranked) < limit:
                wanted = k - len(found)
                return found + self._unranked(item_filter, skip | {i for i, _ in ranked}, wanted)
            limit *= 4

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
        return len(removed)


GroupCommit = Batched[Sequence[Event], AppendResult]


def group_commit(behaviour: Behaviour) -> GroupCommit:
    """Appends from concurrent callers share one durable commit: while one write is on its
    way to disk, the batches that arrive queue up and go together in the next."""

    async def write(batches: list[Sequence[Event]]) -> list[AppendResult]:
        return await asyncio.to_thread(behaviour.append, batches)

    return Batched(write)
