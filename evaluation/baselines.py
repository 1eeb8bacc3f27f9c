"""In-process baselines replayed with the same protocols as the suite.

recommend() runs tens of thousands of times per replay, so every model scores the whole
catalogue as one numpy array and masks it, rather than looping over items in Python.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import sparse

from suite.datasets import DatasetEvent

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class Recommender(Protocol):
    name: str

    def fit(self, history: Sequence[DatasetEvent]) -> None:
        """Replace all state with what the events before the current block say."""
        ...

    def observe(self, event: DatasetEvent) -> None:
        """One more event revealed between fits."""
        ...

    def recommend(self, user_id: str, k: int, exclude: set[str], candidates: set[str]) -> list[str]:
        """Up to k ids from candidates, none from exclude, best first."""
        ...


class _Catalogue:
    """Item columns, their interaction counts, and the ranking shared by every baseline."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self._column: dict[str, int] = {}
        self._ids: list[str] = []
        self._counts: IntArray = np.zeros(1024, dtype=np.int64)
        self._mask_source: set[str] | None = None
        self._mask_length = -1
        self._mask: BoolArray = np.zeros(0, dtype=np.bool_)
        for item in items:
            self.column(item)

    @property
    def size(self) -> int:
        return len(self._ids)

    @property
    def counts(self) -> IntArray:
        return self._counts[: self.size]

    def column(self, item: str) -> int:
        """The item's column, added with a zero count the first time it is met."""
        column = self._column.get(item)
        if column is None:
            column = len(self._ids)
            self._column[item] = column
            self._ids.append(item)
            if column >= self._counts.size:
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
        return column

    def known_column(self, item: str) -> int | None:
        return self._column.get(item)

    def add_count(self, item: str, delta: int) -> None:
        column = self.column(item)  # may grow the counts array, so look it up first
        self._counts[column] += delta

    def allowed(self, candidates: set[str], exclude: set[str]) -> BoolArray:
        mask = self._candidate_mask(candidates).copy()
        excluded = [self._column[item] for item in exclude if item in self._column]
        mask[excluded] = False
        return mask

    def top(self, scores: FloatArray, allowed: BoolArray, k: int) -> list[str]:
        """The k best allowed columns by score, ties to the more popular, then the older."""
        columns = np.flatnonzero(allowed)
        if k <= 0 or columns.size == 0:
            return []
        chosen = columns if columns.size <= k else self._best_columns(scores, columns, k)
        order = np.lexsort((-self._popularity_key(chosen), -scores[chosen]))
        return [self._ids[column] for column in chosen[order]]

    def _best_columns(self, scores: FloatArray, columns: IntArray, k: int) -> IntArray:
        values = scores[columns]
        threshold = np.partition(values, columns.size - k)[columns.size - k]
        above = columns[values > threshold]
        tied = columns[values == threshold]
        needed = k - above.size
        tied_keys = self._popularity_key(tied)
        if tied.size > needed:
            tied = tied[np.argpartition(-tied_keys, needed - 1)[:needed]]
        return np.concatenate([above, tied])

    def _popularity_key(self, columns: IntArray) -> IntArray:
        # Distinct per item: count first, then earlier-seen items win count ties.
        return self._counts[columns] * (self.size + 1) - columns

    def _candidate_mask(self, candidates: set[str]) -> BoolArray:
        # Callers pass the same set object until the catalogue grows, so one mask serves
        # many calls; holding the set itself keeps its id from being reused by another.
        if self._mask_source is not candidates or self._mask_length != len(candidates):
            self._mask = self._build_mask(candidates)
            self._mask_source = candidates
            self._mask_length = len(candidates)
        if self._mask.size < self.size:
            padding = np.zeros(self.size - self._mask.size, dtype=np.bool_)
            self._mask = np.concatenate([self._mask, padding])
        return self._mask

    def _build_mask(self, candidates: set[str]) -> BoolArray:
        columns = [self.column(item) for item in candidates]
        mask = np.zeros(self.size, dtype=np.bool_)
        mask[columns] = True
        return mask


class MostPopular:
    """Items ranked by all-time interaction count."""

    name = "most-popular"

    def __init__(self) -> None:
        self._catalogue = _Catalogue()

    def fit(self, history: Sequence[DatasetEvent]) -> None:
        self._catalogue = _Catalogue()
        for event in history:
            self._catalogue.add_count(event.item_id, 1)

    def observe(self, event: DatasetEvent) -> None:
        self._catalogue.add_count(event.item_id, 1)

    def recommend(self, user_id: str, k: int, exclude: set[str], candidates: set[str]) -> list[str]:
        allowed = self._catalogue.allowed(candidates, exclude)
        scores = self._catalogue.counts.astype(np.float64)
        return self._catalogue.top(scores, allowed, k)


