"""The retrieval domain: named vector indexes, durable in the vector store, searched in
memory, snapshotted to disk and swapped whole when rebuilt.

Writes are serialised (one at a time, in generation order); searches never wait for
them. A rebuild runs in a worker thread while searches keep using the old index, then
the new one replaces it in one assignment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from services.retrieval.vector_index import Hit, IndexSettings, VectorIndex, hybrid_search
from services.retrieval.vector_store import VectorStore
from shared.errors import InvalidArgument, NotFound
from shared.items import (
    CONTENT_INDEX,
    ItemFilter,
    validate_batch_size,
    validate_each_id,
    validate_id,
    validate_ids,
    validate_k,
)

log = logging.getLogger(__name__)

MAX_PROFILE = 1_000
# Nearest neighbours beyond k that a boost may lift into the top k.
BOOST_POOL = 200
MAX_EXPORT_PAGE = 10_000
_INDEX_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Record:
    item_id: str
    vector: Sequence[float]
    categories: Sequence[str]


@dataclass(frozen=True)
class ProfileTerm:
    """A second similarity for hybrid ranking: `weight` times the similarity, in `index`,
    to the normalised weighted sum of the `items`' vectors there."""

    index: str
    items: Sequence[tuple[str, float]]
    weight: float


@dataclass(frozen=True)
class ReservedSlots:
    """The last `slots` places of a result go to the best items that carry `category`."""

    slots: int
    category: str


@dataclass(frozen=True)
class WrittenSince:
    """What writes set while a replica catches up: (index, item_id) upserted or deleted,
    and the indexes dropped."""

    keys: set[tuple[str, str]]
    dropped: set[str]


@dataclass(frozen=True)
class IndexStats:
    size: int
    dimension: int
    kind: str
    generation: int


def read_stored_index(vectors_db: Path, name: str) -> VectorIndex:
    """One index as a retrieval service stored it in `vectors_db`, rebuilt in this process
    (the benchmark's in-process baseline); a running service may hold the store meanwhile."""
    store = VectorStore(vectors_db)
    try:
        ids, vectors, categories = store.load(name)
    finally:
        store.close()
    index = VectorIndex(vectors.shape[1], IndexSettings())
    index.upsert(ids, vectors, categories)
    return index


