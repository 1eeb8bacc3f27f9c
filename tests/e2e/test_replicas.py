"""Replicas as a user runs them: `recsys up` with RECSYS_SUITE_REPLICAS, each replica its
own process on its own loopback address at the service's port, as pods run."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc

from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.launcher import is_serving
from shared.convert import event_to_proto
from shared.embedding_client import ITEM_TOWER, USER_TOWER, EmbeddingClient
from shared.events import Event, EventType
from suite.client import GatewayClient
from tests.conftest import HOST, free_port
from tests.e2e.harness import TOY_STORY, UserSuite, catalogue
from tests.e2e.test_events import log
from tests.e2e.test_model import taste_groups

SECOND = "127.0.0.2"


def replica_pid(suite: UserSuite, service: str, host: str) -> int:
    """The process of the `service` replica listening on `host` (its environment says)."""
    assert suite.process is not None
    pid = suite.process.pid
    wanted = f"RECSYS_{service.upper()}_HOST={host}".encode()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if wanted in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return int(child)
    raise AssertionError(f"no {service} on {host}")


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
        os.kill(replica_pid(suite, "gateway", SECOND), signal.SIGKILL)
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


def under_load(
    stub: gateway_pb2_grpc.GatewayServiceStub, seconds: float, during: Callable[[], None]
) -> Counter[str]:
    """4 callers asking Recommend for `seconds`; `during` runs a second in. Counts each
    answer by the version that gave it, or a failure by its code."""
    outcomes: Counter[str] = Counter()
    ends = time.monotonic() + seconds

    def caller(n: int) -> None:
        while time.monotonic() < ends:
            try:
                reply = stub.Recommend(
                    gateway_pb2.RecommendRequest(user_id=f"u{n}", k=5), timeout=10
                )
                outcomes["fallback" if reply.fallback else reply.model_version] += 1
            except grpc.RpcError as error:
                outcomes[error.code().name] += 1

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for started in callers:
        started.start()
    time.sleep(1.0)
    during()
    for started in callers:
        started.join()
    return outcomes


def ready_on_each(suite: UserSuite, version: int) -> list[bool]:
    port = suite.env["RECSYS_EMBEDDING_PORT"]

    async def ask(host: str) -> bool:
        client = EmbeddingClient(f"{host}:{port}", timeout_s=5.0)
        try:
            towers = [await client.ready(tower, version) for tower in (USER_TOWER, ITEM_TOWER)]
        finally:
            await client.close()
        return all(towers)

    return [asyncio.run(ask(host)) for host in (HOST, SECOND)]


def test_every_triton_replica_serves_each_version_and_one_killed_fails_no_call(
    tmp_path: Path,
) -> None:
    suite = UserSuite(tmp_path, env={"RECSYS_SUITE_REPLICAS": "embedding=2"}).start()
    try:
        client = suite.client()
        client.upsert(catalogue())
        events = taste_groups([m.item_id for m in catalogue()])
        for start in range(0, len(events), 500):
            log(suite, *events[start : start + 500])
        assert "published version 1" in suite.train()
        suite.wait_for_version("two-tower-1")
        assert ready_on_each(suite, 1) == [True, True]

        # Triton replica 1 is SIGKILLed under load: the gateway's calls go to the other.
        killed = lambda: os.kill(replica_pid(suite, "embedding", SECOND), signal.SIGKILL)  # noqa: E731
        outcomes = under_load(client.stub, 4.0, killed)
        assert set(outcomes) == {"two-tower-1"} and outcomes["two-tower-1"] > 20, outcomes

        # Started again by the launcher, it loads the live version before it listens.
        port = suite.env["RECSYS_EMBEDDING_PORT"]
        deadline = time.monotonic() + 120
        while not is_serving(f"{SECOND}:{port}"):
            assert time.monotonic() < deadline, "the killed Triton replica did not come back"
            time.sleep(0.5)
        assert ready_on_each(suite, 1) == [True, True]

        assert "published version 2" in suite.train()
        suite.wait_for_version("two-tower-2")
        assert ready_on_each(suite, 2) == [True, True]
        client.close()
    finally:
        suite.stop()
