"""The `cpu` overlay's pods run as local processes exactly as rendered (tests/e2e/k8s_local.py
says how a pod's network, Service names and volumes are mapped), and the suite then works
through its gateway: a wrong variable name, port, command or probe in a manifest fails
here. The trainer's RayCluster runs too: its head pod (Ray's container as KubeRay commands
it, and the trainer beside it) and its CPU worker group's pod; the GPU group has none."""

from __future__ import annotations

import re
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.gateway.v1 import gateway_pb2
from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from shared.access import new_token
from suite.certs import Authority
from suite.client import GatewayClient
from tests.e2e.harness import TOY_STORY, TOY_STORY_2, catalogue
from tests.e2e.k8s_local import LocalCluster, running
from tests.e2e.test_trainer import ratings
from tests.unit.test_k8s import rendered

pytestmark = pytest.mark.slow
T = TypeVar("T")
# Start order: what each one's readiness waits for first.
WORKLOADS = ["features", "retrieval", "embedding", "RayCluster/recsys", "gateway"]
# The backend's token (read and write) and a reader's, for the gateway; an operator's for
# the trainer's admin calls: made as `recsys token` makes them, only hashes in the Secrets.
BACKEND, BACKEND_LINE = new_token("shop-backend", ["read", "write"])
READER, READER_LINE = new_token("dashboard", ["read"])
OPERATOR, OPERATOR_LINE = new_token("operator", ["admin"])
SECRETS = {
    "recsys-triton-control": {"key": "local-control-key"},
    "recsys-ray-token": {"token": secrets.token_hex(32)},
    "recsys-gateway-tokens": {"tokens": f"{BACKEND_LINE}\n{READER_LINE}\n"},
    "recsys-trainer-tokens": {"tokens": f"{OPERATOR_LINE}\n"},
}
# The CA behind the Issuer `recsys-issuer`: the Certificates' Secrets come from it.
CA = Authority.new("recsys-issuer")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("k8s-cpu")
    with running(rendered("cpu"), WORKLOADS, root, SECRETS, CA) as local:
        yield local


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> grpc.ChannelCredentials:
    """A client certificate of the suite's CA, as an operator's tool would hold."""
    issued = CA.issue(tmp_path_factory.mktemp("operator"), "operator")
    return grpc.ssl_channel_credentials(
        issued.ca.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes()
    )


