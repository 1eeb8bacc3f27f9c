"""Replicas as a user runs them: `recsys up` with RECSYS_SUITE_REPLICAS, each replica its
own process on its own loopback address at the service's port, as pods run."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.launcher import is_serving
from shared.convert import event_to_proto
from shared.events import Event, EventType
from suite.client import GatewayClient
from tests.conftest import HOST, free_port
from tests.e2e.harness import TOY_STORY, UserSuite, catalogue

SECOND = "127.0.0.2"


def replica_pid(suite: UserSuite, host: str) -> int:
    """The gateway process listening on `host` (its environment says which)."""
    assert suite.process is not None
    pid = suite.process.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RECSYS_GATEWAY_HOST={host}".encode() in environ:
            return int(child)
    raise AssertionError(f"no gateway on {host}")


def recommends_served(host: str, metrics_port: str) -> float:
    """What the replica on `host` says it answered, on its Prometheus port."""
    with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith("grpc_server_started_total") and 'grpc_method="Recommend"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def recommend(stub: gateway_pb2_grpc.GatewayServiceStub, user: str) -> list[str]:
    reply = stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=5), timeout=10)
    return [item.item_id for item in reply.items]


def test_two_gateways_answer_alike_and_one_killed_fails_no_call(tmp_path: Path) -> None:
    metrics = str(free_port())
    replicated = {"RECSYS_SUITE_REPLICAS": "gateway=2"}
    suite = UserSuite(tmp_path, env=replicated)
    suite.env["RECSYS_GATEWAY_METRICS_PORT"] = metrics
    suite.start()
    port = suite.gateway.rsplit(":", 1)[1]
    both = f"ipv4:{suite.gateway},{SECOND}:{port}"
    try:
        client = GatewayClient(both)
        client.upsert(catalogue())
        watched = Event("replica-1", "viewer", TOY_STORY, EventType.VIEW, 0.0, time.time())
        client.stub.LogEvents(
            gateway_pb2.LogEventsRequest(events=[event_to_proto(watched)]), timeout=10
        )
        replicas = [
            gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(a))
            for a in (suite.gateway, f"{SECOND}:{port}")
        ]
        assert recommend(replicas[0], "viewer") == recommend(replicas[1], "viewer")

        outcomes: Counter[str] = Counter()
        ends = time.monotonic() + 4.0

        def caller() -> None:
            while time.monotonic() < ends:
                try:
                    recommend(client.stub, "viewer")
                    outcomes["ok"] += 1
                except grpc.RpcError as error:
                    outcomes[error.code().name] += 1

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for started in callers:
            started.start()
        time.sleep(1.0)
        # Both replicas took the callers' share: the list spreads calls over them.
        assert all(recommends_served(host, metrics) > 5 for host in (HOST, SECOND))
        os.kill(replica_pid(suite, SECOND), signal.SIGKILL)
        for started in callers:
            started.join()
        assert set(outcomes) == {"ok"} and outcomes["ok"] > 20, outcomes

        # The launcher starts the killed replica again, as a ReplicaSet would.
        deadline = time.monotonic() + 60
        while not is_serving(f"{SECOND}:{port}"):
            assert time.monotonic() < deadline, "the killed gateway replica did not come back"
            time.sleep(0.2)
        assert recommend(replicas[1], "viewer") == recommend(replicas[0], "viewer")
        client.close()
    finally:
        suite.stop()
