"""The trainer's versions: one publish at a time, in the background, from a committed
checkpoint; older versions retired after the grace period (the live one and the one it
replaced stay loaded, for a rollback); rolling back; and waiting until a live version has
learned an offset. `publisher.py` does the work of each step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from services.trainer.checkpoints import Checkpoints
from services.trainer.gate import GateDecision
from services.trainer.model_training import TrainedModel
from services.trainer.publisher import Publisher
from shared.model_store import LiveVersion, ModelStore, model_name

log = logging.getLogger(__name__)


class Publication:
    def __init__(
        self,
        store: ModelStore,
        checkpoints: Checkpoints,
        grace_s: float,
        on_published: Callable[[], None],
    ) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.grace_s = grace_s
        self.on_published = on_published
        self._publisher: Publisher | None = None
        self.live_model: TrainedModel | None = None  # what the live version serves
        self.lock = asyncio.Lock()  # one of publish / retire / rollback at a time
        self.changed = asyncio.Condition()  # notified whenever live.json may have changed
        self.task: asyncio.Task[None] | None = None  # the publish under way, or the last
        self.retirements: set[asyncio.Task[Any]] = set()

    def connect(self, publisher: Publisher) -> None:
        self._publisher = publisher

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "connect() a publisher first"
        return self._publisher

    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    async def settle(self) -> None:
        """Waits for the publish under way, if any; its failure has been logged."""
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task

    async def close(self) -> None:
        await self.settle()
        for task in list(self.retirements):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def start(self, candidate: TrainedModel, decision: GateDecision) -> None:
        """Publishes in the background from the checkpoint just committed: the learner goes
        on with the log meanwhile (a publish loads Triton, which takes seconds)."""
        checkpoint = self.checkpoints.commit.checkpoint
        self.checkpoints.pinned.add(checkpoint)  # not pruned before the version names it
        self.task = asyncio.create_task(self._publish(candidate, decision, checkpoint))
        self.task.add_done_callback(_log_failure)

    async def _publish(
        self, candidate: TrainedModel, decision: GateDecision, checkpoint: str
    ) -> None:
        try:
            async with self.lock:
                report = await self.publisher.publish(candidate, retire=False)
        finally:
            self.checkpoints.pinned.discard(checkpoint)
        commit = self.checkpoints.commit
        commit.versions[str(report.version)] = checkpoint
        commit.last_publish = time.time()
        commit.last_gate_decision = decision.reason.replace(
            "accepted:", f"published {model_name(report.version)}:", 1
        )
        self.checkpoints.write_commit()
        self.live_model = candidate
        self.on_published()
        log.info(
            "published",
            extra={
                "version": report.version,
                "trained_through": candidate.trained_through_offset,
                "publish_s": round(report.switch_s, 2),
                "save_s": round(report.save_s, 3),
                "load_s": round(report.load_s, 3),
                "embed_s": round(report.embed_s, 3),
                "total_s": round(report.total_s, 3),
                "items": report.items,
                "gate": decision.reason,
            },
        )
        await self.notify()
        self.background(self._retire_later())

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _retire_later(self) -> None:
        """After the grace period, unloads everything but the live version and the one it
        replaced (kept warm for a rollback)."""
        await asyncio.sleep(self.grace_s)
        async with self.lock:
            live = self.store.live()
            if live is None or self.live_model is None:
                return
            keep = [live.version] + ([live.previous] if live.previous is not None else [])
            await self.publisher.retire_all_but(keep, self.live_model)

    async def roll_back_to(self, previous: TrainedModel) -> None:
        """Makes the previous version live at once; call it holding `lock`, then
        `after_rollback` once released."""
        await self.publisher.rollback(previous)
        self.live_model = previous

    async def after_rollback(self, version: int) -> None:
        """The rolled-back-to version's records set right, and the others retired, in the
        background."""
        assert self.live_model is not None
        self.background(self._reconcile_and_retire(version, self.live_model))
        await self.notify()

    async def _reconcile_and_retire(self, version: int, trained: TrainedModel) -> None:
        await self.publisher.reconcile(version, trained)
        await self._retire_later()

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Retiring old versions in the background; a failure (Triton down, say) is logged,
        and the next publish retires them again."""
        task = asyncio.create_task(work)
        self.retirements.add(task)
        task.add_done_callback(self.retirements.discard)
        task.add_done_callback(_log_retirement_failure)

    async def forget_users(self, user_ids: set[str]) -> dict[str, int]:
        """Every stored version written again without the users; how many each was in."""
        async with self.lock:
            return await asyncio.to_thread(self.publisher.forget_users, user_ids)

    async def wait_until_trained(self, offset: int, timeout_s: float) -> LiveVersion | None:
        """The live version once it has trained through `offset`; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = self.store.live()
            if live is not None and live.trained_through_offset >= offset:
                publishing = self.task
                if publishing is not None and not publishing.done():
                    # live.json has switched; the publish's own records follow at once.
                    await asyncio.wait([publishing], timeout=5.0)
                return live
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            async with self.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), min(left, 0.5))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("publish failed; the next one tries again", exc_info=task.exception())


def _log_retirement_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "retiring old versions failed; the next publish tries again",
            extra={"why": str(task.exception())},
        )
