"""Recommend in one process, without gRPC: the gateway's ranking policy (`Recommender`) over
the services' own domain code: features' histories and trending, retrieval's indexes and
the live version's TorchScript user tower (what Triton runs). It answers from a copy of a
suite's stored state, so that the benchmark can put the suite's CPU per call next to what
the same ranking costs with no plumbing at all.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from services.features import Behaviour, CatalogStore, FeaturesConfig, SqliteEventLog
from services.gateway import (
    GatewayConfig,
    Recommendation,
    Recommender,
    RecommendQuery,
    UserVectorCache,
)
from services.retrieval import IndexRegistry, IndexSettings, VectorStore
from services.trainer import InProcessSources
from shared.model_store import ModelStore


def _copy_database(source: Path, target: Path) -> Path:
    """A consistent copy of a SQLite file that a running service may be writing."""
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
    return target


@dataclass(frozen=True)
class SuiteState:
    """Where a suite keeps what Recommend reads (RECSYS_DATA_DIR's layout)."""

    data_dir: Path
    model_dir: Path

    @property
    def events(self) -> Path:
        return self.data_dir / "features" / "events.sqlite3"

    @property
    def catalogue(self) -> Path:
        return self.data_dir / "features" / "catalog.sqlite3"

    @property
    def vectors(self) -> Path:
        return self.data_dir / "retrieval" / "vectors.sqlite3"


class InProcessRecommend:
    """A suite's state copied into this process and ranked by its gateway's policy. Close
    it (or use it as a context manager) to remove the copies."""

    def __init__(self, state: SuiteState, env: Mapping[str, str]) -> None:
        """`env`: the suite's environment, whose settings (RECSYS_GATEWAY_*, the
        trending half-life) the copy ranks by."""
        config = GatewayConfig.from_env(env)
        features = FeaturesConfig.from_env(env)
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-in-process-")
        tmp = Path(self._tmp.name)
        catalogue = CatalogStore(_copy_database(state.catalogue, tmp / "catalog.sqlite3"))
        categories = catalogue.all_categories()
        stored = catalogue.get(sorted(categories))
        titles = {item_id: s.item.title or item_id for item_id, s in stored.items()}
        catalogue.close()
        self.log = SqliteEventLog(_copy_database(state.events, tmp / "events.sqlite3"))
        self.behaviour = Behaviour(self.log, features.trending(), categories)
        self.behaviour.restore()
        self.vectors = VectorStore(_copy_database(state.vectors, tmp / "vectors.sqlite3"))
        self.registry = IndexRegistry(self.vectors, tmp / "snapshots", IndexSettings())
        self.registry.restore()
        store = ModelStore(state.model_dir)
        live = store.live()
        self.model = (
            store.serving(live.version, live.trained_through_offset) if live is not None else None
        )
        tower = None
        if self.model is not None:
            path = store.version_dir(self.model.version) / "torchscript" / "user_tower.pt"
            tower = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            tower.eval()
        self.sources = InProcessSources(self.behaviour, self.registry, titles, tower)
        self.recommender = Recommender(
            config.ranking(), self.sources, UserVectorCache(config.user_vector_cache)
        )

    async def recommend(self, query: RecommendQuery, with_model: bool = True) -> Recommendation:
        return await self.recommender.recommend(query, self.model if with_model else None)

    def close(self) -> None:
        self.log.close()
        self.vectors.close()
        self._tmp.cleanup()

    def __enter__(self) -> InProcessRecommend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