def index_name(name: str, field_name: str = "index") -> str:
    """Every request names its index: an empty name is an error, never the content index
    (a DropIndex without a name once dropped the catalogue's vectors)."""
    if not name:
        raise InvalidArgument(field_name, "must not be empty")
    if not _INDEX_NAME.match(name):
        raise InvalidArgument(field_name, "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return name


def _as_matrix(records: Sequence[Record], dimension: int | None) -> np.ndarray:
    for i, record in enumerate(records):
        field = f"records[{i}].vector"
        if not record.vector:
            raise InvalidArgument(field, "must not be empty")
        wanted = dimension or len(records[0].vector)
        if len(record.vector) != wanted:
            raise InvalidArgument(field, f"has dimension {len(record.vector)}, expected {wanted}")
    matrix = np.asarray([r.vector for r in records], dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise InvalidArgument(f"records[{bad[0]}].vector", "must contain only finite numbers")
    return matrix


def _validate_reserved(reserved: ReservedSlots, k: int) -> None:
    if not 0 <= reserved.slots <= k:
        raise InvalidArgument("reserved.slots", f"must be from 0 to k ({k})")
    if reserved.slots and not reserved.category:
        raise InvalidArgument("reserved.category", "must not be empty")


def _validate_weighted(items: Sequence[tuple[str, float]], field: str) -> None:
    if len(items) > MAX_PROFILE:
        raise InvalidArgument(field, f"has more than {MAX_PROFILE} items")
    validate_each_id([item_id for item_id, _ in items], field, ".item_id")
    weights = np.fromiter((w for _, w in items), dtype=np.float64, count=len(items))
    bad = np.flatnonzero(~np.isfinite(weights))
    if len(bad):
        raise InvalidArgument(f"{field}[{bad[0]}].weight", "must be a finite number")


class IndexRegistry:
    def __init__(self, store: VectorStore, snapshot_dir: Path, settings: IndexSettings) -> None:
        self.store = store
        self.snapshot_dir = snapshot_dir
        self.settings = settings
        self._indexes: dict[str, VectorIndex] = {}
        self._snapshot_generation: dict[str, int] = {}
        self._writes = asyncio.Lock()
        self._written: WrittenSince | None = None

    # ---- start-up and snapshots -------------------------------------------------------

    def restore(self) -> None:
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        for name, (dimension, generation) in self.store.indexes().items():
            index = self._load_snapshot(name, generation)
            if index is None:
                index = self._rebuild_from_store(name, dimension, generation)
            self._indexes[name] = index
            log.info(
                "index restored", extra={"index": name, "size": len(index), "kind": index.kind}
            )

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.snapshot_dir / f"{name}.faiss", self.snapshot_dir / f"{name}.json"

    def _load_snapshot(self, name: str, generation: int) -> VectorIndex | None:
        faiss_path, meta_path = self._paths(name)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") != generation:
                return None
            index = VectorIndex.restore(faiss.read_index(str(faiss_path)), meta, self.settings)
        except (OSError, ValueError, RuntimeError) as error:
            log.info("snapshot unusable, rebuilding", extra={"index": name, "why": str(error)})
            return None
        self._snapshot_generation[name] = generation
        return index

    def _rebuild_from_store(self, name: str, dimension: int, generation: int) -> VectorIndex:
        ids, vectors, categories = self.store.load(name)
        index = VectorIndex(dimension, self.settings)
        index.upsert(ids, vectors, categories)
        if index.needs_rebuild():
            index = index.rebuilt()
        index.generation = generation
        return index

    async def snapshot(self) -> None:
        """Writes a snapshot of every index changed since its last one."""
        async with self._writes:
            for name, index in list(self._indexes.items()):
                if self._snapshot_generation.get(name) != index.generation:
                    await asyncio.to_thread(self._write_snapshot, name, index)
                    self._snapshot_generation[name] = index.generation

    def _write_snapshot(self, name: str, index: VectorIndex) -> None:
        faiss_path, meta_path = self._paths(name)
        structure, meta = index.snapshot()
        faiss.write_index(structure, str(faiss_path) + ".tmp")
        meta_path.with_suffix(".tmp").write_text(json.dumps(meta))
        os.replace(str(faiss_path) + ".tmp", faiss_path)
        os.replace(meta_path.with_suffix(".tmp"), meta_path)

    # ---- writes -----------------------------------------------------------------------

    async def upsert(self, name: str, records: Sequence[Record]) -> int:
        name = index_name(name)
        validate_batch_size(len(records), "records")
        for i, record in enumerate(records):
            validate_id(record.item_id, f"records[{i}].item_id")
        latest = list({r.item_id: r for r in records}.values())
        async with self._writes:
            await self._upsert_locked(name, latest)
            # Only once it is written: a refused write must not hide the peer's copy.
            if self._written is not None:
                self._written.keys.update((name, r.item_id) for r in latest)
        return len(latest)

    async def _upsert_locked(self, name: str, latest: Sequence[Record]) -> None:
        current = self._indexes.get(name)
        vectors = _as_matrix(latest, current.dimension if current else None)
        ids = [r.item_id for r in latest]
        categories = [list(r.categories) for r in latest]
        generation = await asyncio.to_thread(
            self.store.upsert, name, vectors.shape[1], ids, vectors, categories
        )
        index = current or VectorIndex(vectors.shape[1], self.settings)
        index.upsert(ids, vectors, categories)
        index.generation = generation
        self._indexes[name] = index
        await self._rebuild_if_needed(name, index)

    async def delete(self, name: str, item_ids: Sequence[str]) -> int:
        name = index_name(name)
        ids = validate_ids(item_ids)
        async with self._writes:
            deleted = await self._delete_locked(name, ids)
            if self._written is not None:
                self._written.keys.update((name, i) for i in ids)
            return deleted

    async def _delete_locked(self, name: str, ids: Sequence[str]) -> int:
        index = self._indexes.get(name)
        if index is None:
            return 0
        deleted, generation = await asyncio.to_thread(self.store.delete, name, ids)
        index.delete(ids)
        index.generation = generation
        await self._rebuild_if_needed(name, index)
        return deleted

    async def drop(self, name: str) -> bool:
        name = index_name(name)
        if name == CONTENT_INDEX:
            # It holds the catalogue's text vectors, which nothing could rebuild.
            raise InvalidArgument(
                "index", f"{CONTENT_INDEX!r} holds the catalogue and is never dropped"
            )
        async with self._writes:
            if self._written is not None:
                self._written.dropped.add(name)
            return await self._drop_locked(name)

    async def _drop_locked(self, name: str) -> bool:
        dropped = await asyncio.to_thread(self.store.drop, name)
        dropped = self._indexes.pop(name, None) is not None or dropped
        self._snapshot_generation.pop(name, None)
        for path in self._paths(name):
            path.unlink(missing_ok=True)
        if dropped:
            log.info("index dropped", extra={"index": name})
        return dropped

    # ---- catching up from a peer ------------------------------------------------------

    @property
    def catching_up(self) -> bool:
        return self._written is not None

    def begin_catch_up(self) -> None:
        """From now until `end_catch_up`, writes are remembered, so that a peer's copy
        (older or newer than them) never undoes one."""
        self._written = WrittenSince(set(), set())

    def end_catch_up(self) -> None:
        self._written = None

    async def merge_from_peer(self, name: str, dimension: int, records: Sequence[Record]) -> int:
        """A page of a peer's copy of `name`, less what writes here set since the catch-up
        began. An index of another dimension here is replaced whole."""
        assert self._written is not None, "merge_from_peer outside a catch-up"
        async with self._writes:
            if name in self._written.dropped:
                return 0
            current = self._indexes.get(name)
            if current is not None and current.dimension != dimension:
                await self._drop_locked(name)
            fresh = [r for r in records if (name, r.item_id) not in self._written.keys]
            if fresh:
                await self._upsert_locked(name, fresh)
            return len(fresh)

    async def keep_only(self, name: str, peer_ids: set[str]) -> int:
        """Deletes what `name` holds here but the peer does not, unless written here since."""
        assert self._written is not None, "keep_only outside a catch-up"
        async with self._writes:
            here = await asyncio.to_thread(self.store.item_ids, name)
            stale = sorted(i for i in here - peer_ids if (name, i) not in self._written.keys)
            return await self._delete_locked(name, stale) if stale else 0

    async def drop_unless_listed(self, names: set[str]) -> list[str]:
        """Drops the indexes here that the peer no longer has, unless written here since."""
        assert self._written is not None, "drop_unless_listed outside a catch-up"
        touched = {index for index, _ in self._written.keys}
        dropped = []
        async with self._writes:
            for name in sorted(set(self._indexes) - names - touched - {CONTENT_INDEX}):
                await self._drop_locked(name)
                dropped.append(name)
        return dropped

    def listing(self) -> list[tuple[str, int, int]]:
        """(name, dimension, size) of every index."""
        return [(n, i.dimension, len(i)) for n, i in sorted(self._indexes.items())]

    def export_page(self, name: str, after_item_id: str, limit: int) -> tuple[list[Record], str]:
        """Records of `name` after `after_item_id` in item_id order, and where the next
        page starts ("" after the last)."""
        name = index_name(name)
        if not 1 <= limit <= MAX_EXPORT_PAGE:
            raise InvalidArgument("limit", f"must be from 1 to {MAX_EXPORT_PAGE}")
        if name not in self._indexes:
            raise NotFound(f"index: no index {name!r}")
        ids, vectors, categories = self.store.page(name, after_item_id, limit)
        records = [
            Record(item_id, vectors[i].tolist(), categories[i]) for i, item_id in enumerate(ids)
        ]
        return records, ids[-1] if len(ids) == limit else ""

    async def _rebuild_if_needed(self, name: str, index: VectorIndex) -> None:
        if index.needs_rebuild():
            fresh = await asyncio.to_thread(index.rebuilt)
            self._indexes[name] = fresh
            log.info("index rebuilt", extra={"index": name, "size": len(fresh), "kind": fresh.kind})

    # ---- reads ------------------------------------------------------------------------

    def search(
        self,
        name: str,
        vector: Sequence[float],
        k: int,
        flt: ItemFilter,
        exclude: Sequence[str] = (),
        boosts: Sequence[tuple[str, float]] = (),
        profile: ProfileTerm | None = None,
        reserved: ReservedSlots | None = None,
    ) -> list[Hit]:
        name = index_name(name)
        validate_k(k)
        _validate_weighted(boosts, "boosts")
        second = self._profile_query(profile) if profile is not None else None
        if reserved is not None:
            _validate_reserved(reserved, k)
        index = self._indexes.get(name)
        if index is None:
            return []
        if len(vector) != index.dimension:
            raise InvalidArgument(
                "vector", f"has dimension {len(vector)}, expected {index.dimension}"
            )
        query = np.asarray(vector, dtype=np.float32)
        if not np.isfinite(query).all():
            raise InvalidArgument("vector", "must contain only finite numbers")
        boosted = dict(boosts)
        exact = None
        if second is not None:
            assert profile is not None
            other, other_query = second
            exact = index.hybrid_scores(
                query, other, other_query, profile.weight, flt, exclude, boosted
            )

        def ranked(top: int, item_filter: ItemFilter, skip: Sequence[str]) -> list[Hit]:
            if exact is not None:  # flt and exclude are in its scores already
                return exact.top(top, item_filter.require_categories - flt.require_categories, skip)
            if second is not None:
                assert profile is not None
                other, other_query = second
                return hybrid_search(
                    index,
                    query,
                    other,
                    other_query,
                    profile.weight,
                    top,
                    item_filter,
                    skip,
                    boosted,
                    BOOST_POOL,
                )
            if boosts:
                return index.search_boosted(query, top, item_filter, skip, boosted, BOOST_POOL)
            return index.search(query, top, item_filter, skip)

        hits = ranked(k, flt, [] if exact else exclude)
        if reserved is None or reserved.slots == 0:
            return hits
        fixed = hits[: k - reserved.slots]
        fixed_ids = [h.item_id for h in fixed]
        marked = replace(flt, require_categories=flt.require_categories | {reserved.category})
        kept = [
            replace(h, reserved=True)
            for h in ranked(reserved.slots, marked, fixed_ids if exact else [*exclude, *fixed_ids])
        ]
        taken = {*fixed_ids, *(h.item_id for h in kept)}
        rest = [h for h in hits[k - reserved.slots :] if h.item_id not in taken]
        return (fixed + kept + rest)[:k]

    def _profile_query(self, profile: ProfileTerm) -> tuple[VectorIndex, np.ndarray] | None:
        """The profile's index and query vector; None when it adds nothing (no weight, no
        such index, or none of its items there)."""
        name = index_name(profile.index, "profile.index")
        _validate_weighted(profile.items, "profile.items")
        if not math.isfinite(profile.weight) or profile.weight < 0:
            raise InvalidArgument("profile.weight", "must be a finite number, 0 or more")
        other = self._indexes.get(name)
        if other is None or profile.weight == 0 or not profile.items:
            return None
        query, _ = other.profile_vector(profile.items)
        return None if query is None else (other, query)

    def similar(self, name: str, item_id: str, k: int, flt: ItemFilter) -> list[Hit]:
        name = index_name(name)
        validate_id(item_id, "item_id")
        validate_k(k)
        index = self._indexes.get(name)
        query = index.vector_of(item_id) if index else None
        if index is None or query is None:
            raise NotFound(f"item_id: no item {item_id!r} in index {name!r}")
        own = index.categories_of(item_id)
        hits = index.search(query, k, flt, exclude=[item_id])
        return [
            Hit(h.item_id, h.score, tuple(sorted(own & index.categories_of(h.item_id))))
            for h in hits
        ]

    def search_by_profile(
        self,
        name: str,
        profile: Sequence[tuple[str, float]],
        k: int,
        flt: ItemFilter,
        exclude: Sequence[str],
        boosts: Sequence[tuple[str, float]] = (),
    ) -> tuple[list[Hit], int]:
        """Hits for the profile (similarity plus any boost), each naming the positively
        weighted profile item closest to it; and how many profile items the index holds."""
        name = index_name(name)
        validate_k(k)
        _validate_weighted(profile, "profile")
        _validate_weighted(boosts, "boosts")
        index = self._indexes.get(name)
        if index is None:
            return [], 0
        query, found = index.profile_vector(profile)
        if query is None:
            return [], len(found)
        hits = index.search_boosted(query, k, flt, exclude, dict(boosts), BOOST_POOL)
        liked = [i for i, w in profile if w > 0 and i in index]
        closest = index.closest([h.item_id for h in hits], liked)
        return [Hit(h.item_id, h.score, (), c) for h, c in zip(hits, closest, strict=True)], len(
            found
        )

    def stats(self, name: str) -> IndexStats:
        name = index_name(name)
        index = self._indexes.get(name)
        if index is None:
            raise NotFound(f"index: no index {name!r}")
        return IndexStats(len(index), index.dimension, index.kind, index.generation)
