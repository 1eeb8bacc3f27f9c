"""Bootstrap of a gRPC service: grpc.aio server, standard health and reflection, the
observability interceptor, the metrics endpoint and graceful shutdown on SIGTERM/SIGINT.

A service hands over its servicers and two hooks: `startup` (runs after the port is
bound; health says NOT_SERVING until it returns, or until the service itself says so when
its readiness depends on more than start-up) and `shutdown` (runs after in-flight calls
have drained: flush and close what holds data).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import logs
from shared.config import ConfigError, ServerConfig
from shared.interceptor import ObservabilityInterceptor
from shared.metrics import serve_metrics

log = logging.getLogger("shared.server")

Hook = Callable[[], Awaitable[None]]
C = TypeVar("C")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    full_name: str  # e.g. "recsys.features.v1.FeaturesService"
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


async def _noop() -> None:
    return None


class GrpcService:
    def __init__(
        self,
        name: str,
        config: ServerConfig,
        bindings: list[ServiceBinding],
        startup: Hook = _noop,
        shutdown: Hook = _noop,
        readiness_from_startup: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.bindings = bindings
        self._startup = startup
        self._shutdown = shutdown
        self._readiness_from_startup = readiness_from_startup
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *(b.full_name for b in self.bindings)]:
            await self.health.set(name, status)

    def _new_server(self) -> grpc.aio.Server:
        # Made inside the running event loop: an aio server belongs to the loop it was made in.
        return grpc.aio.server(
            interceptors=[ObservabilityInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )

    async def start(self) -> None:
        self._server = self._new_server()
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [b.full_name for b in self.bindings]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        await self.set_serving(False)
        address = f"{self.config.host}:{self.config.port}"
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        await self._server.start()
        serve_metrics(self.config.host, self.config.metrics_port)
        log.info("listening", extra={"address": f"{self.config.host}:{self.port}"})
        await self._startup()
        if self._readiness_from_startup:
            await self.set_serving(True)
            log.info("serving", extra={"service": self.name})

    def request_stop(self) -> None:
        self._stopping.set()

    def _on_signal(self) -> None:
        # Ray's failure-signal handler (abseil's, installed in any process that starts Ray)
        # sees SIGTERM first and arms a 3 s alarm whose handler aborts the process, in case
        # the process hangs on its way down. A graceful stop takes longer (the trainer
        # finishes its round and commits), so the alarm went off: SIGABRT, exit code -6.
        signal.alarm(0)
        self.request_stop()

    async def stop(self) -> None:
        """NOT_SERVING, refuse new calls and drain in-flight ones, then flush and close."""
        log.info("shutting down", extra={"grace_s": self.config.grace_s})
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.grace_s)
        await self._shutdown()
        log.info("stopped")

    async def serve(self) -> None:
        """Starts, serves until request_stop(), then stops gracefully."""
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        await self.serve()


def run_main(name: str, load_config: Callable[[], C], build: Callable[[C], GrpcService]) -> None:
    """A service's entry point: JSON logs, config from the environment (a bad value stops
    the process with a message naming the variable), then build the service and serve it
    until SIGTERM."""
    logs.configure(name)
    try:
        config = load_config()
    except ConfigError as error:
        raise SystemExit(f"{name}: {error}") from None

    async def serve() -> None:
        # Built inside the running loop: gRPC aio servers and channels belong to their loop.
        await build(config).run_until_signal()

    asyncio.run(serve())
