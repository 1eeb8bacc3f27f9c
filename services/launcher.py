"""Runs the whole suite as local processes on loopback: each service in its own process,
started in dependency order, stopped with SIGTERM (then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.config import (
    DEFAULT_HOST,
    DEFAULT_METRICS_PORTS,
    DEFAULT_PORTS,
    NO_ADDRESS,
    Env,
    data_root,
)

# Start order: the gateway last, since it is ready only once the others are.
SERVICES = ("features", "retrieval", "embedding", "trainer", "gateway")
# Without the continual trainer: models come only from explicit `recsys train` jobs.
WITHOUT_TRAINER = tuple(s for s in SERVICES if s != "trainer")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class SuiteSpec:
    data_dir: Path
    host: str = DEFAULT_HOST
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))
    log_dir: Path | None = None  # None: services log to this process's stderr
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES  # which ones run, in start order

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SuiteSpec:
        ports = {
            s: Env(f"RECSYS_{s.upper()}_", environ).integer("PORT", p, 1, 65535)
            for s, p in DEFAULT_PORTS.items()
        }
        metrics = {
            s: Env(f"RECSYS_{s.upper()}_", environ).integer("METRICS_PORT", p, 0, 65535)
            for s, p in DEFAULT_METRICS_PORTS.items()
        }
        return cls(
            data_dir=data_root(environ),
            ports=ports,
            metrics_ports=metrics,
            services=services_from(Env("RECSYS_SUITE_", environ).string("SERVICES", "")),
        )

    @classmethod
    def on_free_ports(
        cls,
        data_dir: Path,
        log_dir: Path | None = None,
        services: tuple[str, ...] = SERVICES,
        extra_env: Mapping[str, str] | None = None,
    ) -> SuiteSpec:
        """A private suite (benchmarks, evaluations): free loopback ports, no metrics."""
        ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        return cls(
            data_dir=data_dir,
            ports=ports,
            metrics_ports={service: 0 for service in SERVICES},
            log_dir=log_dir,
            extra_env=dict(extra_env or {}),
            services=services,
        )

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    @property
    def model_dir(self) -> Path:
        """Trained versions, Triton's model repository and the live-version pointer."""
        return self.data_dir / "models"

    def with_log_dir(self, log_dir: Path) -> SuiteSpec:
        return replace(self, log_dir=log_dir)

    def env_for(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        prefix = f"RECSYS_{service.upper()}_"
        env.update(
            {
                "RECSYS_DATA_DIR": str(self.data_dir),
                "RECSYS_MODEL_DIR": str(self.model_dir),
                f"{prefix}HOST": self.host,
                f"{prefix}PORT": str(self.ports[service]),
                f"{prefix}METRICS_PORT": str(self.metrics_ports[service]),
                f"{prefix}DATA_DIR": str(self.data_dir / service),
            }
        )
        if service in ("gateway", "trainer"):
            env[f"{prefix}FEATURES_ADDRESS"] = self.address("features")
            env[f"{prefix}RETRIEVAL_ADDRESS"] = self.address("retrieval")
            env[f"{prefix}EMBEDDING_ADDRESS"] = self.address("embedding")
        if service == "gateway" and "trainer" in self.services:
            env[f"{prefix}TRAINER_ADDRESS"] = self.address("trainer")
        elif service == "gateway":  # a trainer running elsewhere is named by the caller
            env.setdefault(f"{prefix}TRAINER_ADDRESS", NO_ADDRESS)
        if service == "trainer":
            env[f"{prefix}STATE_DIR"] = str(self.data_dir / service)
        return env


def services_from(listed: str) -> tuple[str, ...]:
    """RECSYS_SUITE_SERVICES: a comma-separated subset of SERVICES ("" means all of them)."""
    if not listed.strip():
        return SERVICES
    wanted = {name.strip() for name in listed.split(",") if name.strip()}
    unknown = wanted - set(SERVICES)
    if unknown:
        raise ValueError(f"RECSYS_SUITE_SERVICES names unknown services: {sorted(unknown)}")
    return tuple(s for s in SERVICES if s in wanted)


def free_ports(count: int, host: str = DEFAULT_HOST) -> list[int]:
    """Ports the OS hands out for port 0; all held open at once so they differ."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_serving(address: str, timeout_s: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL, so that
    no service outlives the process that supervises it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def reap_group(leader: int) -> None:
    """Ends what a service left behind in its own process group (it was started as the
    group's leader): a service killed outright cannot stop its children itself, e.g. the
    agents of the trainer's in-process Ray."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)


class SuiteError(RuntimeError):
    pass


class Suite:
    """The suite's processes. Use as a context manager, or start()/stop()."""

    def __init__(self, spec: SuiteSpec, stop_grace_s: float = 20.0) -> None:
        self.spec = spec
        self.stop_grace_s = stop_grace_s
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> Suite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout_s: float = 180.0) -> None:
        try:
            for service in self.spec.services:
                self.start_service(service)
            for service in self.spec.services:
                self.wait_ready(service, ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_service(self, service: str) -> subprocess.Popen[bytes]:
        output: IO[bytes] | None = None
        if self.spec.log_dir is not None:
            self.spec.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.spec.log_dir / f"{service}.log", "ab")  # noqa: SIM115
            self._logs.append(output)
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=self.spec.env_for(service),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # Own session: Ctrl-C reaches only the launcher, which stops services in order.
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
        self.processes[service] = process
        return process

    def wait_ready(self, service: str, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        address = self.spec.address(service)
        while time.monotonic() < deadline:
            process = self.processes.get(service)
            if process is not None and process.poll() is not None:
                raise SuiteError(f"{service} exited with code {process.returncode} while starting")
            if is_serving(address):
                return
            time.sleep(0.2)
        raise SuiteError(f"{service} at {address} not serving after {timeout_s:.0f}s")

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash would: nothing gets a chance to flush."""
        process = self.processes.pop(service)
        process.kill()
        process.wait()
        reap_group(process.pid)

    def stop_service(self, service: str) -> int:
        process = self.processes.pop(service)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reap_group(process.pid)
        return process.returncode

    def stop(self) -> dict[str, int]:
        """Stops the gateway first, so no call arrives at a service that is going away."""
        order = reversed(self.spec.services)
        codes = {s: self.stop_service(s) for s in order if s in self.processes}
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        return codes

    def first_exited(self) -> str | None:
        for service, process in self.processes.items():
            if process.poll() is not None:
                return service
        return None


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C; install it before anything starts, so that a
    signal during start-up still stops what was started."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def supervise(suite: Suite, stop: threading.Event) -> int:
    """Keeps a started suite running until `stop` is set, or until a service dies."""
    print(
        f"recsys: suite ready; gateway at {suite.spec.address('gateway')},"
        f" data in {suite.spec.data_dir}. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    crashed = None
    while not stop.wait(0.5):
        crashed = suite.first_exited()
        if crashed:
            print(f"recsys: {crashed} exited; stopping the suite", file=sys.stderr)
            break
    codes = suite.stop()
    print(f"recsys: stopped ({', '.join(f'{s}={c}' for s, c in codes.items())})", file=sys.stderr)
    return 1 if crashed else 0
