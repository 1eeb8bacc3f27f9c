"""The continual trainer: tails the event log, learns it in micro-batches, retrains fully
when asked, on a schedule or on drift, gates every candidate and publishes the ones that
pass. It runs inside a Ray actor (`services.trainer.ray_runtime`); nothing here needs Ray.

Exactly once: the learner's checkpoint holds its weights, optimizer, replay reservoir and
the accounting of the offsets it learned, and is written whole before `state.json` names it
(both by atomic renames). A version is published only from a committed checkpoint, and
`state.json` maps each published version to its checkpoint. A trainer killed at any moment
restarts from the newest committed checkpoint and reads the log from the offset after it:
the work done since is redone from the same state, so no event is skipped or learned twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.retrieval.v1 import retrieval_pb2_grpc
from services.trainer.config import TrainerConfig
from services.trainer.continual import ContinualLearner, checkpoint_users, forget_in_checkpoint
from services.trainer.gate import GateDecision, decide
from services.trainer.publish import Publisher, PublishSettings
from services.trainer.retrain import RetrainRequest, RetrainResult, full_retrain
from services.trainer.sources import EVENT_PAGE, logged_event, read_content, read_events
from services.trainer.training import TrainedModel, forget_users, load_trained
from shared.batching import Batched
from shared.clients import channel
from shared.embedding_client import EmbeddingClient
from shared.model_store import LiveVersion, model_name, write_json_atomically

log = logging.getLogger(__name__)
STATE_FILE = "state.json"
CONTENT_REFRESH_S = 300.0
RetrainRunner = Callable[[RetrainRequest], Awaitable[RetrainResult]]


async def retrain_in_thread(request: RetrainRequest) -> RetrainResult:
    return await asyncio.to_thread(full_retrain, request)


@dataclass
class Commit:
    """What `state.json` records; written after the checkpoint it names is complete."""

    # The committed checkpoint's directory name ("<offset>-<sequence>"); "": none yet.
    # Names are never reused, so a checkpoint is never rewritten in place.
    checkpoint: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # version -> checkpoint
    last_gate_decision: str = ""
    last_publish: float = 0.0
    last_full_retrain_reason: str = ""
    last_full_retrain_at: float = 0.0
    baseline_hit_rate: float = 0.0  # the last full retrain's, for the drift signal
    paused: bool = False  # after a rollback, until TriggerRetrain


class GateRejected(RuntimeError):
    pass


@dataclass
class ForgetReport:
    """What forgetting one user took out of the trainer."""

    model_knew_user: bool = False
    replay_samples_deleted: int = 0
    model_versions_rewritten: int = 0
    checkpoints_rewritten: int = 0


class ContinualTrainer:
    def __init__(self, config: TrainerConfig, retrain: RetrainRunner = retrain_in_thread) -> None:
        self.config = config
        self.job = config.job
        self.store = config.job.store
        self.retrain_runner = retrain
        self.checkpoints = config.state_dir / "checkpoints"
        self.commit = Commit()
        self.learner: ContinualLearner | None = None
        self.live_model: TrainedModel | None = None
        self.log_end = 0
        self.state = "starting"
        self.retrain_task: asyncio.Task[RetrainResult] | None = None
        self.retrain_reason = ""
        self.publish_requested = False
        self.rejections = 0
        self.recent: deque[tuple[int, float]] = deque()  # (events, hits) of the learner
        self.changed = asyncio.Condition()  # notified whenever live.json may have changed
        self.lock = asyncio.Lock()  # one of learn / checkpoint / rollback / adopt at a time
        self.publish_lock = asyncio.Lock()  # one of publish / retire / rollback at a time
        self.publishing: asyncio.Task[None] | None = None
        self.pinned: set[str] = set()  # checkpoints of publishes under way
        self.stopping = asyncio.Event()
        self.last_checkpoint = time.monotonic()
        self.checkpointed_offset = -1
        self.content_read_at = time.monotonic()
        self.retirements: set[asyncio.Task[Any]] = set()
        # Users forgotten while a full retrain was under way: it may have read their events.
        self.retrain_forgets: set[str] = set()
        # Concurrent ForgetUser calls share one pass over the checkpoints and versions.
        self.forgets: Batched[str, ForgetReport] = Batched(self._forget_all)

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._features_channel = channel(self.job.features_address)
        self._retrieval_channel = channel(self.job.retrieval_address)
        self.features = features_pb2_grpc.FeaturesServiceStub(self._features_channel)
        self.embedding = EmbeddingClient(self.job.embedding_address, timeout_s=30.0)
        self.publisher = Publisher(
            self.store,
            self.embedding,
            self.features,
            retrieval_pb2_grpc.RetrievalServiceStub(self._retrieval_channel),
            PublishSettings(grace_s=self.job.publish.grace_s),
        )
        await self._restore()

    async def close(self) -> None:
        """Stops after a publish under way (seconds) and commits what was learned since the
        last checkpoint; call it once `run` has returned."""
        self.stopping.set()
        if self.publishing is not None:
            with contextlib.suppress(Exception):
                await self.publishing
        async with self.lock:
            if self.learner is not None and self.learner.offset != self.checkpointed_offset:
                await self._checkpoint()
        for task in [*self.retirements, *([self.retrain_task] if self.retrain_task else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._features_channel.close()
        await self._retrieval_channel.close()
        await self.embedding.close()

    async def run(self) -> None:
        """Learns until stopped; an error in one round is logged and the round retried."""
        failures = 0
        while not self.stopping.is_set():
            wait = self.config.poll_s
            try:
                learned = await self._round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                wait = min(30.0, self.config.poll_s * 2**failures)  # e.g. features is down
                log.exception("trainer round failed; retrying", extra={"in_s": wait})
                learned = 0
            if not learned:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)

    async def _round(self) -> int:
        await self._finish_retrain_if_done()
        if self.learner is None:
            await self._bootstrap_if_possible()
            return 0
        learned = await self._learn_next()
        self._start_retrain_if_due()
        if self._publish_due():
            await self._publish_candidate()
        elif (
            time.monotonic() - self.last_checkpoint >= self.config.checkpoint_every_s
            and self.learner.offset != self.checkpointed_offset
        ):
            async with self.lock:  # a forget or a rollback may be changing the learner
                await self._checkpoint()
        return learned

    # Restore and bootstrap ----------------------------------------------------------------

    def _read_commit(self) -> Commit:
        path = self.config.state_dir / STATE_FILE
        if not path.exists():
            return Commit()
        raw = json.loads(path.read_text())
        return Commit(**raw)

    def _write_commit(self) -> None:
        write_json_atomically(self.config.state_dir / STATE_FILE, asdict(self.commit))

    async def _restore(self) -> None:
        self.commit = self._read_commit()
        if self.checkpoints.exists():  # half-written checkpoints of a trainer that was killed
            for partial in self.checkpoints.glob(".*.tmp"):
                shutil.rmtree(partial, ignore_errors=True)
        live = self.store.live()
        content = await read_content(self.features)
        if self.commit.checkpoint:
            directory = self.checkpoints / self.commit.checkpoint
            self.learner = await asyncio.to_thread(
                ContinualLearner.load,
                directory,
                self.config.continual,
                self.job.train,
                content,
            )
            self.checkpointed_offset = self.learner.offset
            log.info("restored", extra={"offset": self.learner.offset})
        elif live is not None:
            # Published before this trainer kept checkpoints (`recsys train`): go on from it.
            trained = await asyncio.to_thread(self._load_version, live.version)
            self.learner = await self._learner_from(trained, content)
            await self._checkpoint(map_version=live.version)
        if live is not None:
            self.live_model = await asyncio.to_thread(self._load_version, live.version)
            if self.learner and str(live.version) not in self.commit.versions:
                # Killed between publishing and recording it: the version was published
                # from the checkpoint committed just before.
                self.commit.versions[str(live.version)] = self.commit.checkpoint
                self._write_commit()
        self.state = "idle"

    async def _learner_from(
        self, trained: TrainedModel, content: dict[str, np.ndarray]
    ) -> ContinualLearner:
        """A learner going on from a full training, which learned the log up to its offset."""
        events = await read_events(self.features, 1, trained.trained_through_offset)
        return await asyncio.to_thread(
            ContinualLearner.start,
            trained,
            events,
            self.config.continual,
            self.job.train,
            content,
        )

    def _load_version(self, version: int) -> TrainedModel:
        return load_trained(self.store.version_dir(version) / "weights")

    async def _bootstrap_if_possible(self) -> None:
        if self.retrain_task is not None:
            return
        reply = await self.features.ReadEvents(
            features_pb2.ReadEventsRequest(from_offset=1, limit=1), timeout=30.0
        )
        self.log_end = reply.end_offset
        if reply.end_offset - 1 >= self.config.bootstrap_min_events:
            self._start_retrain("bootstrap")

    # Learning -----------------------------------------------------------------------------

    async def _learn_next(self) -> int:
        # Read under the lock too: events read before a user was forgotten must not be
        # learned after the forget.
        async with self.lock:
            learner = self.learner
            assert learner is not None
            reply = await self.features.ReadEvents(
                features_pb2.ReadEventsRequest(
                    from_offset=learner.offset + 1,
                    limit=min(self.config.continual.max_batch_events, EVENT_PAGE),
                ),
                timeout=30.0,
            )
            self.log_end = reply.end_offset
            events = [logged_event(e) for e in reply.events]
            if not events:
                return 0
            self.state = "learning"
            report = await asyncio.to_thread(learner.learn, events, self.live_model)
            self.state = "idle"
        self.recent.append((report.candidate.events, report.candidate.hits))
        while sum(n for n, _ in self.recent) - self.recent[0][0] >= self.config.drift_min_events:
            self.recent.popleft()
        return report.events

    def _publish_due(self) -> bool:
        if self.learner is None or (self.commit.paused and not self.publish_requested):
            return False
        if self.publishing is not None and not self.publishing.done():
            return False
        live = self.store.live()
        behind = self.learner.offset - (live.trained_through_offset if live else 0)
        if behind <= 0:
            self.publish_requested = False
            return False
        if self.publish_requested or behind >= self.config.publish_every_events:
            return True
        return time.time() - self.commit.last_publish >= self.config.publish_every_s

    async def _checkpoint(self, map_version: int | None = None) -> None:
        """Commits the learner's state: the checkpoint directory whole, then state.json."""
        assert self.learner is not None
        learner = self.learner
        name = f"{learner.offset:012d}-{time.time_ns()}"
        await asyncio.to_thread(learner.save, self.checkpoints / name)
        self.commit.checkpoint = name
        self.checkpointed_offset = learner.offset
        if map_version is not None:
            self.commit.versions[str(map_version)] = name
        self._write_commit()
        self.last_checkpoint = time.monotonic()
        await asyncio.to_thread(self._prune_checkpoints, self._needed_checkpoints())

    def _needed_checkpoints(self) -> set[str]:
        """The committed one, those of publishes under way, and those of the live and the
        previous version (a rollback restarts the learner from it)."""
        live = self.store.live()
        needed = {self.commit.checkpoint, *self.pinned}
        for version in (live.version, live.previous) if live else ():
            if version is not None and str(version) in self.commit.versions:
                needed.add(self.commit.versions[str(version)])
        return needed

    def _prune_checkpoints(self, needed: set[str]) -> None:
        if not self.checkpoints.exists():
            return
        kept = sorted(
            (p.name for p in self.checkpoints.iterdir() if not p.name.startswith(".")),
            reverse=True,
        )
        for name in kept[self.config.keep_checkpoints :]:
            if name not in needed:
                shutil.rmtree(self.checkpoints / name, ignore_errors=True)

    # Publishing ---------------------------------------------------------------------------

    async def _publish_candidate(self) -> None:
        """Gates the continual model against the live version on the events it scored since
        the last publish, and publishes it when it passes."""
        assert self.learner is not None
        async with self.lock:
            learner = self.learner
            live = self.store.live()
            window = learner.window
            decision = decide(
                window.candidate,
                window.live if live is not None else None,
                model_name(live.version) if live else "",
                self.config.gate,
            )
            learner.reset_window()
            self.publish_requested = False
            if not decision.accepted:
                self._record_rejection(decision)
                return
            await self._refresh_content()
            await self._checkpoint()
            candidate = await asyncio.to_thread(learner.snapshot)
            candidate.metrics = decision.candidate
            self._start_publish(candidate, decision)

    def _start_publish(self, candidate: TrainedModel, decision: GateDecision) -> None:
        """Publishes in the background from the checkpoint just committed: the learner goes
        on with the log meanwhile (a publish loads Triton, which takes seconds)."""
        self.pinned.add(self.commit.checkpoint)  # not pruned before the version names it
        self.publishing = asyncio.create_task(
            self._publish(candidate, decision, self.commit.checkpoint)
        )
        self.publishing.add_done_callback(_log_failure)

    async def _publish(
        self, candidate: TrainedModel, decision: GateDecision, checkpoint: str
    ) -> None:
        try:
            async with self.publish_lock:
                report = await self.publisher.publish(candidate, retire=False)
        finally:
            self.pinned.discard(checkpoint)
        self.commit.versions[str(report.version)] = checkpoint
        self.commit.last_publish = time.time()
        self.commit.last_gate_decision = decision.reason.replace(
            "accepted:", f"published {model_name(report.version)}:", 1
        )
        self._write_commit()
        self.live_model = candidate
        self.rejections = 0
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
        async with self.changed:
            self.changed.notify_all()
        self._background(self._retire_later())

    async def _retire_later(self) -> None:
        """After the grace period, unloads everything but the live version and the one it
        replaced (kept warm for a rollback)."""
        await asyncio.sleep(self.job.publish.grace_s)
        async with self.publish_lock:
            live = self.store.live()
            if live is None or self.live_model is None:
                return
            keep = [live.version] + ([live.previous] if live.previous is not None else [])
            await self.publisher.retire_all_but(keep, self.live_model)

    def _record_rejection(self, decision: GateDecision) -> None:
        self.commit.last_gate_decision = decision.reason
        self._write_commit()
        self.rejections += 1
        log.warning("candidate rejected", extra={"gate": decision.reason})
        if self.rejections >= self.config.rejections_before_retrain:
            self.rejections = 0
            self._start_retrain("drift")

    async def _refresh_content(self) -> None:
        """The catalogue's content vectors, read again (the whole catalogue, so not before
        every publish): when an item the learner met has none yet, or every 5 minutes for
        items whose text changed."""
        learner = self.learner
        assert learner is not None
        stale = time.monotonic() - self.content_read_at >= CONTENT_REFRESH_S
        if not stale and not await asyncio.to_thread(learner.lacks_content):
            return
        content = await read_content(self.features)
        self.content_read_at = time.monotonic()
        await asyncio.to_thread(learner.add_content, content)

    # Full retrains ------------------------------------------------------------------------

    def _start_retrain(self, reason: str, shuffle_labels: bool = False) -> bool:
        if self.retrain_task is not None:
            return False
        # Only the bootstrap may skip the gate's events: any other retrain is compared with
        # whatever is live when it ends, even if nothing was when it started.
        gated = reason != "bootstrap" or self.store.live() is not None
        request = RetrainRequest(
            features_address=self.job.features_address,
            train=self.job.train,
            reason=reason,
            holdout_events=self.config.gate.min_events if gated else 0,
            k=self.config.gate.k,
            model_dir=str(self.store.root),
            shuffle_labels=shuffle_labels,
        )
        self.retrain_reason = reason
        self.commit.last_full_retrain_reason = reason
        self.commit.last_full_retrain_at = time.time()
        self.retrain_task = asyncio.create_task(self._run_retrain(request))
        log.info("full retrain started", extra={"reason": reason, "shuffled": shuffle_labels})
        return True

    async def _run_retrain(self, request: RetrainRequest) -> RetrainResult:
        return await self.retrain_runner(request)

    def _start_retrain_if_due(self) -> None:
        if self.retrain_task is not None:
            return
        interval = self.config.full_retrain_interval_s
        since = time.time() - self.commit.last_full_retrain_at
        if interval > 0 and since >= interval:
            self._start_retrain("schedule")
            return
        events = sum(n for n, _ in self.recent)
        baseline = self.commit.baseline_hit_rate
        if baseline > 0 and events >= self.config.drift_min_events:
            rate = sum(h for _, h in self.recent) / events
            cooled = since >= max(60.0, 5 * self.config.publish_every_s)
            if rate < baseline * (1.0 - self.config.drift_tolerance) and cooled:
                log.warning("drift", extra={"hit_rate": rate, "baseline": baseline})
                self.recent.clear()
                self._start_retrain("drift")

    async def _finish_retrain_if_done(self) -> None:
        task = self.retrain_task
        if task is None or not task.done():
            return
        try:
            await self._finish_retrain(task)
        finally:
            # Only now: users forgotten until the result is adopted must be taken out of it.
            self.retrain_task = None
            self.retrain_forgets.clear()

    async def _finish_retrain(self, task: asyncio.Task[RetrainResult]) -> None:
        try:
            result = task.result()
        except Exception as error:
            log.exception("full retrain failed")
            self.commit.last_gate_decision = f"full retrain failed: {error}"
            self._write_commit()
            return
        live = self.store.live()
        decision = decide(
            result.candidate,
            result.live,
            model_name(result.live_version) if result.live_version is not None else "",
            self.config.gate,
        )
        if live is not None and self.learner is not None:
            # Fairer than the held-out events, which the live version may have learned:
            # the events that came after the retrain's, which the continual model scored
            # before learning them.
            async with self.lock:
                challenger, incumbent = await asyncio.to_thread(
                    self.learner.compare_after,
                    result.trained.trained_through_offset,
                    result.trained,
                )
            if challenger.events >= self.config.gate.min_events:
                decision = decide(challenger, incumbent, "the continual model", self.config.gate)
        decision = GateDecision(
            decision.accepted,
            decision.reason + f" (full retrain: {result.reason})",
            decision.candidate,
            decision.live,
        )
        if not decision.accepted:
            self._record_rejection(decision)
            return
        await self._adopt(result, decision)

    async def _adopt(self, result: RetrainResult, decision: GateDecision) -> None:
        """The retrained model replaces the learner: it catches up with the events that
        arrived while it trained (learned once, incrementally), then is published. All of
        it under the lock, so that no forgotten user slips in between."""
        trained = result.trained
        through = trained.trained_through_offset
        content = await read_content(self.features)
        async with self.lock:
            forget_users(trained, self.retrain_forgets)
            learner = await self._learner_from(trained, content)
            current = self.learner.offset if self.learner else through
            if current > through:
                newer = await read_events(self.features, through + 1, current)
                await asyncio.to_thread(learner.learn, newer)
            self.learner = learner
            if result.candidate.events:
                self.commit.baseline_hit_rate = result.candidate.hits / result.candidate.events
            await self._checkpoint()
            candidate = await asyncio.to_thread(learner.snapshot)
            candidate.metrics = decision.candidate
            if self.publishing is not None:
                await self.publishing  # one publish at a time, in order
            self._start_publish(candidate, decision)

    # Requests -----------------------------------------------------------------------------

    async def trigger(self, full: bool, shuffle_labels: bool = False) -> bool:
        if self.commit.paused and not shuffle_labels:
            self.commit.paused = False
            self._write_commit()
        if not full:
            self.publish_requested = True
            return True
        return self._start_retrain("requested", shuffle_labels)

    async def wait_until_trained(self, offset: int, timeout_s: float) -> LiveVersion | None:
        """The live version once it has trained through `offset`; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = self.store.live()
            if live is not None and live.trained_through_offset >= offset:
                publishing = self.publishing
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

    async def rollback(self) -> tuple[int, int]:
        """Back to the previous version at once; the learner restarts from its checkpoint,
        and publishing pauses until TriggerRetrain: relearning the same events could well
        make the same model again. Returns (the version now live, the one rolled back from).
        """
        async with self.lock, self.publish_lock:
            live = self.store.live()
            if live is None or live.previous is None:
                raise LookupError("there is no previous version to roll back to")
            target = live.previous
            checkpoint = self.commit.versions.get(str(target))
            if checkpoint is None or not (self.checkpoints / checkpoint).exists():
                raise LookupError(f"the checkpoint of {model_name(target)} is gone")
            previous = await asyncio.to_thread(self._load_version, target)
            await self.publisher.rollback(previous)
            self.learner = await asyncio.to_thread(
                ContinualLearner.load,
                self.checkpoints / checkpoint,
                self.config.continual,
                self.job.train,
                await read_content(self.features),
            )
            self.live_model = previous
            self.commit.checkpoint = checkpoint
            self.commit.paused = True
            self.commit.last_gate_decision = (
                f"rolled back from {model_name(live.version)} to {model_name(target)};"
                " publishing paused until TriggerRetrain"
            )
            self.commit.last_publish = time.time()
            self._write_commit()
            self.recent.clear()
        self._background(self._reconcile_and_retire(target, previous))
        async with self.changed:
            self.changed.notify_all()
        return target, live.version

    async def forget(self, user_id: str) -> ForgetReport:
        """Takes the user out of the model, everywhere the trainer keeps it (its events have
        left the log already): the learner's state, then a checkpoint of it, every stored
        version and every older checkpoint, so that neither a publish nor a restart nor a
        rollback brings the user back. Concurrent calls share one pass."""
        return await self.forgets.submit(user_id)

    async def _forget_all(self, user_ids: list[str]) -> list[ForgetReport]:
        wanted = set(user_ids)
        reports = {user: ForgetReport() for user in wanted}
        async with self.lock:
            if self.publishing is not None:
                # Its version may hold the users; it is rewritten below once written.
                with contextlib.suppress(Exception):
                    await self.publishing
            if self.retrain_task is not None:
                self.retrain_forgets |= wanted
            if self.live_model is not None:
                forget_users(self.live_model, wanted)
            if self.learner is not None:
                found = await asyncio.to_thread(self.learner.forget, wanted)
                for user, left in found.items():
                    reports[user].model_knew_user = True
                    reports[user].replay_samples_deleted = left.replay_samples
                if found:
                    await self._checkpoint()  # what a restart resumes from
            async with self.publish_lock:
                versions = await asyncio.to_thread(self.publisher.forget_users, wanted)
            checkpoints = await asyncio.to_thread(self._forget_in_checkpoints, wanted)
        for user, report in reports.items():
            report.model_versions_rewritten = versions.get(user, 0)
            report.checkpoints_rewritten = checkpoints.get(user, 0)
        if any(r.model_knew_user or r.model_versions_rewritten for r in reports.values()):
            log.info("users forgotten", extra={"users": len(wanted)})
        return [reports[user] for user in user_ids]

    def _forget_in_checkpoints(self, user_ids: set[str]) -> dict[str, int]:
        """Every checkpoint but the one just committed, written again without the users;
        how many each user was in."""
        counts: dict[str, int] = {}
        if not self.checkpoints.exists():
            return counts
        for directory in sorted(self.checkpoints.iterdir()):
            if directory.name.startswith(".") or directory.name == self.commit.checkpoint:
                continue
            if not user_ids & set(checkpoint_users(directory)):
                continue
            found = forget_in_checkpoint(directory, user_ids, self.config.continual, self.job.train)
            for user in found:
                counts[user] = counts.get(user, 0) + 1
        return counts

    async def _reconcile_and_retire(self, version: int, trained: TrainedModel) -> None:
        await self.publisher.reconcile(version, trained)
        await self._retire_later()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Retiring old versions in the background; a failure (Triton down, say) is logged,
        and the next publish retires them again."""
        task = asyncio.create_task(work)
        self.retirements.add(task)
        task.add_done_callback(self.retirements.discard)
        task.add_done_callback(_log_retirement_failure)

    def _state_name(self) -> str:
        if self.commit.paused:
            return "paused"  # it learns on, but publishes nothing
        if self.publishing is not None and not self.publishing.done():
            return "publishing"
        if self.state != "idle":
            return self.state
        return "full-retrain" if self.retrain_task is not None else "idle"

    def status(self) -> dict[str, Any]:
        live = self.store.live()
        learner = self.learner
        return {
            "live_version": model_name(live.version) if live else "",
            "previous_version": model_name(live.previous) if live and live.previous else "",
            "trained_offset": learner.offset if learner else 0,
            "log_end_offset": self.log_end,
            "last_publish": self.commit.last_publish,
            "live_metrics": dict(live.metrics) if live else {},
            "last_gate_decision": self.commit.last_gate_decision,
            "live_trained_offset": live.trained_through_offset if live else 0,
            "state": self._state_name(),
            "full_retrain_running": self.retrain_task is not None,
            "events_learned": learner.accounting.events_learned if learner else 0,
            "offset_sum": learner.accounting.offset_sum if learner else 0,
            "last_full_retrain_reason": self.commit.last_full_retrain_reason,
        }


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("publish failed; the next one tries again", exc_info=task.exception())


def _log_retirement_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "retiring old versions failed; the next publish tries again",
            extra={"why": str(task.exception())},
        )
