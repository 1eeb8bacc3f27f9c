"""Runs the whole suite as local processes on loopback: each service in its own process,
started in dependency order, stopped with SIGTERM (then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
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

from shared import tls
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
# What may run as several processes: the gateway holds no state of its own; every Triton
# replica serves the one model repository, to which publishes load each version
# (shared/embedding_client.py); every write reaches each retrieval replica, and one that
# starts copies from a serving one (services/retrieval/catch_up.py). Features is the one
# writer of the event log and the catalogue, and the trainer the one learner.
REPLICABLE = ("gateway", "embedding", "retrieval")
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
    # Processes per service (1 if not named): replica r listens on 127.0.0.(1 + r) at the
    # service's port, as pods share a port on many IPs, and clients are given the list.
    replicas: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for service, count in self.replicas.items():
            if count > 1 and service not in REPLICABLE:
                raise ValueError(
                    f"{service} cannot run as replicas yet; only {', '.join(REPLICABLE)} can"
                )
            if count > 1 and self.host != DEFAULT_HOST:
                raise ValueError(f"replicas listen on 127.0.0.N; the host is {self.host}")

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
            replicas=replicas_from(Env("RECSYS_SUITE_", environ).string("REPLICAS", "")),
        )

    @classmethod
    def on_free_ports(
        cls,
        data_dir: Path,
        log_dir: Path | None = None,
        services: tuple[str, ...] = SERVICES,
        extra_env: Mapping[str, str] | None = None,
        replicas: Mapping[str, int] | None = None,
    ) -> SuiteSpec:
        """A private suite (tests, benchmarks, evaluations): free loopback ports (free on
        every replica's address too), no metrics."""
        most = max((replicas or {}).values(), default=1)
        ports = dict(zip(SERVICES, free_ports(len(SERVICES), most), strict=True))
        return cls(
            data_dir=data_dir,
            ports=ports,
            metrics_ports={service: 0 for service in SERVICES},
            log_dir=log_dir,
            extra_env=dict(extra_env or {}),
            services=services,
            replicas=dict(replicas or {}),
        )

    def replica_count(self, service: str) -> int:
        return self.replicas.get(service, 1)

    def replica_address(self, service: str, replica: int) -> str:
        return f"{replica_host(self.host, replica)}:{self.ports[service]}"

    def address(self, service: str) -> str:
        """What clients are given: the one instance, or the list of its replicas."""
        count = self.replica_count(service)
        if count == 1:
            return self.replica_address(service, 0)
        listed = ",".join(self.replica_address(service, r) for r in range(count))
        return f"ipv4:{listed}"

    def process_name(self, service: str, replica: int) -> str:
        """Replica 0 is named as the service (as when it runs once); others `name-r`."""
        return service if replica == 0 else f"{service}-{replica}"

    def process_names(self, service: str) -> list[str]:
        return [self.process_name(service, r) for r in range(self.replica_count(service))]

    def replica_of(self, name: str) -> tuple[str, int]:
        """The service and replica a process name names."""
        service, _, replica = name.partition("-")
        return service, int(replica or 0)

    @property
    def model_dir(self) -> Path:
        """Trained versions, Triton's model repository and the live-version pointer."""
        return self.data_dir / "models"

    def with_log_dir(self, log_dir: Path) -> SuiteSpec:
        return replace(self, log_dir=log_dir)

    def tls_files(self) -> tls.TlsFiles | None:
        """The suite-wide identity (RECSYS_TLS_*) its services get, if any."""
        return tls.tls_files("suite", {**os.environ, **self.extra_env})

    def env_for(self, service: str, replica: int = 0) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        prefix = f"RECSYS_{service.upper()}_"
        env.update(
            {
                "RECSYS_DATA_DIR": str(self.data_dir),
                "RECSYS_MODEL_DIR": str(self.model_dir),
                f"{prefix}HOST": replica_host(self.host, replica),
                f"{prefix}PORT": str(self.ports[service]),
                f"{prefix}METRICS_PORT": str(self.metrics_ports[service]),
                f"{prefix}DATA_DIR": str(self.data_dir / self.process_name(service, replica)),
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
        if service == "retrieval" and self.replica_count(service) > 1:
            env[f"{prefix}PEERS"] = self.address(service)
        if service == "trainer":
            env[f"{prefix}STATE_DIR"] = str(self.data_dir / service)
        if _secured(env) and not env.get("RECSYS_TRITON_CONTROL_KEY_FILE"):
            # With auth on, Triton's model control is the trainer's alone, as on Kubernetes.
            env["RECSYS_TRITON_CONTROL_KEY_FILE"] = str(self._control_key_file())
        return env

    def _control_key_file(self) -> Path:
        path = self.data_dir / "triton-control-key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secrets.token_hex(24) + "\n")
        return path


def _secured(env: Mapping[str, str]) -> bool:
    """Whether the suite runs with auth on: TLS, or a token file for the gateway or trainer."""
    names = ("RECSYS_TLS_CERT_FILE", "RECSYS_GATEWAY_TOKENS_FILE", "RECSYS_TRAINER_TOKENS_FILE")
    return any(env.get(name) for name in names)


def replica_host(host: str, replica: int) -> str:
    """Replica r of a service on `host` (127.0.0.1): 127.0.0.(1 + r)."""
    if replica == 0:
        return host
    first, _, last = host.rpartition(".")
    return f"{first}.{int(last) + replica}"


def replicas_from(listed: str) -> dict[str, int]:
    """RECSYS_SUITE_REPLICAS: `service=count,...` ("" means one of each)."""
    counts: dict[str, int] = {}
    for part in (p.strip() for p in listed.split(",") if p.strip()):
        service, sep, count = part.partition("=")
        if not sep or service.strip() not in SERVICES or not count.strip().isdigit():
            raise ValueError(f"RECSYS_SUITE_REPLICAS={listed!r}: {part!r} is not service=count")
        if not 1 <= int(count) <= 254:
            raise ValueError(f"RECSYS_SUITE_REPLICAS={listed!r}: a count is 1 to 254")
        counts[service.strip()] = int(count)
    return counts


def services_from(listed: str) -> tuple[str, ...]:
    """RECSYS_SUITE_SERVICES: a comma-separated subset of SERVICES ("" means all of them)."""
    if not listed.strip():
        return SERVICES
    wanted = {name.strip() for name in listed.split(",") if name.strip()}
    unknown = wanted - set(SERVICES)
    if unknown:
        raise ValueError(f"RECSYS_SUITE_SERVICES names unknown services: {sorted(unknown)}")
    return tuple(s for s in SERVICES if s in wanted)


def free_ports(count: int, replicas: int = 1, host: str = DEFAULT_HOST) -> list[int]:
    """Ports the OS hands out for port 0, free on every replica's address too; all held
    open at once so they differ."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(first)
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            try:
                for replica in range(1, replicas):
                    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sockets.append(other)
                    other.bind((replica_host(host, replica), port))
            except OSError:
                continue  # taken on another address: try the next
            ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def _health_channel(address: str, files: tls.TlsFiles | None) -> grpc.Channel:
    """With TLS on, the launcher asks as one of the suite's own."""
    if files is None:
        return grpc.insecure_channel(address)
    identity = files.read()
    credentials = grpc.ssl_channel_credentials(identity.ca, identity.key, identity.cert)
    return grpc.secure_channel(address, credentials)


def is_serving(address: str, timeout_s: float = 1.0, files: tls.TlsFiles | None = None) -> bool:
    """`files`: the identity to ask with (TLS); None: this process's (RECSYS_TLS_*)."""
    with _health_channel(address, files or tls.files_for_calls()) as ch:
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
    """The suite's processes, by name (`SuiteSpec.process_name`: a service, or a replica
    of it). Use as a context manager, or start()/stop()."""

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
                for replica in range(self.spec.replica_count(service)):
                    self.start_service(service, replica)
            for service in self.spec.services:
                self.wait_ready(service, ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_service(self, service: str, replica: int = 0) -> subprocess.Popen[bytes]:
        name = self.spec.process_name(service, replica)
        output: IO[bytes] | None = None
        if self.spec.log_dir is not None:
            self.spec.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.spec.log_dir / f"{name}.log", "ab")  # noqa: SIM115
            self._logs.append(output)
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=self.spec.env_for(service, replica),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # Own session: Ctrl-C reaches only the launcher, which stops services in order.
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
        self.processes[name] = process
        return process

    def wait_ready(self, service: str, timeout_s: float = 180.0) -> None:
        """Until every replica of `service` reports SERVING."""
        deadline = time.monotonic() + timeout_s
        for replica in range(self.spec.replica_count(service)):
            name = self.spec.process_name(service, replica)
            address = self.spec.replica_address(service, replica)
            while not is_serving(address, files=self.spec.tls_files()):
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise SuiteError(f"{name} exited with code {process.returncode} while starting")
                if time.monotonic() > deadline:
                    raise SuiteError(f"{name} at {address} not serving after {timeout_s:.0f}s")
                time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would: nothing gets a chance to flush."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()
        reap_group(process.pid)

    def stop_service(self, name: str) -> int:
        process = self.processes.pop(name)
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
        order = [n for s in reversed(self.spec.services) for n in self.spec.process_names(s)]
        codes = {n: self.stop_service(n) for n in order if n in self.processes}
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        return codes

    def restart(self, name: str) -> None:
        """Starts a process that exited again, in its place."""
        process = self.processes.pop(name)
        process.wait()
        reap_group(process.pid)
        self.start_service(*self.spec.replica_of(name))

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
        if crashed is None:
            continue
        service, replica = suite.spec.replica_of(crashed)
        if suite.spec.replica_count(service) == 1:
            print(f"recsys: {crashed} exited; stopping the suite", file=sys.stderr)
            break
        # One of several: the others serve meanwhile, as a ReplicaSet's pods would.
        print(f"recsys: {crashed} exited; starting it again", file=sys.stderr, flush=True)
        suite.restart(crashed)
        crashed = None
    codes = suite.stop()
    print(f"recsys: stopped ({', '.join(f'{s}={c}' for s, c in codes.items())})", file=sys.stderr)
    return 1 if crashed else 0