class RecentlyPopular:
    """Items ranked by their count among the latest `window` events."""

    name = "recently-popular"

    def __init__(self, window: int = 5000) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self._window_size = window
        self._catalogue = _Catalogue()
        self._window: deque[str] = deque()

    def fit(self, history: Sequence[DatasetEvent]) -> None:
        self._catalogue = _Catalogue()
        self._window = deque()
        latest = sorted(history, key=lambda event: event.timestamp)[-self._window_size :]
        for event in latest:
            self.observe(event)

    def observe(self, event: DatasetEvent) -> None:
        self._window.append(event.item_id)
        self._catalogue.add_count(event.item_id, 1)
        if len(self._window) > self._window_size:
            self._catalogue.add_count(self._window.popleft(), -1)

    def recommend(self, user_id: str, k: int, exclude: set[str], candidates: set[str]) -> list[str]:
        allowed = self._catalogue.allowed(candidates, exclude)
        scores = self._catalogue.counts.astype(np.float64)
        return self._catalogue.top(scores, allowed, k)


class ItemKNN:
    """Item-based collaborative filtering: cosine similarity on the binary user x item matrix.

    With `neighbours` unset, a candidate's score is the sum of its cosine similarities to
    every item of the user's profile, computed through the user x item matrix so the item x
    item matrix never exists. With `neighbours` set, fit() keeps only each item's most
    similar items (a sparse, pruned item x item matrix; ties at the cut are kept in no
    particular order) and only those contribute.
    """

    name = "item-knn"

    def __init__(self, neighbours: int | None = None) -> None:
        if neighbours is not None and neighbours <= 0:
            raise ValueError(f"neighbours must be positive, got {neighbours}")
        self._neighbours = neighbours
        self._catalogue = _Catalogue()
        self._fit_items = 0
        self._matrix: sparse.csr_matrix = sparse.csr_matrix((0, 0))
        self._matrix_t: sparse.csr_matrix = sparse.csr_matrix((0, 0))
        self._norms: FloatArray = np.zeros(0)
        self._pruned_t: sparse.csr_matrix | None = None
        self._profiles: dict[str, set[str]] = {}
        self._profile_columns: dict[str, list[int]] = {}

    def fit(self, history: Sequence[DatasetEvent]) -> None:
        self._catalogue = _Catalogue(event.item_id for event in history)
        self._fit_items = self._catalogue.size
        self._profiles = {}
        self._profile_columns = {}
        for event in history:
            self.observe(event)
        self._matrix = self._user_item_matrix()
        self._matrix_t = self._matrix.T.tocsr()
        self._norms = np.sqrt(np.asarray(self._matrix.sum(axis=0), dtype=np.float64).ravel())
        self._pruned_t = None if self._neighbours is None else self._pruned_similarity_t()

    def observe(self, event: DatasetEvent) -> None:
        self._catalogue.add_count(event.item_id, 1)
        profile = self._profiles.setdefault(event.user_id, set())
        if event.item_id in profile:
            return
        profile.add(event.item_id)
        column = self._catalogue.known_column(event.item_id)
        # Items that arrived after fit have no column in the matrix, so they add nothing.
        if column is not None and column < self._fit_items:
            self._profile_columns.setdefault(event.user_id, []).append(column)

    def recommend(self, user_id: str, k: int, exclude: set[str], candidates: set[str]) -> list[str]:
        allowed = self._catalogue.allowed(candidates, exclude)
        scores = np.zeros(self._catalogue.size)
        scores[: self._fit_items] = self._similarity_scores(user_id)
        return self._catalogue.top(scores, allowed, k)

    def _similarity_scores(self, user_id: str) -> FloatArray:
        columns = self._profile_columns.get(user_id)
        if not columns:
            return np.zeros(self._fit_items)
        if self._pruned_t is not None:
            profile = np.zeros(self._fit_items)
            profile[columns] = 1.0
            return np.asarray(self._pruned_t @ profile, dtype=np.float64)
        weights = np.zeros(self._fit_items)
        weights[columns] = 1.0 / self._norms[columns]
        return np.asarray(self._matrix_t @ (self._matrix @ weights), dtype=np.float64) / self._norms

    def _user_item_matrix(self) -> sparse.csr_matrix:
        rows: list[int] = []
        columns: list[int] = []
        for row, item_columns in enumerate(self._profile_columns.values()):
            rows.extend([row] * len(item_columns))
            columns.extend(item_columns)
        shape = (len(self._profile_columns), self._fit_items)
        values = np.ones(len(rows))
        return sparse.csr_matrix((values, (rows, columns)), shape=shape)

    def _pruned_similarity_t(self, chunk: int = 512) -> sparse.csr_matrix:
        # Row blocks of the item x item product, each pruned before the next is made.
        assert self._neighbours is not None
        blocks = [
            self._pruned_rows(start, min(start + chunk, self._fit_items), self._neighbours)
            for start in range(0, self._fit_items, chunk)
        ]
        if not blocks:
            return sparse.csr_matrix((self._fit_items, self._fit_items))
        return sparse.csr_matrix(sparse.vstack(blocks, format="csr").T)

    def _pruned_rows(self, start: int, stop: int, neighbours: int) -> sparse.csr_matrix:
        block = (self._matrix_t[start:stop] @ self._matrix).toarray()
        block /= self._norms[start:stop, None]
        block /= self._norms[None, :]
        rows = np.arange(stop - start)
        block[rows, rows + start] = 0.0
        keep = min(neighbours, self._fit_items - 1)
        if keep <= 0:
            return sparse.csr_matrix(block.shape)
        nearest = np.argpartition(block, -keep, axis=1)[:, -keep:]
        values = np.take_along_axis(block, nearest, axis=1)
        pointers = np.arange(0, nearest.size + 1, keep)
        pruned = sparse.csr_matrix((values.ravel(), nearest.ravel(), pointers), shape=block.shape)
        pruned.eliminate_zeros()
        return pruned


