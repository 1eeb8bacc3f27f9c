"""Helpers shared by every test layer: free loopback ports and real service processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from services.launcher import is_serving

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_serving(address: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process for {address} exited with {process.returncode}")
        if is_serving(address, timeout_s=0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"{address} never became SERVING")


class ServiceProcess:
    """One service (python -m services.<name>) on a free loopback port."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.port = free_port()
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, wait: bool = True) -> ServiceProcess:
        prefix = f"RECSYS_{self.name.upper()}_"
        env = dict(os.environ)
        env.update(
            {
                f"{prefix}HOST": HOST,
                f"{prefix}PORT": str(self.port),
                f"{prefix}METRICS_PORT": "0",
                f"{prefix}DATA_DIR": str(self.data_dir),
                **self.extra_env,
            }
        )
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], env=env)
        if wait:
            wait_serving(self.address, self.process)
        return self

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)


@contextmanager
def running(service: ServiceProcess) -> Iterator[ServiceProcess]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
