"""The suite as a user runs it: `recsys up` in its own process, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from bench.memory import ProcessInfo, process_tree, read_processes
from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from recsys.trainer.v1 import trainer_pb2_grpc
from services.launcher import SuiteSpec, reap_group
from shared.convert import event_from_proto
from shared.events import Event
from shared.items import Item
from suite.client import GatewayClient
from suite.datasets import load_movies
from tests.conftest import HOST, free_port, wait_serving

TOY_STORY, TOY_STORY_2, TOY_STORY_3, JUMANJI = "1", "3114", "78499", "2"
RECSYS = str(Path(sys.executable).parent / "recsys")


def catalogue(extra: set[str] | None = None) -> list[Item]:
    """A slice of the shipped MovieLens catalogue that holds the Toy Story films."""
    movies = load_movies()
    wanted = {TOY_STORY_2, TOY_STORY_3} | (extra or set())
    return [m for n, m in enumerate(movies) if n < 400 or m.item_id in wanted]


class UserSuite:
    """`recsys up` in its own process, on free loopback ports, with its own data."""

    def __init__(
        self,
        data_dir: Path,
        trainer: bool = False,
        env: dict[str, str] | None = None,
        external_trainer: bool = False,
    ) -> None:
        """Without `trainer`, models come only from `recsys train` (self.train()), or from
        a TrainerProcess with `external_trainer` (on the port kept for it here)."""
        self.env = dict(os.environ, RECSYS_DATA_DIR=str(data_dir), **(env or {}))
        for service in ("GATEWAY", "FEATURES", "RETRIEVAL", "EMBEDDING", "TRAINER"):
            self.env[f"RECSYS_{service}_PORT"] = str(free_port())
            self.env[f"RECSYS_{service}_METRICS_PORT"] = "0"
        self.with_trainer = trainer
        if not trainer:
            self.env["RECSYS_SUITE_SERVICES"] = "features,retrieval,embedding,gateway"
        self.gateway = f"{HOST}:{self.env['RECSYS_GATEWAY_PORT']}"
        self.trainer = f"{HOST}:{self.env['RECSYS_TRAINER_PORT']}"
        if external_trainer:
            self.env["RECSYS_GATEWAY_TRAINER_ADDRESS"] = self.trainer
        self.process: subprocess.Popen[bytes] | None = None

    def address(self, service: str) -> str:
        """The service's address as `recsys up` gives it to clients: one, or its replicas."""
        return SuiteSpec.from_env(self.env).address(service)

    @property
    def model_dir(self) -> Path:
        return Path(self.env["RECSYS_DATA_DIR"]) / "models"

    def start(self) -> UserSuite:
        self.process = subprocess.Popen([RECSYS, "up"], env=self.env)
        wait_serving(self.gateway, self.process)
        if self.with_trainer:  # the gateway can be ready before the trainer's Ray is
            wait_serving(self.trainer, self.process)
        return self

    def stub(self) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(self.gateway))

    def client(self) -> GatewayClient:
        return GatewayClient(self.gateway)

    def wait_for_version(
        self, version: str, user: str = "u0", timeout_s: float = 30
    ) -> gateway_pb2.RecommendResponse:
        """Recommend for `user` until it answers from `version` (or the time is up); the
        last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            request = gateway_pb2.RecommendRequest(user_id=user, k=10)
            reply = self.stub().Recommend(request, timeout=10)
            if reply.model_version == version or time.monotonic() > deadline:
                return reply
            time.sleep(0.1)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def kill_everything(self) -> None:
        """SIGKILL the launcher and every service it started, as a power cut would."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        self.process.kill()
        self.process.wait(30)
        for child in children:
            while _state(child) != "Z":  # dead (a zombie, or gone) before anyone restarts
                time.sleep(0.05)

    def service_pid(self, name: str) -> int:
        """The process of one service (embedding becomes `tritonserver` when it starts)."""
        assert self.process is not None
        pid = self.process.pid
        marker = "tritonserver" if name == "embedding" else f"services.{name}"
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if marker in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
        raise AssertionError(f"no {name} process under the launcher")

    def processes(self) -> list[ProcessInfo]:
        """Every process of the suite: the launcher, its services and all of theirs (Ray's
        agents and workers, Triton's stubs), re-parented daemons included."""
        assert self.process is not None
        table = read_processes()
        pid = self.process.pid
        found = {p.pid: p for p in process_tree(pid, table)}
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found.update((p.pid, p) for p in process_tree(int(child), table))
        return list(found.values())

    def kill_service(self, name: str) -> None:
        """SIGKILL one service; the launcher then stops the rest and exits."""
        assert self.process is not None
        os.kill(self.service_pid(name), signal.SIGKILL)
        self.process.wait(60)

    def train(self, *args: str, max_seconds: float = 5.0, grace_s: float = 2.0) -> str:
        """`recsys train` against this suite, as an operator runs it; returns its output."""
        env = dict(
            self.env,
            RECSYS_MODEL_DIR=str(self.model_dir),
            RECSYS_TRAINER_MAX_SECONDS=str(max_seconds),
            RECSYS_TRAINER_PUBLISH_GRACE_S=str(grace_s),
        )
        for service in ("features", "retrieval", "embedding"):
            env[f"RECSYS_TRAINER_{service.upper()}_ADDRESS"] = self.address(service)
        done = subprocess.run(
            [RECSYS, "train", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def logged_events(self) -> list[Event]:
        """Everything in the durable log, read straight from the features service."""
        address = f"{HOST}:{self.env['RECSYS_FEATURES_PORT']}"
        stub = features_pb2_grpc.FeaturesServiceStub(grpc.insecure_channel(address))
        events, offset = [], 1
        while True:
            reply = stub.ReadEvents(
                features_pb2.ReadEventsRequest(from_offset=offset, limit=5000), timeout=10
            )
            if not reply.events:
                return events
            events += [event_from_proto(e.event, "event", 0.0) for e in reply.events]
            offset = reply.events[-1].offset + 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()


def files_holding(root: Path, text: str) -> list[str]:
    """Every file under `root` whose bytes contain `text`."""
    needle, found = text.encode(), []
    for path in sorted(root.rglob("*")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return found


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


class TrainerProcess:
    """`python -m services.trainer` against a running suite, as its own process group."""

    def __init__(self, suite: UserSuite, env: dict[str, str] | None = None) -> None:
        data = Path(suite.env["RECSYS_DATA_DIR"])
        self.address = suite.trainer
        self.env = dict(suite.env, **(env or {}))
        self.env.update(
            RECSYS_MODEL_DIR=str(data / "models"),
            RECSYS_TRAINER_STATE_DIR=str(data / "trainer"),
            RECSYS_TRAINER_PORT=self.address.rsplit(":", 1)[1],
            RECSYS_TRAINER_METRICS_PORT="0",
        )
        for service in ("features", "retrieval", "embedding"):
            self.env[f"RECSYS_TRAINER_{service.upper()}_ADDRESS"] = suite.address(service)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.trainer"], env=self.env, start_new_session=True
        )
        wait_serving(self.address, self.process)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        reap_group(self.process.pid)  # its in-process Ray goes with it

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(120)
        reap_group(self.process.pid)
        return code

    def stub(self) -> trainer_pb2_grpc.TrainerServiceStub:
        return trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(self.address))
