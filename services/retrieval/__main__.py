"""python -m services.retrieval: nearest-neighbour search over item vectors (FAISS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import faiss
from threadpoolctl import threadpool_limits

from recsys.retrieval.v1 import retrieval_pb2_grpc
from services.retrieval.catch_up import catch_up
from services.retrieval.config import RetrievalConfig
from services.retrieval.indexes import IndexRegistry
from services.retrieval.servicer import SERVICE_NAME, RetrievalServicer
from services.retrieval.vector_store import VectorStore
from shared.server import GrpcService, ServiceBinding, run_main

log = logging.getLogger(__name__)


def build(config: RetrievalConfig) -> GrpcService:
    faiss.omp_set_num_threads(config.faiss_threads)
    # numpy's BLAS too (the hybrid search's matrix products): a pool of spinning threads
    # cost more CPU than the search itself on a small machine.
    threadpool_limits(config.faiss_threads)
    store = VectorStore(config.data_dir / "vectors.sqlite3")
    registry = IndexRegistry(store, config.data_dir / "snapshots", config.index)
    # Before it listens: a write that arrives must find the stored indexes in place.
    registry.restore()
    binding = ServiceBinding(
        SERVICE_NAME,
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server,
        RetrievalServicer(registry),
    )
    snapshots: list[asyncio.Task[None]] = []

    async def snapshot_periodically() -> None:
        while True:
            await asyncio.sleep(config.snapshot_interval_s)
            try:
                await registry.snapshot()
            except OSError:
                log.exception("snapshot failed; the vector store still holds every write")

    async def startup() -> None:
        await catch_up(registry, config.catch_up)
        snapshots.append(asyncio.create_task(snapshot_periodically()))

    async def shutdown() -> None:
        for task in snapshots:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.snapshot()
        store.close()

    return GrpcService("retrieval", config.server, [binding], startup, shutdown)


def main() -> None:
    run_main("retrieval", RetrievalConfig.from_env, build)


if __name__ == "__main__":
    main()
