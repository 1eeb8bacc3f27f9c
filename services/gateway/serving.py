"""Which trained model version the gateway serves, switched atomically.

The gateway follows the model store's live pointer. A new version is taken up only once
Triton reports both of its towers ready and every retrieval replica holds its item
index (on every replica of each that is up); from then on
each request reads the pair (towers of version N, index of version N) once, at its start,
so a request never mixes versions however a switch falls.
"""

from __future__ import annotations

import asyncio
import logging

from shared.embedding_client import ITEM_TOWER, USER_TOWER, EmbeddingClient
from shared.model_store import ModelStore, ServingInfo, model_name
from shared.retrieval_client import ReplicatedRetrieval

log = logging.getLogger(__name__)


class ServingModel:
    def __init__(
        self,
        store: ModelStore,
        embedding: EmbeddingClient,
        retrieval: ReplicatedRetrieval,
        poll_s: float,
        timeout_s: float,
    ) -> None:
        self.store = store
        self.embedding = embedding
        self.retrieval = retrieval
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.current: ServingInfo | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("could not follow the live model version")
            await asyncio.sleep(self.poll_s)

    async def refresh(self) -> bool:
        """Takes up the live version if it changed and is ready everywhere; True if it did."""
        live = await asyncio.to_thread(self.store.live)
        if live is None or (self.current and self.current.version == live.version):
            return False
        if not await self._ready(live.version):
            return False
        info = await asyncio.to_thread(
            self.store.serving, live.version, live.trained_through_offset
        )
        previous = self.current.version if self.current else None
        self.current = info  # one reference swap: requests read it once each
        log.info("serving model version", extra={"version": live.version, "previous": previous})
        return True

    async def _ready(self, version: int) -> bool:
        towers = await asyncio.gather(
            self.embedding.ready(USER_TOWER, version, self.timeout_s),
            self.embedding.ready(ITEM_TOWER, version, self.timeout_s),
        )
        if not all(towers):
            return False
        return await self.retrieval.size_on_every_replica(model_name(version), self.timeout_s) > 0