class PerEventALS:
    """Matrix factorisation by alternating least squares (the `implicit` package) on the
    binary user x item matrix, refitted per block; the user's factors are solved again
    from everything they did, revealed events included, at every recommend, so that it
    follows each new event as the suite does. Items that arrived after the fit score 0."""

    name = "als (per-event user factors)"

    def __init__(
        self, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, seed: int = 0
    ) -> None:
        self._settings = {
            "factors": factors,
            "regularization": regularization,
            "alpha": alpha,
            "random_state": seed,
        }
        self._catalogue = _Catalogue()
        self._fit_items = 0
        self._profiles: dict[str, set[str]] = {}
        self._profile_columns: dict[str, list[int]] = {}
        self._item_factors: FloatArray = np.zeros((0, factors))
        self._model: object | None = None

    def fit(self, history: Sequence[DatasetEvent]) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self._catalogue = _Catalogue(event.item_id for event in history)
        self._fit_items = self._catalogue.size
        self._profiles = {}
        self._profile_columns = {}
        for event in history:
            self.observe(event)
        users = list(self._profile_columns.values())
        matrix = sparse.csr_matrix(
            (
                np.ones(sum(len(c) for c in users), dtype=np.float32),
                (np.repeat(np.arange(len(users)), [len(c) for c in users]), np.concatenate(users)),
            ),
            shape=(len(users), self._fit_items),
        )
        model = AlternatingLeastSquares(**self._settings)
        with threadpool_limits(1, "blas"):  # implicit runs its own threads
            model.fit(matrix, show_progress=False)
        self._model = model
        self._item_factors = np.asarray(model.item_factors, dtype=np.float64)

    def observe(self, event: DatasetEvent) -> None:
        self._catalogue.add_count(event.item_id, 1)
        profile = self._profiles.setdefault(event.user_id, set())
        if event.item_id in profile:
            return
        profile.add(event.item_id)
        column = self._catalogue.known_column(event.item_id)
        if column is not None and column < self._fit_items:
            self._profile_columns.setdefault(event.user_id, []).append(column)

    def recommend(self, user_id: str, k: int, exclude: set[str], candidates: set[str]) -> list[str]:
        allowed = self._catalogue.allowed(candidates, exclude)
        scores = np.zeros(self._catalogue.size)
        columns = self._profile_columns.get(user_id)
        if columns and self._model is not None:
            row = sparse.csr_matrix(
                (np.ones(len(columns), dtype=np.float32), ([0] * len(columns), columns)),
                shape=(1, self._fit_items),
            )
            factors = np.asarray(self._model.recalculate_user(0, row), dtype=np.float64)  # type: ignore[attr-defined]
            scores[: self._fit_items] = self._item_factors @ factors.ravel()
        return self._catalogue.top(scores, allowed, k)
