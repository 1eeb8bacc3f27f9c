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
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import logs
from shared.config import ConfigError
from shared.interceptor import Guard, ObservabilityInterceptor
from shared.metrics import serve_metrics
from shared.server_config import ServerConfig
from shared.streamed import end_streams
from shared.tls import server_credentials, use_for_calls

if TYPE_CHECKING:
    from shared.access import Policy

log = logging.getLogger("shared.server")

Hook = Callable[[], Awaitable[None]]
C = TypeVar("C")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
        policy: Policy | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.bindings = bindings
        self._startup = startup
        self._shutdown = shutdown
        self._readiness_from_startup = readiness_from_startup
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        # Who may call what (shared/access.py); None: anyone, as on loopback by default.
        self.access = config.access.build(policy, tls_on=config.tls is not None)
        self._stopping = asyncio.Event()
        self.port = 0

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *(b.full_name for b in self.bindings)]:
            await self.health.set(name, status)

    def _new_server(self) -> grpc.aio.Server:
        # Made inside the running event loop: an aio server belongs to the loop it was made in.
        size = self.config.max_message_bytes
        return grpc.aio.server(
            interceptors=[ObservabilityInterceptor(Guard(self.access, self.config.stream_idle_s))],
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),
            ],
            # Beyond it a call is answered RESOURCE_EXHAUSTED at once, never queued.
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )

    def _listen(self, server: grpc.aio.Server, port: int, secure: bool) -> int:
        address = f"{self.config.host}:{port}"
        if secure and self.config.tls is not None:
            credentials = server_credentials(self.config.tls, self.config.client_cert_required)
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise RuntimeError(f"cannot listen on {address}")
        return bound

    async def _start_health_port(self) -> None:
        """Kubernetes' gRPC probes speak plaintext and present no certificate: with TLS on,
        health alone is also served in plaintext on its own port."""
        if self.config.tls is None or not self.config.health_port:
            return
        self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        self._listen(self._health_server, self.config.health_port, secure=False)
        await self._health_server.start()

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
        self.port = self._listen(self._server, self.config.port, secure=True)
        await self._server.start()
        await self._start_health_port()
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
            stopping = asyncio.ensure_future(self._server.stop(self.config.grace_s))
            await asyncio.sleep(0)  # from its first step the server takes no new call
            end_streams()  # callers' idle streams would hold the stop for its grace
            await stopping
        if self._health_server is not None:
            await self._health_server.stop(0)
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
    server = getattr(config, "server", None)  # every service's config has its ServerConfig
    if isinstance(server, ServerConfig):
        use_for_calls(server.tls)  # the identity it serves with is the one it calls with

    async def serve() -> None:
        # Built inside the running loop: gRPC aio servers and channels belong to their loop.
        await build(config).run_until_signal()

    asyncio.run(serve())
