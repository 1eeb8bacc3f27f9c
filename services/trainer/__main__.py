"""python -m services.trainer: the continual trainer (gRPC on 127.0.0.1:50054, work on Ray)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from recsys.trainer.v1 import trainer_pb2_grpc
from services.trainer import metrics
from services.trainer.config import TrainerConfig
from services.trainer.ray_runtime import create_actor, start_ray
from services.trainer.servicer import TrainerServicer
from shared.access import ANY_CERTIFICATE, Policy
from shared.errors import Unavailable
from shared.server import GrpcService, ServiceBinding, run_main

SERVICE_NAME = "recsys.trainer.v1.TrainerService"
ACTOR_CHECK_S = 2.0
# With TLS on, any of the suite's certificates may read the trainer's status and forget a
# user (the gateway passes ForgetUser on); only an operator, with an admin token or a
# certificate named in RECSYS_TRAINER_ADMIN_IDENTITIES, retrains or rolls back.
POLICY = Policy.of(
    SERVICE_NAME,
    {
        "GetStatus": "read",
        "WaitUntilTrained": "read",
        "ForgetUser": "write",
        "TriggerRetrain": "admin",
        "Rollback": "admin",
    },
    identities={"read": frozenset({ANY_CERTIFICATE}), "write": frozenset({ANY_CERTIFICATE})},
    open_without_tls=frozenset({"read", "write"}),
)
log = logging.getLogger(__name__)


class _Actor:
    """The actor handle, set once Ray is up (the servicer is built before)."""

    def __init__(self) -> None:
        self.handle: Any = None

    def __getattr__(self, name: str) -> Any:
        if self.handle is None:
            raise Unavailable("the trainer is starting")
        return getattr(self.handle, name)


def build(config: TrainerConfig) -> GrpcService:
    actor = _Actor()
    following: list[asyncio.Task[None]] = []
    binding = ServiceBinding(
        SERVICE_NAME,
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        TrainerServicer(actor, config.ray_address),
    )

    async def start_actor() -> None:
        actor.handle = await asyncio.to_thread(create_actor, config)
        await actor.handle.start.remote()
        log.info("trainer actor started", extra={"ray": config.ray_address or "in-process"})

    async def keep_actor() -> None:
        """On a cluster the actor lives on a worker, which can go (preempted, OOM-killed,
        its pod deleted): another starts where Ray has room and resumes from the state
        the first committed (on the shared volume), so nothing is learned twice or lost."""
        while True:
            await asyncio.sleep(ACTOR_CHECK_S)
            try:
                await actor.handle.status.remote()
            except ActorUnavailableError:
                continue  # its node unreachable: Ray tells dead from away within seconds
            except ActorDiedError as error:
                log.warning("the trainer actor died; starting another", extra={"why": str(error)})
                with contextlib.suppress(Exception):
                    ray.kill(actor.handle, no_restart=True)  # frees the name it still holds
                try:
                    await start_actor()
                except Exception:  # noqa: BLE001 - tried again at the next check
                    log.exception("the trainer actor did not start again")

    async def startup() -> None:
        await asyncio.to_thread(start_ray, config)
        await start_actor()
        following.append(
            asyncio.create_task(metrics.follow(lambda: actor.handle.monitored_status.remote()))
        )
        following.append(asyncio.create_task(keep_actor()))

    async def shutdown() -> None:
        for task in following:
            await metrics.stop(task)
        if actor.handle is not None:
            try:
                await asyncio.wait_for(actor.handle.stop.remote(), timeout=120)
            except Exception:
                log.exception("the trainer actor did not stop cleanly")
        await asyncio.to_thread(ray.shutdown)

    return GrpcService("trainer", config.server, [binding], startup, shutdown, policy=POLICY)


def main() -> None:
    run_main("trainer", TrainerConfig.from_env, build)


if __name__ == "__main__":
    main()
