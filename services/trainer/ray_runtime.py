"""The trainer on Ray: an in-process Ray for the embedded default, a cluster (RAY_ADDRESS,
e.g. KubeRay) at scale, with the same code. The continual trainer lives in one long-lived
actor; each full retrain is a Ray task the cluster schedules wherever it has room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import ray

from services.trainer.config import TrainerConfig
from services.trainer.continual_trainer import ContinualTrainer, ForgetReport
from services.trainer.full_retrain import RetrainRequest, RetrainResult, full_retrain
from shared import logs, tls

log = logging.getLogger(__name__)
NAMESPACE = "recsys"
ACTOR_NAME = "continual-trainer"
START_ATTEMPTS = 3
LOOPBACK = "127.0.0.1"
JOIN_TIMEOUT_S = 180.0


def start_ray(config: TrainerConfig) -> None:
    """Joins the cluster at RAY_ADDRESS, or starts a private one on loopback."""
    if ray.is_initialized():
        return
    if config.ray_address:
        _join(config.ray_address)
        return
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(
                num_cpus=config.ray_cpus,
                include_dashboard=False,
                object_store_memory=config.ray_object_store_bytes,
                namespace=NAMESPACE,
                _node_ip_address=LOOPBACK,
                log_to_driver=True,
            )
            break
        except Exception:
            # On a loaded machine the local raylet can miss Ray's start-up deadline.
            if attempt == START_ATTEMPTS:
                raise
            log.warning("Ray did not start; trying again", extra={"attempt": attempt})
            ray.shutdown()
            time.sleep(2.0)
    node = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    if node != LOOPBACK:
        ray.shutdown()
        # services/trainer/__init__.py sets what keeps it on loopback before Ray is imported.
        raise RuntimeError(f"the in-process Ray took {node} for its node, not {LOOPBACK}")


def _join(address: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Joins the cluster at `address`, waiting for its head: beside a Ray head in one pod
    (KubeRay), the trainer starts with it, not after it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
            return
        except (ConnectionError, RuntimeError) as error:
            ray.shutdown()
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the Ray head", extra={"ray": address, "why": str(error)})
            time.sleep(2.0)


# A fresh worker for every retrain (max_calls=1): its memory goes back when it is done.
_remote_retrain = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(full_retrain)


async def retrain_on_ray(request: RetrainRequest) -> RetrainResult:
    result: RetrainResult = await _remote_retrain.remote(request)
    return result


class Trainer:
    """Holds the model and learns; the gRPC servicer in the trainer process calls it."""

    def __init__(self, config: TrainerConfig) -> None:
        logs.configure("trainer")
        # This actor's process is Ray's, not the service's: it calls with the same identity.
        tls.use_for_calls(config.server.tls)
        import torch

        torch.set_num_threads(config.job.train.threads)
        self.trainer = ContinualTrainer(config, retrain_on_ray)
        self.loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.trainer.start()
        self.loop = asyncio.create_task(self.trainer.run())

    async def stop(self) -> None:
        """Ends after the round in progress; everything learned is committed."""
        self.trainer.stopping.set()
        if self.loop is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop
        await self.trainer.close()

    async def status(self) -> dict[str, Any]:
        return self.trainer.status()

    async def monitored_status(self) -> dict[str, Any]:
        return await self.trainer.monitored_status()

    async def trigger(self, full: bool, shuffle_labels: bool) -> bool:
        return await self.trainer.trigger(full, shuffle_labels)

    async def wait_until_trained(self, offset: int, timeout_s: float) -> tuple[bool, str, int]:
        live = await self.trainer.wait_until_trained(offset, timeout_s)
        status = self.trainer.status()
        return live is not None, status["live_version"], status["live_trained_offset"]

    async def rollback(self) -> tuple[int, int]:
        return await self.trainer.rollback()

    async def forget(self, user_id: str) -> ForgetReport:
        return await self.trainer.forget(user_id)


TrainerActor: Any = ray.remote(num_cpus=1, max_restarts=0)(Trainer)


def create_actor(config: TrainerConfig, wait_s: float = 60.0) -> Any:
    """The one trainer actor. The name is unique in the namespace, so a second trainer (or
    a restarted one whose predecessor the cluster has not reaped yet) waits for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return TrainerActor.options(name=ACTOR_NAME, lifetime="non_detached").remote(config)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
