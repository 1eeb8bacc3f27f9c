"""python -m services.features: the item catalogue and text encoder service."""

from __future__ import annotations

import asyncio

from recsys.features.v1 import features_pb2_grpc
from services.features.behaviour import Behaviour, group_commit
from services.features.catalog import Catalog
from services.features.catalog_store import CatalogStore
from services.features.co_occurrence import CoOccurrence
from services.features.config import FeaturesConfig
from services.features.encoder import TextEncoder
from services.features.event_log import SqliteEventLog
from services.features.servicer import SERVICE_NAME, FeaturesServicer
from shared.server import GrpcService, ServiceBinding, run_main


def build(config: FeaturesConfig) -> GrpcService:
    store = CatalogStore(config.data_dir / "catalog.sqlite3")
    encoder = TextEncoder(batch_size=config.encode_batch_size, threads=config.torch_threads)
    log = SqliteEventLog(config.data_dir / "events.sqlite3")
    catalog = Catalog(store, encoder)
    behaviour = Behaviour(
        log,
        config.trending(),
        catalog.categories,
        lambda: catalog.revision,
        config.history_cache_ids,
        CoOccurrence(config.co_occurrence_window, config.co_occurrence_neighbours),
    )
    commits = group_commit(behaviour)
    binding = ServiceBinding(
        SERVICE_NAME,
        features_pb2_grpc.add_FeaturesServiceServicer_to_server,
        FeaturesServicer(catalog, behaviour, commits),
    )

    async def startup() -> None:
        catalog.restore()
        await asyncio.gather(asyncio.to_thread(encoder.load), asyncio.to_thread(behaviour.restore))

    async def shutdown() -> None:
        await commits.flush()
        log.close()
        store.close()

    return GrpcService("features", config.server, [binding], startup, shutdown)


def main() -> None:
    run_main("features", FeaturesConfig.from_env, build)


if __name__ == "__main__":
    main()
