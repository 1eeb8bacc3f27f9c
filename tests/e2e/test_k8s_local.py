"""The `cpu` overlay's pods run as local processes exactly as rendered (tests/e2e/k8s_local.py
says how a pod's network, Service names and volumes are mapped), and the suite then works
through its gateway: a wrong variable name, port, command or probe in a manifest fails
here. The trainer's Ray head pod is not run (KubeRay writes its Ray container's command);
its pod templates are validated in tests/unit/test_k8s.py."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.gateway.v1 import gateway_pb2
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from suite.client import GatewayClient
from tests.e2e.harness import TOY_STORY, TOY_STORY_2, catalogue
from tests.e2e.k8s_local import LocalCluster, running
from tests.unit.test_k8s import rendered

pytestmark = pytest.mark.slow
# Start order: what each one's readiness waits for first.
WORKLOADS = ["features", "retrieval", "embedding", "gateway"]
SECRETS = {"recsys-triton-control": {"key": "local-control-key"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("k8s-cpu")
    with running(rendered("cpu"), WORKLOADS, root, SECRETS) as local:
        yield local


def test_the_cpu_overlay_run_as_rendered_serves_items_events_and_recommendations(
    cluster: LocalCluster,
) -> None:
    assert [p.name for p in cluster.pods] == [
        "features-0",
        "retrieval-0",
        "retrieval-1",
        "embedding-0",
        "gateway-0",
        "gateway-1",
    ]
    client = GatewayClient(cluster.address_of("gateway"))
    try:
        items = catalogue()[:120] + [i for i in catalogue() if i.item_id == TOY_STORY_2]
        assert client.upsert(items) == len(items)
        similar = [s.item_id for s in client.similar(TOY_STORY, k=5)]
        assert similar[0] == TOY_STORY_2
        now = Timestamp()
        now.GetCurrentTime()
        event = gateway_pb2.Event(
            event_id="k8s-1",
            user_id="k8s-user",
            item_id=TOY_STORY,
            type=gateway_pb2.EVENT_TYPE_RATE,
            value=5.0,
            timestamp=now,
        )
        logged = client.stub.LogEvents(gateway_pb2.LogEventsRequest(events=[event]), timeout=10)
        assert logged.accepted == 1
        answer = client.stub.Recommend(
            gateway_pb2.RecommendRequest(user_id="k8s-user", k=5), timeout=10
        )
        found = [i.item_id for i in answer.items]
        assert len(found) == 5 and TOY_STORY not in found and not answer.fallback
        assert TOY_STORY_2 in found
    finally:
        client.close()
    # Every write reached both retrieval replicas (the headless Service's two records).
    for replica in ("retrieval-0", "retrieval-1"):
        ip = next(p.ip for p in cluster.pods if p.name == replica)
        assert _content_size(f"{ip}:50053") == len(items)


def _content_size(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stats = retrieval_pb2_grpc.RetrievalServiceStub(channel).GetIndexStats(
            retrieval_pb2.GetIndexStatsRequest(index="content"), timeout=5
        )
    return int(stats.size)
