"""GetStatus on a real gateway over real features and retrieval processes; no embedding
service, so a published version is named live but never taken up for serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shared.convert import timestamp_seconds
from shared.model_store import LiveVersion, ModelStore
from tests.conftest import HOST, ServiceProcess, free_port, wait_serving


class Stack:
    def __init__(self, root: Path) -> None:
        self.models = ModelStore(root / "models")
        self.features = ServiceProcess("features", root / "features")
        self.retrieval = ServiceProcess("retrieval", root / "retrieval")
        self.gateway = ServiceProcess(
            "gateway",
            root / "gateway",
            env={
                "RECSYS_GATEWAY_FEATURES_ADDRESS": self.features.address,
                "RECSYS_GATEWAY_RETRIEVAL_ADDRESS": self.retrieval.address,
                "RECSYS_GATEWAY_EMBEDDING_ADDRESS": f"{HOST}:{free_port()}",
                "RECSYS_MODEL_DIR": str(self.models.root),
            },
        )

    def start(self) -> Stack:
        for dependency in (self.features, self.retrieval):  # started side by side
            dependency.start(wait=False)
        for dependency in (self.features, self.retrieval):
            wait_serving(dependency.address, dependency.process)
        self.gateway.start()
        return self

    def stub(self) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(self.gateway.channel())

    def stop(self) -> None:
        for service in (self.gateway, self.retrieval, self.features):
            service.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("status")).start()
    yield running
    running.stop()


def view(n: int) -> gateway_pb2.Event:
    return gateway_pb2.Event(
        event_id=f"status-{n}",
        user_id="u",
        item_id="i",
        type=gateway_pb2.EVENT_TYPE_VIEW,
        timestamp=Timestamp(seconds=1_600_000_000),
    )


def status(stack: Stack) -> gateway_pb2.GetStatusResponse:
    return stack.stub().GetStatus(gateway_pb2.GetStatusRequest(), timeout=10)


def test_get_status_counts_every_logged_event_as_behind_when_no_model_is_published(
    stack: Stack,
) -> None:
    logged_at = time.time()
    logged = stack.stub().LogEvents(
        gateway_pb2.LogEventsRequest(events=[view(1), view(2), view(3)]), timeout=10
    )
    reply = status(stack)
    assert (reply.serving_version, reply.live_version, reply.previous_version) == (
        "content-profile",
        "",
        "",
    )
    assert not reply.HasField("published_at")
    assert (reply.trained_offset, reply.log_end_offset) == (0, logged.last_offset + 1)
    assert reply.events_behind == 3
    assert reply.newest_event_age_s == 0.0
    assert 0.0 < reply.oldest_missing_event_age_s <= time.time() - logged_at + 0.01


def test_get_status_reports_the_live_version_and_the_events_it_lacks(stack: Stack) -> None:
    stub = stack.stub()
    first = stub.LogEvents(gateway_pb2.LogEventsRequest(events=[view(10), view(11)]), timeout=10)
    now = time.time()
    stack.models.set_live(
        LiveVersion(
            version=2,
            published_at=now - 5,
            trained_through_offset=first.last_offset,
            previous=1,
            newest_event_appended_at=now - 60,
        )
    )
    try:
        time.sleep(0.05)
        last = stub.LogEvents(gateway_pb2.LogEventsRequest(events=[view(12), view(13)]), timeout=10)
        reply = status(stack)
    finally:
        (stack.models.root / "live.json").unlink()
    assert reply.serving_version == "content-profile"  # no embedding service to take it up
    assert (reply.live_version, reply.previous_version) == ("two-tower-2", "two-tower-1")
    assert abs(timestamp_seconds(reply.published_at) - (now - 5)) < 0.01
    assert (reply.trained_offset, reply.log_end_offset) == (first.last_offset, last.last_offset + 1)
    assert reply.events_behind == 2
    assert 60.0 <= reply.newest_event_age_s < 70.0
    assert 0.0 < reply.oldest_missing_event_age_s < time.time() - now
