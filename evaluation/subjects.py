"""What the protocols evaluate: the suite through its public API, and in-process baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from evaluation.baselines import Recommender
from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2 as api
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from shared.items import Item
from shared.model_store import MODEL_FAMILY
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


class ContinualSuiteSubject(SuiteSubject):
    """The live suite as `make up` runs it, continual trainer included: before each block it
    waits until the trainer has published a version that learned everything logged so far
    (WaitUntilTrained) and the gateway serves it; within a block the trainer goes on
    learning (and tuning its ranking) from the events as they are revealed."""

    def __init__(
        self,
        client: GatewayClient,
        catalogue: Mapping[str, Item],
        name: str,
        trainer: trainer_pb2_grpc.TrainerServiceStub,
        features: features_pb2_grpc.FeaturesServiceStub,
        wait_s: float = 900.0,
    ) -> None:
        super().__init__(client, catalogue, name)
        self.trainer = trainer
        self.features = features
        self.wait_s = wait_s

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.add_items(new_items)
        ends = self.features.ReadEvents(
            features_pb2.ReadEventsRequest(from_offset=1, limit=1), timeout=30
        )
        reply = self.trainer.WaitUntilTrained(
            trainer_pb2.WaitUntilTrainedRequest(offset=ends.end_offset - 1, timeout_s=self.wait_s),
            timeout=self.wait_s + 30,
        )
        if not reply.reached:
            raise RuntimeError(f"the trainer did not train through the log in {self.wait_s} s")
        probe = history[-1].user_id if history else "probe"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            request = api.RecommendRequest(user_id=probe, k=1)
            served = self.client.stub.Recommend(request, timeout=10).model_version
            if served.startswith(MODEL_FAMILY) and int(served.rsplit("-", 1)[1]) >= int(
                reply.live_version.rsplit("-", 1)[1]
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway did not switch to {reply.live_version} within 60 s")

    def ranking(self) -> dict[str, object]:
        """The ranking settings the trainer has chosen, and how often it changed them."""
        status = self.trainer.GetStatus(trainer_pb2.GetStatusRequest(), timeout=30)
        return {
            "settings": dict(status.ranking_settings),
            "changes": status.ranking_changes,
            "last_change": status.last_ranking_change,
            "live_version": status.live_version,
        }
