"""python -m services.gateway: the public API (recsys.gateway.v1.GatewayService)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.features.v1 import features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2_grpc
from recsys.trainer.v1 import trainer_pb2_grpc
from services.gateway.config import GatewayConfig
from services.gateway.servicer import GatewayServicer
from services.gateway.serving import ServingModel
from shared.access import Policy
from shared.clients import channel
from shared.embedding_client import EmbeddingClient
from shared.model_store import ModelStore
from shared.retrieval_client import ReplicatedRetrieval
from shared.server import GrpcService, ServiceBinding, run_main

SERVICE_NAME = "recsys.gateway.v1.GatewayService"
# The scope each method needs once clients must authenticate (RECSYS_GATEWAY_TOKENS_FILE).
POLICY = Policy.of(
    SERVICE_NAME,
    {
        "Recommend": "read",
        "SimilarItems": "read",
        "GetItems": "read",
        "GetStatus": "read",
        "LogEvents": "write",
        "StreamEvents": "write",
        "UpsertItems": "write",
        "DeleteItems": "write",
        "ForgetUser": "admin",
    },
)
DEPENDENCY_POLL_S = 1.0
log = logging.getLogger(__name__)


async def _serving(stub: health_pb2_grpc.HealthStub, timeout_s: float) -> bool:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class Gateway:
    """The gateway's channels and its readiness: SERVING only while every service it
    composes is."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.channels = [channel(config.features_address)]
        retrieval = ReplicatedRetrieval(config.retrieval_address)
        self.retrieval = retrieval
        # Not part of readiness: only ForgetUser calls it.
        self.trainer_channel = channel(config.trainer_address) if config.trainer_address else None
        self.embedding = EmbeddingClient(config.embedding_address, config.embedding_timeout_s)
        self.serving = ServingModel(
            ModelStore(config.model_dir),
            self.embedding,
            retrieval,
            config.model_poll_s,
            config.call_timeout_s,
        )
        self.servicer = servicer = GatewayServicer(
            config,
            features_pb2_grpc.FeaturesServiceStub(self.channels[0]),
            retrieval,
            self.embedding,
            self.serving,
            trainer_pb2_grpc.TrainerServiceStub(self.trainer_channel)
            if self.trainer_channel
            else None,
        )
        binding = ServiceBinding(
            SERVICE_NAME, gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer
        )
        self.service = GrpcService(
            "gateway",
            config.server,
            [binding],
            self.startup,
            self.shutdown,
            readiness_from_startup=False,
            policy=POLICY,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def startup(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch_dependencies()))
        self._tasks.append(asyncio.create_task(self.serving.run()))

    async def _watch_dependencies(self) -> None:
        stubs = [health_pb2_grpc.HealthStub(c) for c in self.channels]
        last: bool | None = None
        while True:
            checks = await asyncio.gather(
                *(_serving(s, self.config.call_timeout_s) for s in stubs),
                self.retrieval.serving_somewhere(self.config.call_timeout_s),
            )
            ready = all(checks)
            if ready != last:
                log.info("dependencies", extra={"serving": ready})
                await self.service.set_serving(ready)
                last = ready
            await asyncio.sleep(DEPENDENCY_POLL_S)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.servicer.reads.close()
        for ch in [*self.channels, *([self.trainer_channel] if self.trainer_channel else [])]:
            await ch.close()
        await self.retrieval.close()
        await self.embedding.close()


def main() -> None:
    run_main("gateway", GatewayConfig.from_env, lambda config: Gateway(config).service)


if __name__ == "__main__":
    main()
