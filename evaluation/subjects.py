"""What the protocols evaluate: the suite through its public API, and in-process baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from evaluation.baselines import Recommender
from recsys.gateway.v1 import gateway_pb2 as api
from shared.items import Item
from suite.client import GatewayClient, batches
from suite.datasets import DatasetEvent

LOG_BATCH = 1_000


class SuiteSubject:
    """The live suite: items are upserted when they come to exist, events are logged."""

    def __init__(self, client: GatewayClient, catalogue: Mapping[str, Item], name: str) -> None:
        self.client = client
        self.catalogue = catalogue
        self.name = name

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.add_items(new_items)

    def add_items(self, item_ids: set[str]) -> None:
        items = [self.catalogue.get(i) or Item(i, title=i) for i in sorted(item_ids)]
        for batch in batches(items, 256):
            self.client.upsert(batch)

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]:
        request = api.RecommendRequest(user_id=user_id, k=k)
        reply = self.client.stub.Recommend(request, timeout=self.client.timeout_s)
        return [item.item_id for item in reply.items]

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        for chunk in batches(events, LOG_BATCH):
            request = api.LogEventsRequest(events=[e.to_api() for e in chunk])
            self.client.stub.LogEvents(request, timeout=60)


class ModelSuiteSubject(SuiteSubject):
    """The live suite with the trained model: before each block it learns everything logged
    so far (`recsys train`'s job: read the log, train, publish), like a baseline refitted
    per block, and Recommend answers from the newly published version."""

    def __init__(
        self,
        client: GatewayClient,
        catalogue: Mapping[str, Item],
        name: str,
        train_and_publish: Callable[[], str],
    ) -> None:
        super().__init__(client, catalogue, name)
        self.train_and_publish = train_and_publish
        self.trainings = 0

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.add_items(new_items)
        version = self.train_and_publish()
        self.trainings += 1
        probe = history[-1].user_id if history else "probe"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            request = api.RecommendRequest(user_id=probe, k=1)
            if self.client.stub.Recommend(request, timeout=10).model_version == version:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway did not switch to {version} within 60 s")


class BaselineSubject:
    """An in-process baseline, refitted on everything before each block."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.name = recommender.name

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.recommender.fit(history)

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]:
        return self.recommender.recommend(user_id, k, seen, existing)

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        for event in events:
            self.recommender.observe(event)
