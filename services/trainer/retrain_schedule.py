"""When the trainer retrains fully: to bootstrap, when asked, on a schedule, on drift (the
continual model's hit rate on the events it scored before learning them falls below the
last full retrain's) and after repeated gate rejections. One retrain at a time; it runs
wherever the runner sends it (a Ray task on the cluster, or a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from services.trainer.checkpoints import Checkpoints
from services.trainer.config import TrainerConfig
from services.trainer.full_retrain import RetrainRequest, RetrainResult, full_retrain
from services.trainer.gate import GateDecision
from shared.model_store import ModelStore

log = logging.getLogger(__name__)
RetrainRunner = Callable[[RetrainRequest], Awaitable[RetrainResult]]


async def retrain_in_thread(request: RetrainRequest) -> RetrainResult:
    return await asyncio.to_thread(full_retrain, request)


class RetrainSchedule:
    def __init__(
        self,
        config: TrainerConfig,
        store: ModelStore,
        checkpoints: Checkpoints,
        runner: RetrainRunner = retrain_in_thread,
    ) -> None:
        self.config = config
        self.store = store
        self.checkpoints = checkpoints
        self.runner = runner
        self.task: asyncio.Task[RetrainResult] | None = None
        # Users forgotten while a full retrain was under way: it may have read their events.
        self.forgotten: set[str] = set()
        self.recent: deque[tuple[int, float]] = deque()  # (events, hits) of the learner
        self.rejections = 0  # gate rejections in a row

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, reason: str, shuffle_labels: bool = False) -> bool:
        if self.task is not None:
            return False
        job = self.config.job
        # Only the bootstrap may skip the gate's events: any other retrain is compared with
        # whatever is live when it ends, even if nothing was when it started.
        gated = reason != "bootstrap" or self.store.live() is not None
        request = RetrainRequest(
            features_address=job.features_address,
            train=job.train,
            reason=reason,
            holdout_events=self.config.gate.min_events if gated else 0,
            k=self.config.gate.k,
            model_dir=str(self.store.root),
            shuffle_labels=shuffle_labels,
        )
        commit = self.checkpoints.commit
        commit.last_full_retrain_reason = reason
        commit.last_full_retrain_at = time.time()
        self.task = asyncio.create_task(self._run(request))
        log.info("full retrain started", extra={"reason": reason, "shuffled": shuffle_labels})
        return True

    async def _run(self, request: RetrainRequest) -> RetrainResult:
        return await self.runner(request)

    def learned(self, events: int, hits: float) -> None:
        """The continual model's score on a micro-batch before it learned it."""
        self.recent.append((events, hits))
        while sum(n for n, _ in self.recent) - self.recent[0][0] >= self.config.drift_min_events:
            self.recent.popleft()

    def start_if_due(self) -> None:
        if self.task is not None:
            return
        interval = self.config.full_retrain_interval_s
        since = time.time() - self.checkpoints.commit.last_full_retrain_at
        if interval > 0 and since >= interval:
            self.start("schedule")
            return
        events = sum(n for n, _ in self.recent)
        baseline = self.checkpoints.commit.baseline_hit_rate
        if baseline > 0 and events >= self.config.drift_min_events:
            rate = sum(h for _, h in self.recent) / events
            cooled = since >= max(60.0, 5 * self.config.publish_every_s)
            if rate < baseline * (1.0 - self.config.drift_tolerance) and cooled:
                log.warning("drift", extra={"hit_rate": rate, "baseline": baseline})
                self.recent.clear()
                self.start("drift")

    def rejected(self, decision: GateDecision) -> None:
        self.checkpoints.commit.last_gate_decision = decision.reason
        self.checkpoints.write_commit()
        self.rejections += 1
        log.warning("candidate rejected", extra={"gate": decision.reason})
        if self.rejections >= self.config.rejections_before_retrain:
            self.rejections = 0
            self.start("drift")

    def published(self) -> None:
        self.rejections = 0

    def finished(self) -> asyncio.Task[RetrainResult] | None:
        """The retrain, once it has ended (hand it to `done` after adopting it or not)."""
        return self.task if self.task is not None and self.task.done() else None

    def done(self) -> None:
        # Only now: users forgotten until the result is adopted must be taken out of it.
        self.task = None
        self.forgotten.clear()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
