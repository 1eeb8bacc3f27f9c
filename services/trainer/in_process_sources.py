"""The gateway's ranking policy's sources over the other services' domain objects, in one
process: features' `Behaviour` (histories, trending, co-occurrence), retrieval's
`IndexRegistry` and a model version's user tower in torch. What ranks exactly as `Recommend`
does where no gRPC is wanted: the trainer's tuner (`ranking_tuner.py`), and, through the
trainer's package, the offline studies and the benchmark's in-process yardstick. It lives
in the trainer, the one service that already holds torch and models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from services.features import Behaviour
from services.gateway import (
    Hit,
    InputsQuery,
    ModelSearch,
    ProfileSearch,
    RankingInputs,
    Related,
    Scored,
    TrendingQuery,
    UserHistory,
)
from services.retrieval import IndexRegistry, ProfileTerm, ReservedSlots
from shared.model_store import ServingInfo


class InProcessSources:
    """RankingSources over the services' domain objects, in this process."""

    def __init__(
        self,
        behaviour: Behaviour,
        registry: IndexRegistry,
        titles: dict[str, str],
        user_tower: torch.nn.Module | None,  # TorchScript's or a trained model's own
    ) -> None:
        self.behaviour = behaviour
        self.registry = registry
        self._titles = titles
        self.user_tower = user_tower

    async def history(self, user_id: str, limit: int, with_seen_ids: bool) -> UserHistory:
        found = self.behaviour.history(user_id, limit, with_seen_ids)
        return UserHistory(found.recent, found.seen, found.first_offset)

    async def ranking_inputs(self, query: InputsQuery) -> RankingInputs:
        found = self.behaviour.history(query.user_id, query.limit, query.with_seen_ids)
        related = (
            self.behaviour.related(
                found, query.related_k, query.profile_half_life_s, query.item_filter
            )
            if query.related_k
            else []
        )
        return RankingInputs(
            UserHistory(found.recent, found.seen, found.first_offset),
            await self.trending(query.trending()) if query.trending_k else [],
            [Related(r.item_id, r.score, r.because) for r in related],
        )

    async def trending(self, query: TrendingQuery) -> list[Scored]:
        found = self.behaviour.trending_items(
            query.k, query.item_filter, query.exclude_item_ids, query.half_life_s
        )
        return [Scored(item_id, score) for item_id, score in found]

    async def user_vector(
        self, model: ServingInfo, user_row: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        assert self.user_tower is not None, "no model version to answer from"
        with torch.inference_mode():
            vector = self.user_tower(
                torch.from_numpy(user_row), torch.from_numpy(rows), torch.from_numpy(weights)
            )
        return np.asarray(vector.numpy(), dtype=np.float32)

    async def search(self, query: ModelSearch) -> list[Hit]:
        profile = (
            ProfileTerm(query.profile_index, query.profile, query.profile_weight)
            if query.profile
            else None
        )
        reserved = (
            ReservedSlots(query.reserved_slots, query.reserved_category)
            if query.reserved_slots
            else None
        )
        hits = self.registry.search(
            query.index,
            query.vector.tolist(),
            query.k,
            query.item_filter,
            query.exclude_item_ids,
            query.boosts,
            profile,
            reserved,
        )
        return [Hit(h.item_id, h.score, reserved=h.reserved) for h in hits]

    async def search_by_profile(self, query: ProfileSearch) -> list[Hit]:
        hits, _ = self.registry.search_by_profile(
            query.index,
            query.profile,
            query.k,
            query.item_filter,
            query.exclude_item_ids,
            query.boosts,
        )
        return [Hit(h.item_id, h.score, h.closest_profile_item_id) for h in hits]

    async def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: self._titles.get(i, i) for i in item_ids}
