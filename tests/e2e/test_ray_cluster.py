"""The trainer on a real multi-node Ray cluster started as a user starts one: a head and a
worker node with `ray start`, each its own process tree with its own CPUs, on loopback;
the trainer service joins it as a driver (RAY_ADDRESS), the learner actor is placed by Ray,
and each full retrain is a Ray task that the worker node runs. Killing that node while a
retrain runs fails the retrain, and the learner goes on publishing, nothing twice."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.trainer.v1 import trainer_pb2
from tests.conftest import HOST, free_port
from tests.e2e.harness import TrainerProcess, UserSuite, catalogue
from tests.e2e.test_events import log
from tests.e2e.test_trainer import TRAINER_ENV, ratings

RAY = str(Path(sys.executable).parent / "ray")
LIST_WORKER_NODES = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
for node in ray.nodes():
    if node["Alive"] and "node:__internal_head__" not in node["Resources"]:
        print(node["NodeID"])
"""


class RayCluster:
    """A head (1 CPU: room for the learner actor) and one worker node (2 CPUs: where a
    full retrain, which asks for 1, goes once the actor holds the head's)."""

    def __init__(self) -> None:
        # Short: Ray's unix sockets live below it.
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.port = free_port()
        self.env = dict(
            os.environ,
            RAY_USAGE_STATS_ENABLED="0",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
        )
        self.address = f"{HOST}:{self.port}"
        self.head: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def _node(self, command: list[str], cpus: int) -> subprocess.Popen[bytes]:
        flags = [
            f"--node-ip-address={HOST}",
            f"--num-cpus={cpus}",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--block",
        ]
        return subprocess.Popen(
            [*command, *flags], env=self.env, start_new_session=True, stdout=subprocess.DEVNULL
        )

    def start(self) -> RayCluster:
        self.head = self._node(
            [
                RAY,
                "start",
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.temp_dir}",
            ],
            cpus=1,
        )
        self._wait_for_nodes(1)
        joining = [sys.executable, "-m", "tests.e2e.ray_worker_node", "start"]
        self.worker = self._node([*joining, f"--address={self.address}"], cpus=2)
        self._wait_for_nodes(2)
        return self

    def worker_node_ids(self) -> list[str]:
        """The cluster's live nodes but the head, as a driver that joins it sees them."""
        listed = subprocess.run(
            [sys.executable, "-c", LIST_WORKER_NODES, self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr[-2000:]
        return listed.stdout.split()

    def _wait_for_nodes(self, count: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = subprocess.run(
                [RAY, "status", f"--address={self.address}"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            active = shown.stdout.partition("Active:")[2].partition("Pending:")[0]
            if active.count("node_") == count:
                return
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(1.0)

    def kill_worker(self) -> None:
        """SIGKILL the worker node's whole process tree: its raylet and every worker."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(30)

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None and node.poll() is None:
                node.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.wait(30)
            if node is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    started = RayCluster().start()
    try:
        yield started
    finally:
        started.stop()


def test_full_retrains_run_on_a_worker_node_and_survive_its_death(
    tmp_path: Path, cluster: RayCluster
) -> None:
    suite = UserSuite(tmp_path, external_trainer=True).start()
    env = {**TRAINER_ENV, "RAY_ADDRESS": cluster.address}
    env.update({k: v for k, v in cluster.env.items() if k.startswith("RAY_")})
    trainer = TrainerProcess(suite, env)
    try:
        films = catalogue()
        client = suite.client()
        for start in range(0, len(films), 256):
            client.upsert(films[start : start + 256])
        movies = [m.item_id for m in films]
        trainer.start()
        stub = trainer.stub()

        def status() -> trainer_pb2.GetStatusResponse:
            return stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)

        def trained(offset: int) -> str:
            reply = stub.WaitUntilTrained(
                trainer_pb2.WaitUntilTrainedRequest(offset=offset, timeout_s=240), timeout=250
            )
            assert reply.reached, status()
            return str(reply.live_version)

        first = log(suite, *ratings(movies, 0, 600))
        live = trained(first.last_offset)
        now = status()
        assert now.ray_address == cluster.address
        # The bootstrap retrain ran on the worker node.
        assert cluster.worker_node_ids() == [now.last_full_retrain_node_id], now
        assert now.last_full_retrain_pid > 0

        stub.TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)
        deadline = time.monotonic() + 60
        while not status().full_retrain_running:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
        cluster.kill_worker()
        deadline = time.monotonic() + 120
        while (now := status()).full_retrain_running:
            assert time.monotonic() < deadline, "the retrain never ended after its node died"
            time.sleep(0.5)
        decision = now.last_gate_decision
        assert decision.startswith("full retrain failed: "), decision
        assert "NodeDiedError" in decision or "WorkerCrashedError" in decision, decision
        assert now.live_version == live

        # The learner, on the head, goes on: later events are learned once and published.
        later = log(suite, *ratings(movies, 600, 300))
        newer = trained(later.last_offset)
        assert newer != live
        after = status()
        assert after.events_learned == later.last_offset
        assert after.learned_offset_sum == later.last_offset * (later.last_offset + 1) // 2
        versions = sorted(int(p.name) for p in (suite.model_dir / "versions").iterdir())
        assert versions == sorted(set(versions))
        client.close()
    finally:
        trainer.stop()
        suite.stop()
