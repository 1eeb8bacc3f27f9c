"""The gateway's own ranking policy replayed offline: `services.gateway.Recommender` over
the services' domain code in this process (features' `Behaviour` for the log, histories
and trending; retrieval's `IndexRegistry` for the content index and the version's index),
with each block's trained model as the user tower. The offline studies rank with this,
so their figures and the served ranking cannot drift apart."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.features import Behaviour, SqliteEventLog, Trending
from services.gateway import GatewayConfig, Recommender, RecommendQuery
from services.retrieval import IndexRegistry, IndexSettings, Record, VectorStore
from services.trainer import InProcessSources, TrainedModel, embed_items, serving_info
from shared.items import CONTENT_INDEX
from shared.model_store import ServingInfo, index_categories
from suite.datasets import DatasetEvent, load_movies

UPSERT_BATCH = 1_000


class PerBlockModels(Protocol):
    """What trains (or loads) the model a block is ranked with (`TrainedPerBlock`)."""

    def get(self, history: Sequence[DatasetEvent]) -> TrainedModel: ...


@functools.cache
def movie_categories() -> dict[str, tuple[str, ...]]:
    """Each MovieLens movie's genres: its categories in the catalogue."""
    return {movie.item_id: tuple(movie.categories) for movie in load_movies()}


def _chunks(records: list[Record]) -> Iterator[list[Record]]:
    for start in range(0, len(records), UPSERT_BATCH):
        yield records[start : start + UPSERT_BATCH]


class ServedPolicySubject:
    """A subject of the replay protocols that answers as `Recommend` would: from the block's
    model (`models` given), or from the content profile (`models` None)."""

    def __init__(
        self,
        name: str,
        categories: Mapping[str, Sequence[str]],
        content: Mapping[str, np.ndarray],
        models: PerBlockModels | None,
        trending_half_life_s: float,
        **settings: Any,
    ) -> None:
        """`settings`: RankingSettings fields changed from the gateway's defaults."""
        self.name = name
        self.categories = categories
        self.content = content
        self.models = models
        self.trending_half_life_s = trending_half_life_s
        self.settings = dataclasses.replace(GatewayConfig.from_env({}).ranking(), **settings)
        self.block = -1
        self.version = 0
        self._loop = asyncio.new_event_loop()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.block += 1
        self.close_block()
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-served-policy-")
        tmp = Path(self._tmp.name)
        # The catalogue as the protocol has it then: every item with an event, and the new.
        existing = sorted({e.item_id for e in history} | new_items)
        catalogue = {i: tuple(self.categories.get(i, ())) for i in existing}
        self.log = SqliteEventLog(tmp / "events.sqlite3")
        self.behaviour = Behaviour(self.log, Trending(self.trending_half_life_s), catalogue)
        self._log(history)
        self.vectors = VectorStore(tmp / "vectors.sqlite3")
        self.registry = IndexRegistry(self.vectors, tmp / "snapshots", IndexSettings())
        with_content = [i for i in catalogue if i in self.content]
        self._upsert(
            CONTENT_INDEX,
            [Record(i, self.content[i].tolist(), catalogue[i]) for i in with_content],
        )
        self.sources = InProcessSources(self.behaviour, self.registry, {}, None)
        self.recommender = Recommender(self.settings, self.sources)
        self.model: ServingInfo | None = None
        self._catalogue = catalogue
        if self.models is not None:
            self.serve(self.model_for(history))

    def model_for(self, history: Sequence[DatasetEvent]) -> TrainedModel:
        """The model a block starts with: by default the one trained on its history."""
        assert self.models is not None
        return self.models.get(history)

    def serve(self, trained: TrainedModel) -> None:
        """Publishes `trained` as the next version, as the trainer does: the catalogue's
        item vectors in the version's own index (the items it has not learned marked so),
        then the switch; the previous version's index goes."""
        previous = self.model
        self.version += 1
        model = serving_info(trained, self.version)
        catalogue = self._catalogue
        vectors = embed_items(trained, list(catalogue), self.content)
        rows = trained.items.rows(list(catalogue))
        self._upsert(
            model.name,
            [
                Record(i, vectors[n].tolist(), index_categories(catalogue[i], int(rows[n])))
                for n, i in enumerate(catalogue)
            ],
        )
        self.sources.user_tower = trained.model.user_tower.eval()
        self.model = model
        if previous is not None:
            self._loop.run_until_complete(self.registry.drop(previous.name))

    def _upsert(self, index: str, records: list[Record]) -> None:
        for chunk in _chunks(records):
            self._loop.run_until_complete(self.registry.upsert(index, chunk))

    def _log(self, events: Sequence[DatasetEvent]) -> None:
        """Logged with their place in the stream as ids: no two alike, so that the log's
        offsets are the stream's (the trainer's `logged` numbers them the same way)."""
        start = self.log.end_offset()
        stream = [
            dataclasses.replace(e.to_event(), event_id=f"event-{start + n}")
            for n, e in enumerate(events)
        ]
        self.behaviour.append([stream])

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]:
        answer = self._loop.run_until_complete(
            self.recommender.recommend(RecommendQuery(user_id, k), self.model)
        )
        return [item.item_id for item in answer.items]

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        self._log(events)

    def close_block(self) -> None:
        if self._tmp is not None:
            self.log.close()
            self.vectors.close()
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        self.close_block()
        self._loop.close()
