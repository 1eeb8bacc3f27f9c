"""One searchable set of item vectors on FAISS, scored by inner product.

Rows are appended to the FAISS index and never removed in place: a delete or a replacing
upsert marks the old row dead, and searches only ever see live rows through an id
selector. When dead rows pile up, or the live count crosses the approximate-search
threshold, a fresh index is built from the live rows (`rebuilt`) and swapped in whole.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from shared.items import ItemFilter

FLAT = "flat"
HNSW = "hnsw"


@dataclass(frozen=True)
class IndexSettings:
    hnsw_threshold: int = 50_000  # live vectors from which search is approximate
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    brute_force_limit: int = 20_000  # filtered HNSW searches this selective go exact
    # A flat index keeps the similarities of its latest exact queries up to this size.
    similarity_cache_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    shared_categories: tuple[str, ...] = ()
    closest_profile_item_id: str = ""
    reserved: bool = False  # holds a place kept for a category (ReservedSlots)


def _new_faiss(kind: str, dimension: int, settings: IndexSettings) -> faiss.Index:
    if kind == HNSW:
        index = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
        return index
    return faiss.IndexFlatIP(dimension)


class VectorIndex:
    def __init__(self, dimension: int, settings: IndexSettings, kind: str = FLAT) -> None:
        self.dimension = dimension
        self.settings = settings
        self.kind = kind
        self.generation = 0
        self._faiss = _new_faiss(kind, dimension, settings)
        self._row_ids: list[str | None] = []  # None marks a dead row
        self._row_categories: list[frozenset[str]] = []
        self._rows: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=bool)  # by row; kept so a search's mask is one copy
        self._category_rows: dict[str, set[int]] = {}
        self._category_cache: dict[str, np.ndarray] = {}
        self._changes = 0  # bumped by every mutation: keys the cached row map below
        self._row_map: tuple[VectorIndex, int, int, np.ndarray] | None = None
        self._similarity_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._similarity_changes = 0  # the _changes the cached similarities were taken at

    # ---- size and state -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    @property
    def dead_rows(self) -> int:
        return len(self._row_ids) - len(self._rows)

    def wanted_kind(self) -> str:
        return HNSW if len(self) >= self.settings.hnsw_threshold else FLAT

    def needs_rebuild(self) -> bool:
        too_many_dead = self.dead_rows > max(1_000, len(self._row_ids) // 4)
        return too_many_dead or (self.kind == FLAT and self.wanted_kind() == HNSW)

    def live_entries(self) -> tuple[list[str], np.ndarray, list[frozenset[str]]]:
        rows = sorted(self._rows.values())
        ids = [self._row_ids[r] or "" for r in rows]
        vectors = self._vectors(np.asarray(rows, dtype=np.int64))
        return ids, vectors, [self._row_categories[r] for r in rows]

    def rebuilt(self) -> VectorIndex:
        """A compacted copy holding only live rows, of the kind its size calls for."""
        ids, vectors, categories = self.live_entries()
        fresh = VectorIndex(self.dimension, self.settings, self.wanted_kind())
        fresh.upsert(ids, vectors, categories)
        fresh.generation = self.generation
        return fresh

    # ---- mutation ---------------------------------------------------------------------

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, categories: Sequence[Iterable[str]]
    ) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        changed = [
            i for i, item_id in enumerate(ids) if self._differs(item_id, vectors[i], categories[i])
        ]
        if not changed:
            return
        self._kill([ids[i] for i in changed])
        first_row = len(self._row_ids)
        self._faiss.add(vectors[changed])
        self._alive = np.concatenate([self._alive, np.ones(len(changed), dtype=bool)])
        for offset, i in enumerate(changed):
            row = first_row + offset
            cats = frozenset(categories[i])
            self._row_ids.append(ids[i])
            self._row_categories.append(cats)
            self._rows[ids[i]] = row
            for category in cats:
                self._category_rows.setdefault(category, set()).add(row)
        self._category_cache.clear()
        self._changes += 1

    def delete(self, ids: Iterable[str]) -> int:
        deleted = self._kill(ids)
        self._category_cache.clear()
        return deleted

    def _differs(self, item_id: str, vector: np.ndarray, categories: Iterable[str]) -> bool:
        row = self._rows.get(item_id)
        if row is None:
            return True
        same_categories = self._row_categories[row] == frozenset(categories)
        return not (same_categories and np.array_equal(self._faiss.reconstruct(row), vector))

    def _kill(self, ids: Iterable[str]) -> int:
        killed = 0
        for item_id in ids:
            row = self._rows.pop(item_id, None)
            if row is None:
                continue
            self._row_ids[row] = None
            self._alive[row] = False
            for category in self._row_categories[row]:
                self._category_rows[category].discard(row)
            killed += 1
        if killed:
            self._changes += 1
        return killed

    # ---- search -----------------------------------------------------------------------

    def vector_of(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        return None if row is None else np.asarray(self._faiss.reconstruct(row))

    def categories_of(self, item_id: str) -> frozenset[str]:
        row = self._rows.get(item_id)
        return frozenset() if row is None else self._row_categories[row]

    def profile_vector(
        self, profile: Sequence[tuple[str, float]]
    ) -> tuple[np.ndarray | None, list[str]]:
        """The normalised weighted sum of the profile items' vectors, and the items found."""
        found = [(self._rows[i], w, i) for i, w in profile if i in self._rows]
        if not found:
            return None, []
        rows = np.asarray([r for r, _, _ in found], dtype=np.int64)
        weights = np.asarray([w for _, w, _ in found], dtype=np.float32)
        combined = weights @ self._vectors(rows)
        norm = float(np.linalg.norm(combined))
        if norm < 1e-9:
            return None, [i for _, _, i in found]
        return combined / norm, [i for _, _, i in found]

    def closest(self, hit_ids: Sequence[str], candidates: Sequence[str]) -> list[str]:
        """For each hit, the candidate item whose vector is most like the hit's."""
        if not hit_ids or not candidates:
            return ["" for _ in hit_ids]
        hits = self._vectors(np.asarray([self._rows[i] for i in hit_ids], dtype=np.int64))
        pool = self._vectors(np.asarray([self._rows[i] for i in candidates], dtype=np.int64))
        best = np.argmax(hits @ pool.T, axis=1)
        return [candidates[b] for b in best]

    def search(
        self, query: np.ndarray, k: int, item_filter: ItemFilter, exclude: Iterable[str] = ()
    ) -> list[Hit]:
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dimension)
        excluded = set(exclude) | item_filter.exclude_item_ids
        if self._only_few_excluded(item_filter, excluded):
            # Cheaper than a selector: fetch a few extra and drop the excluded ones.
            rows, scores = self._faiss_search(query, k + len(excluded), None)
        else:
            rows, scores = self._top_rows(query, k, self._mask(item_filter, excluded))
        hits = [Hit(self._row_ids[r] or "", float(s)) for r, s in zip(rows, scores, strict=True)]
        return [h for h in hits if h.item_id not in excluded][:k]

    def search_boosted(
        self,
        query: np.ndarray,
        k: int,
        item_filter: ItemFilter,
        exclude: Iterable[str],
        boosts: Mapping[str, float],
        pool: int,
    ) -> list[Hit]:
        """Top-k by similarity plus boost. The candidates are the `k + pool` nearest items
        and every boosted item, so a strongly boosted item can win from further away; a
        flat index scores every item instead, which costs less than gathering them."""
        excluded = set(exclude)
        exact = self.exact_scores(query, item_filter, excluded, boosts)
        if exact is not None:
            return exact.top(k)
        nearest = self.search(query, k + pool if boosts else k, item_filter, excluded)
        scores = {h.item_id: h.score + boosts.get(h.item_id, 0.0) for h in nearest}
        extra = [i for i in boosts if i not in scores and self.admits(i, item_filter, excluded)]
        if extra:
            rows = np.asarray([self._rows[i] for i in extra], dtype=np.int64)
            for item_id, similarity in zip(extra, self._vectors(rows) @ query, strict=True):
                scores[item_id] = float(similarity) + boosts[item_id]
        best = sorted(scores.items(), key=lambda pair: -pair[1])[:k]
        return [Hit(item_id, score) for item_id, score in best]

    def admits(self, item_id: str, item_filter: ItemFilter, excluded: set[str]) -> bool:
        row = self._rows.get(item_id)
        if row is None or item_id in excluded or item_id in item_filter.exclude_item_ids:
            return False
        return item_filter.admits_categories(self._row_categories[row])

    def similarities(self, item_ids: Sequence[str], query: np.ndarray) -> np.ndarray:
        """Each item's similarity to the query; NaN for an item this index lacks."""
        found = [n for n, item_id in enumerate(item_ids) if item_id in self._rows]
        scores = np.full(len(item_ids), np.nan, dtype=np.float32)
        rows = np.asarray([self._rows[item_ids[n]] for n in found], dtype=np.int64)
        scores[found] = self._vectors(rows) @ np.asarray(query, dtype=np.float32).reshape(-1)
        return scores

    def _only_few_excluded(self, item_filter: ItemFilter, excluded: set[str]) -> bool:
        return (
            self.dead_rows == 0
            and not item_filter.include_categories
            and not item_filter.exclude_categories
            and not item_filter.require_categories
            and len(excluded) <= 16
        )

    def _top_rows(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if mask is None:
            return self._faiss_search(query, k, None)
        allowed = int(mask.sum())
        if allowed == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.kind == HNSW and allowed <= self.settings.brute_force_limit:
            return self._exact_over(query, k, np.flatnonzero(mask))
        rows, scores = self._faiss_search(query, k, mask)
        if len(rows) < min(k, allowed):  # a selective filter can starve the HNSW walk
            return self._exact_over(query, k, np.flatnonzero(mask))
        return rows, scores

    def _faiss_search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._row_ids))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        bits = None if mask is None else np.packbits(mask, bitorder="little")
        params = None
        if mask is not None or self.kind == HNSW:
            params = self._search_params(k, bits, len(mask) if mask is not None else 0)
        scores, rows = self._faiss.search(query, k, params=params)
        del bits  # the selector points into it: it lives until the search returned
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def _search_params(self, k: int, bits: np.ndarray | None, rows: int) -> faiss.SearchParameters:
        params: Any = faiss.SearchParameters()
        if self.kind == HNSW:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.settings.hnsw_ef_search, k)
        if bits is not None:
            params.sel = faiss.IDSelectorBitmap(rows, faiss.swig_ptr(bits))
        return params

    def _exact_over(
        self, query: np.ndarray, k: int, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self._vectors(rows) @ query[0]
        top = min(k, len(rows))
        best = np.argpartition(-scores, top - 1)[:top]
        order = best[np.argsort(-scores[best], kind="stable")]
        return rows[order], scores[order]

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._faiss.reconstruct_batch(rows)

    def _mask(self, item_filter: ItemFilter, exclude_ids: set[str]) -> np.ndarray | None:
        if item_filter.is_empty() and not exclude_ids and self.dead_rows == 0:
            return None
        mask = self._alive.copy()
        if item_filter.include_categories:
            wanted = np.zeros_like(mask)
            for category in item_filter.include_categories:
                wanted[self._rows_of(category)] = True
            mask &= wanted
        for category in item_filter.require_categories:
            required = np.zeros_like(mask)
            required[self._rows_of(category)] = True
            mask &= required
        for category in item_filter.exclude_categories:
            mask[self._rows_of(category)] = False
        for item_id in exclude_ids:
            row = self._rows.get(item_id)
            if row is not None:
                mask[row] = False
        return mask

    def _rows_of(self, category: str) -> np.ndarray:
        cached = self._category_cache.get(category)
        if cached is None:
            rows = self._category_rows.get(category, set())
            cached = np.fromiter(rows, dtype=np.int64, count=len(rows))
            self._category_cache[category] = cached
        return cached

    def hybrid_scores(
        self,
        query: np.ndarray,
        other: VectorIndex,
        other_query: np.ndarray,
        other_weight: float,
        item_filter: ItemFilter,
        exclude: Iterable[str],
        boosts: Mapping[str, float],
    ) -> RowScores | None:
        """Every row's similarity here plus `other_weight` times the item's similarity in
        `other` (0 where it lacks the item) plus its boost, computed exhaustively; None
        where either index is HNSW, whose sizes make a full pass too slow."""
        theirs = other._flat_matrix()
        if theirs is None:
            return None
        their_scores = None
        if other_weight:
            similarity = other._similarities(theirs, other_query)
            # The appended 0 is what row -1 (an item `other` lacks) picks up.
            their_scores = (
                np.float32(other_weight)
                * np.append(similarity, np.float32(0))[self._rows_in(other)]
            )
        return self.exact_scores(query, item_filter, exclude, boosts, their_scores)

    def exact_scores(
        self,
        query: np.ndarray,
        item_filter: ItemFilter,
        exclude: Iterable[str],
        boosts: Mapping[str, float],
        added: np.ndarray | None = None,
    ) -> RowScores | None:
        """Every row's similarity plus its boost (plus `added`, by row), computed
        exhaustively; None for HNSW, whose sizes make a full pass too slow."""
        mine = self._flat_matrix()
        if mine is None:
            return None
        total = self._similarities(mine, query).copy()
        if added is not None:
            total += added
        if boosts:
            rows = np.fromiter((self._rows.get(i, -1) for i in boosts), np.int64, len(boosts))
            values = np.fromiter(boosts.values(), np.float32, len(boosts))
            known = rows >= 0
            total[rows[known]] += values[known]  # ids are unique: no row is boosted twice
        mask = self._mask(item_filter, set(exclude))
        total[~(self._alive if mask is None else mask)] = -np.inf
        return RowScores(self, total)

    def _similarities(self, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
        """`matrix @ query` over this flat index's rows, read-only. The answers to recent
        queries are kept until the next write: a user who comes back with no new event
        sends the same profile vector (and user-tower vector), and the product over every
        item is most of what a search costs."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        cache = self._similarity_cache
        if self._similarity_changes != self._changes:
            cache.clear()
            self._similarity_changes = self._changes
        key = query.tobytes()
        held = cache.get(key)
        if held is not None:
            cache.move_to_end(key)
            return held
        similarity = matrix @ query
        similarity.flags.writeable = False
        if similarity.nbytes <= self.settings.similarity_cache_bytes:
            cache[key] = similarity
            while len(cache) * similarity.nbytes > self.settings.similarity_cache_bytes:
                cache.popitem(last=False)
        return similarity

    def _flat_matrix(self) -> np.ndarray | None:
        """A flat index's rows (dead ones too) as a matrix view of FAISS's own storage,
        valid until the next write; None for HNSW."""
        if self.kind != FLAT:
            return None
        count = self._faiss.ntotal
        if count == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        flat: Any = self._faiss  # an IndexFlatIP, whose codes are the float vectors
        storage = faiss.rev_swig_ptr(flat.get_xb(), count * self.dimension)
        return np.asarray(storage).reshape(count, self.dimension)

    def _rows_in(self, other: VectorIndex) -> np.ndarray:
        """For each row here, the same item's row in `other`; -1 for a dead row or an item
        `other` lacks. Cached until either index changes."""
        cached = self._row_map
        if cached and cached[0] is other and cached[1:3] == (self._changes, other._changes):
            return cached[3]
        rows = np.fromiter(
            (-1 if item_id is None else other._rows.get(item_id, -1) for item_id in self._row_ids),
            dtype=np.int64,
            count=len(self._row_ids),
        )
        self._row_map = (other, self._changes, other._changes, rows)
        return rows

    def row_hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return [Hit(self._row_ids[r] or "", float(scores[r])) for r in rows]

    def item_rows(self, item_ids: Iterable[str]) -> list[int]:
        return [row for row in (self._rows.get(i) for i in item_ids) if row is not None]

    def category_rows(self, category: str) -> np.ndarray:
        return self._rows_of(category)

    # ---- persistence ------------------------------------------------------------------

    def snapshot(self) -> tuple[faiss.Index, dict[str, object]]:
        meta = {
            "dimension": self.dimension,
            "kind": self.kind,
            "generation": self.generation,
            "row_ids": self._row_ids,
            "row_categories": [sorted(c) for c in self._row_categories],
        }
        return self._faiss, meta

    @classmethod
    def restore(
        cls, index: faiss.Index, meta: dict[str, object], settings: IndexSettings
    ) -> VectorIndex:
        restored = cls(int(str(meta["dimension"])), settings, str(meta["kind"]))
        restored._faiss = index
        restored.generation = int(str(meta["generation"]))
        row_ids = meta["row_ids"]
        row_categories = meta["row_categories"]
        assert isinstance(row_ids, list) and isinstance(row_categories, list)
        if index.ntotal != len(row_ids):
            raise ValueError("snapshot rows do not match its FAISS index")
        restored._row_ids = list(row_ids)
        restored._row_categories = [frozenset(c) for c in row_categories]
        restored._alive = np.array([i is not None for i in restored._row_ids], dtype=bool)
        for row, item_id in enumerate(restored._row_ids):
            if item_id is None:
                continue
            restored._rows[item_id] = row
            for category in restored._row_categories[row]:
                restored._category_rows.setdefault(category, set()).add(row)
        return restored


class RowScores:
    """One query's score for every row of an index; -inf where the filter or the
    exclusions rule the row out."""

    def __init__(self, index: VectorIndex, scores: np.ndarray) -> None:
        self.index = index
        self.scores = scores

    def top(
        self, k: int, require_categories: Iterable[str] = (), skip: Iterable[str] = ()
    ) -> list[Hit]:
        """The best k, among rows carrying every one of `require_categories` and not
        holding an item of `skip`."""
        scores = self.scores
        required = list(require_categories)
        skipped = self.index.item_rows(skip)
        if required or skipped:
            scores = scores.copy()
            for category in required:
                kept = np.full(len(scores), -np.inf, dtype=scores.dtype)
                rows = self.index.category_rows(category)
                kept[rows] = scores[rows]
                scores = kept
            scores[skipped] = -np.inf
        top = min(k, int(np.isfinite(scores).sum()))
        if top <= 0:
            return []
        best = np.argpartition(-scores, top - 1)[:top]
        return self.index.row_hits(best[np.argsort(-scores[best], kind="stable")], scores)


def hybrid_search(
    primary: VectorIndex,
    query: np.ndarray,
    secondary: VectorIndex,
    secondary_query: np.ndarray,
    secondary_weight: float,
    k: int,
    item_filter: ItemFilter,
    exclude: Iterable[str],
    boosts: Mapping[str, float],
    pool: int,
) -> list[Hit]:
    """Top-k items of `primary` by similarity there, plus `secondary_weight` times the
    similarity in `secondary` (0 where it lacks the item), plus boost. The candidates are
    the `k + pool` nearest of each index and every boosted item."""
    excluded = set(exclude)
    candidates = [h.item_id for h in primary.search(query, k + pool, item_filter, excluded)]
    candidates += [
        h.item_id for h in secondary.search(secondary_query, k + pool, item_filter, excluded)
    ]
    candidates += list(boosts)
    unique = [i for i in dict.fromkeys(candidates) if primary.admits(i, item_filter, excluded)]
    if not unique:
        return []
    total = (
        primary.similarities(unique, query)
        + secondary_weight * np.nan_to_num(secondary.similarities(unique, secondary_query))
        + np.asarray([boosts.get(i, 0.0) for i in unique], dtype=np.float32)
    )
    best = np.argsort(-total, kind="stable")[:k]
    return [Hit(unique[b], float(total[b])) for b in best]
