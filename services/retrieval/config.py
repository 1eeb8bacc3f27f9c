from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.retrieval.catch_up import CatchUpSettings
from services.retrieval.indexes import MAX_EXPORT_PAGE
from services.retrieval.vector_index import IndexSettings
from shared.config import NO_ADDRESS, Env, data_root
from shared.server_config import ServerConfig

PREFIX = "RECSYS_RETRIEVAL_"


@dataclass(frozen=True)
class RetrievalConfig:
    server: ServerConfig
    data_dir: Path
    index: IndexSettings
    snapshot_interval_s: float
    faiss_threads: int
    catch_up: CatchUpSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetrievalConfig:
        env = Env(PREFIX, environ)
        defaults = IndexSettings()
        return cls(
            server=ServerConfig.from_env(env, "retrieval"),
            data_dir=env.path("DATA_DIR", data_root(environ) / "retrieval"),
            index=IndexSettings(
                hnsw_threshold=env.integer("HNSW_THRESHOLD", defaults.hnsw_threshold, minimum=1),
                hnsw_m=env.integer("HNSW_M", defaults.hnsw_m, minimum=4, maximum=256),
                hnsw_ef_construction=env.integer(
                    "HNSW_EF_CONSTRUCTION", defaults.hnsw_ef_construction, minimum=8
                ),
                hnsw_ef_search=env.integer("HNSW_EF_SEARCH", defaults.hnsw_ef_search, minimum=8),
                brute_force_limit=env.integer("BRUTE_FORCE_LIMIT", defaults.brute_force_limit),
                similarity_cache_bytes=env.integer(
                    "SIMILARITY_CACHE_BYTES", defaults.similarity_cache_bytes, minimum=0
                ),
            ),
            snapshot_interval_s=env.number("SNAPSHOT_INTERVAL_S", 30.0, minimum=0.1),
            # One thread a query keeps tail latency low when many callers search at once.
            faiss_threads=env.integer("FAISS_THREADS", 1, minimum=1, maximum=256),
            # Every replica's address, this one's too (the launcher sets it; on Kubernetes
            # the headless Service): a replica that starts copies from one serving.
            catch_up=CatchUpSettings(
                peers=env.optional_address("PEERS", NO_ADDRESS),
                settle_s=env.number("CATCH_UP_SETTLE_S", 0.5, minimum=0.0),
                page=env.integer("CATCH_UP_PAGE", 2_000, minimum=1, maximum=MAX_EXPORT_PAGE),
                timeout_s=env.number("CATCH_UP_TIMEOUT_S", 30.0, minimum=0.1),
            ),
        )
