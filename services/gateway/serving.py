"""Which trained model version the gateway serves, switched atomically.

The gateway follows the model store's live pointer. A new version is taken up only once
Triton reports both of its towers ready and retrieval holds its item index; from then on
each request reads the pair (towers of version N, index of version N) once, at its start,
so a request never mixes versions however a switch falls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
import numpy as np

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from shared.embedding_client import ITEM_TOWER, USER_TOWER, EmbeddingClient
from shared.events import Interaction, interaction_weight
from shared.model_store import ModelStore, ServingInfo, model_name

log = logging.getLogger(__name__)


def user_inputs(
    model: ServingInfo, user_id: str, recent: Sequence[Interaction], first_offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user tower's inputs for one user: recent is newest first (as features returns
    it); the tower wants the latest `history_len` items oldest first, left-padded with 0.
    Items the version does not know are left out (row 0 is padding). The user's own row
    only when the version learned from the user's events in the log (`first_offset`, the
    oldest of them): a user forgotten since is new to every version, whatever its rows."""
    length = model.history_len
    rows = np.zeros((1, length), dtype=np.int64)
    weights = np.zeros((1, length), dtype=np.float32)
    known = [i for i in recent if i.item_id in model.items][:length]
    for position, interaction in enumerate(reversed(known), start=length - len(known)):
        rows[0, position] = model.items[interaction.item_id]
        weights[0, position] = interaction_weight(interaction.type, interaction.value)
    user_row = np.array([[model.user_row(user_id, first_offset)]], dtype=np.int64)
    return user_row, rows, weights


class ServingModel:
    def __init__(
        self,
        store: ModelStore,
        embedding: EmbeddingClient,
        retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
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
        try:
            stats = await self.retrieval.GetIndexStats(
                retrieval_pb2.GetIndexStatsRequest(index=model_name(version)),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError:
            return False
        return stats.size > 0