def test_the_cpu_overlay_run_as_rendered_serves_items_events_and_recommendations(
    cluster: LocalCluster, operator: grpc.ChannelCredentials, tmp_path: Path
) -> None:
    assert [p.name for p in cluster.pods] == [
        "features-0",
        "retrieval-0",
        "retrieval-1",
        "embedding-0",
        "recsys-head",
        "recsys-cpu-worker-0",
        "gateway-0",
        "gateway-1",
    ]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA.pem())
    gateway = cluster.address_of("gateway")
    client = GatewayClient(gateway, token=BACKEND, ca=ca)
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

        # The trainer learns what is logged, publishes it, and the gateways serve it.
        films = [i.item_id for i in catalogue()[:120]]
        rated = client.stub.LogEvents(
            gateway_pb2.LogEventsRequest(events=ratings(films, 0, 200)), timeout=30
        )
        assert rated.accepted == 200
        head = next(p for p in cluster.pods if p.name == "recsys-head")
        with _secure(cluster.address_of("trainer"), operator) as channel:
            reply = trainer_pb2_grpc.TrainerServiceStub(channel).WaitUntilTrained(
                trainer_pb2.WaitUntilTrainedRequest(offset=rated.last_offset, timeout_s=180),
                timeout=190,
            )
        assert reply.reached and reply.live_version, reply
        served = _eventually(
            lambda: (
                client.stub.Recommend(
                    gateway_pb2.RecommendRequest(user_id="k8s-user", k=5), timeout=10
                ).model_version
                == reply.live_version
            )
        )
        assert served, "the gateways never served the published version"

        # The worker the learner actor runs on dies (the head takes no tasks) and KubeRay
        # makes the pod anew: the trainer starts another actor, which resumes from what
        # the first committed and learns what comes after, each event once.
        cluster.kill_and_recreate("recsys-cpu-worker-0", cluster.root / "logs")
        later = client.stub.LogEvents(
            gateway_pb2.LogEventsRequest(events=ratings(films, 200, 100)), timeout=30
        )
        with _secure(cluster.address_of("trainer"), operator) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            wait = trainer_pb2.WaitUntilTrainedRequest(offset=later.last_offset, timeout_s=20)
            deadline = time.monotonic() + 120
            while True:  # UNAVAILABLE until the new actor is up: a client retries
                try:
                    if stub.WaitUntilTrained(wait, timeout=30).reached:
                        break
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert time.monotonic() < deadline, "no new actor learned the later events"
                time.sleep(1.0)
            status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)
        assert status.events_learned == later.last_offset, status
        assert status.learned_offset_sum == later.last_offset * (later.last_offset + 1) // 2
    finally:
        client.close()
    _auth_is_on(gateway, ca, cluster.address_of("trainer"), operator)
    # The served version holds every event: the freshness gauges say so.
    gauges = _eventually(lambda: _trainer_gauges(f"{head.ip}:9154"), until=_caught_up)
    assert gauges["recsys_trainer_live_newest_event_timestamp_seconds"] > now.seconds - 600
    # Every write reached both retrieval replicas (the headless Service's two records).
    for replica in ("retrieval-0", "retrieval-1"):
        ip = next(p.ip for p in cluster.pods if p.name == replica)
        assert _content_size(f"{ip}:50053", operator) == len(items)


def _secure(address: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(address, credentials)


def _auth_is_on(gateway: str, ca: Path, trainer: str, operator: grpc.ChannelCredentials) -> None:
    """What the overlay turns on: no token, no call; a reader cannot write; the trainer's
    admin calls need an admin token even from a suite certificate; the trainer and Ray
    take no plaintext."""
    codes = []
    for token in (None, READER):
        client = GatewayClient(gateway, token=token, ca=ca)
        try:
            event = gateway_pb2.Event(event_id="x", user_id="u", item_id=TOY_STORY)
            client.stub.LogEvents(gateway_pb2.LogEventsRequest(events=[event]), timeout=10)
        except grpc.RpcError as error:
            codes.append(error.code())
        finally:
            client.close()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
    with _secure(trainer, operator) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rollback(trainer_pb2.RollbackRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)
        assert status.live_version
    # Neither the trainer nor Ray's head (its GCS, on the head pod's 127.0.0.1:6379) takes
    # a plaintext call: the handshake fails.
    for address in (trainer, "127.0.0.1:6379"):
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as plain:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE, address


def _content_size(address: str, credentials: grpc.ChannelCredentials) -> int:
    with _secure(address, credentials) as channel:
        stats = retrieval_pb2_grpc.RetrievalServiceStub(channel).GetIndexStats(
            retrieval_pb2.GetIndexStatsRequest(index="content"), timeout=5
        )
    return int(stats.size)


def _eventually(
    read: Callable[[], T], until: Callable[[T], bool] = bool, timeout_s: float = 30.0
) -> T:
    deadline = time.monotonic() + timeout_s
    while not until(value := read()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def _trainer_gauges(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as page:
        text = page.read().decode()
    return {
        m["name"]: float(m["value"])
        for m in re.finditer(r"^(?P<name>recsys_trainer_\w+) (?P<value>\S+)$", text, re.M)
    }


def _caught_up(gauges: dict[str, float]) -> bool:
    return (
        gauges.get("recsys_trainer_events_behind_live", -1) == 0
        and gauges.get("recsys_trainer_oldest_unserved_event_timestamp_seconds", -1) == 0
        and gauges.get("recsys_trainer_live_newest_event_timestamp_seconds", 0) > 0
    )
