"""The continual trainer's learning loop: it tails the event log, learns it in
micro-batches, checkpoints what it learned, gates every candidate and has the ones that pass
published; full retrains are adopted the same way. It runs inside a Ray actor
(`services.trainer.ray_runtime`); nothing here needs Ray.

Its parts: `checkpoints.py` (the commit record and why this is exactly once),
`publication.py` (publishing, retiring, rolling back), `retrain_schedule.py` (when a full
retrain starts), `continual_learner.py` (the model's own micro-batch learning).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.features.v1 import features_pb2_grpc
from services.trainer.checkpoints import Checkpoints, Commit
from services.trainer.config import TrainerConfig
from services.trainer.continual_learner import ContinualLearner
from services.trainer.features_reader import (
    EVENT_PAGE,
    log_end,
    read_content,
    read_events,
    read_page,
)
from services.trainer.full_retrain import RetrainResult
from services.trainer.gate import GateDecision, decide
from services.trainer.model_training import TrainedModel, forget_users, load_trained
from services.trainer.publication import Publication
from services.trainer.publisher import Publisher
from services.trainer.ranking_tuner import RankingTuner, tuned_values
from services.trainer.retrain_schedule import RetrainRunner, RetrainSchedule, retrain_in_thread
from shared.batching import Batched
from shared.clients import channel
from shared.embedding_client import EmbeddingClient
from shared.events import LoggedEvent
from shared.model_store import LiveVersion, model_name
from shared.retrieval_client import ReplicatedRetrieval

log = logging.getLogger(__name__)
CONTENT_REFRESH_S = 300.0


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
        self.last_retrain_ran_on: tuple[str, int] = ("", 0)  # since this trainer started
        self.job = config.job
        self.store = config.job.store
        self.checkpoints = Checkpoints(config.state_dir, config.keep_checkpoints, self.store)
        self.retrains = RetrainSchedule(config, self.store, self.checkpoints, retrain)
        self.publication = Publication(
            self.store, self.checkpoints, self.job.publish.grace_s, self.retrains.published
        )
        self.learner: ContinualLearner | None = None
        self.tuner: RankingTuner | None = None  # None: the gateway's settings, untuned
        self.log_end = 0
        self.state = "starting"
        self.publish_requested = False
        self.lock = asyncio.Lock()  # one of learn / checkpoint / rollback / adopt at a time
        self.stopping = asyncio.Event()
        self.last_checkpoint = time.monotonic()
        self.checkpointed_offset = -1
        self.content_read_at = time.monotonic()
        # Concurrent ForgetUser calls share one pass over the checkpoints and versions.
        self.forgets: Batched[str, ForgetReport] = Batched(self._forget_all)

    @property
    def commit(self) -> Commit:
        return self.checkpoints.commit

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._features_channel = channel(self.job.features_address)
        self._retrieval = ReplicatedRetrieval(self.job.retrieval_address)
        self.features = features_pb2_grpc.FeaturesServiceStub(self._features_channel)
        self.embedding = EmbeddingClient(
            self.job.embedding_address, timeout_s=30.0, control_key=self.job.triton_control_key
        )
        self.publication.connect(
            Publisher(
                self.store,
                self.embedding,
                self.features,
                self._retrieval,
                self.job.publish,
            )
        )
        await self._restore()

    async def close(self) -> None:
        """Stops after a publish under way (seconds) and commits what was learned since the
        last checkpoint; call it once `run` has returned."""
        self.stopping.set()
        await self.publication.settle()
        async with self.lock:
            if self.learner is not None and self.learner.offset != self.checkpointed_offset:
                await self._checkpoint()
        await self.publication.close()
        await self.retrains.close()
        if self.tuner is not None:
            self.tuner.close()
        await self._features_channel.close()
        await self._retrieval.close()
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
        self.retrains.start_if_due()
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

    async def _restore(self) -> None:
        commit = self.checkpoints.restore()
        self.publication.publisher.discard_incomplete()  # a publish the kill cut short
        live = self.store.live()
        content = await read_content(self.features)
        if self.config.tuner.enabled:
            # The search goes on from the live version's values; the replay is rebuilt
            # from the log as the learner goes on.
            published = self.store.serving(live.version).ranking if live else {}
            self.tuner = await asyncio.to_thread(
                RankingTuner,
                self.config.ranking.with_published(published),
                self.config.tuner,
                self.config.signals,
                self.config.state_dir / "ranking-replay",
            )
            self.tuner.use_content(content)
        if commit.checkpoint:
            self.learner = await self._load_learner(commit.checkpoint, content)
            self.checkpointed_offset = self.learner.offset
            log.info("restored", extra={"offset": self.learner.offset})
        elif live is not None:
            # Published before this trainer kept checkpoints (`recsys train`): go on from it.
            trained = await asyncio.to_thread(self._load_version, live.version)
            self.learner = await self._learner_from(trained, content)
            await self._checkpoint(map_version=live.version)
        if live is not None:
            self.publication.live_model = await asyncio.to_thread(self._load_version, live.version)
            if self.learner and str(live.version) not in commit.versions:
                # Killed between publishing and recording it: the version was published
                # from the checkpoint committed just before.
                commit.versions[str(live.version)] = commit.checkpoint
                self.checkpoints.write_commit()
        self.state = "idle"

    async def _load_learner(
        self, checkpoint: str, content: dict[str, np.ndarray]
    ) -> ContinualLearner:
        return await asyncio.to_thread(
            ContinualLearner.load,
            self.checkpoints.path(checkpoint),
            self.config.continual,
            self.job.train,
            content,
        )

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
        if self.retrains.running:
            return
        self.log_end = await log_end(self.features)
        if self.log_end - 1 >= self.config.bootstrap_min_events:
            self.retrains.start("bootstrap")

    # Learning -----------------------------------------------------------------------------

    async def _learn_next(self) -> int:
        # Read under the lock too: events read before a user was forgotten must not be
        # learned after the forget.
        async with self.lock:
            learner = self.learner
            assert learner is not None
            limit = min(self.config.continual.max_batch_events, EVENT_PAGE)
            before = learner.offset
            events, self.log_end = await read_page(self.features, before + 1, limit)
            if not events:
                return 0
            self.state = "learning"
            report = await asyncio.to_thread(learner.learn, events, self.publication.live_model)
            await self._tune(before, events)
            self.state = "idle"
        self.retrains.learned(report.candidate.events, report.candidate.hits)
        return report.events

    async def _tune(self, before: int, events: list[LoggedEvent]) -> None:
        """The tuner follows the events just learned, and any it has not yet followed before
        them (after a restart, it starts from the log's beginning)."""
        tuner = self.tuner
        if tuner is None:
            return
        if tuner.offset < before:
            events = await read_events(self.features, tuner.offset + 1, before) + events
        live = self.store.live()
        await asyncio.to_thread(
            tuner.observe, events, self.publication.live_model, live.version if live else 0
        )

    def _ranking(self) -> dict[str, float]:
        """The tuned settings a version is published with; none when the trainer does not
        tune (the gateway then ranks by its own configuration)."""
        return tuned_values(self.tuner.chosen) if self.tuner is not None else {}

    async def _checkpoint(self, map_version: int | None = None) -> None:
        assert self.learner is not None
        learner = self.learner
        await self.checkpoints.save(learner, map_version)
        self.checkpointed_offset = learner.offset
        self.last_checkpoint = time.monotonic()

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
        if self.tuner is not None:
            self.tuner.use_content(content)

    # Publishing ---------------------------------------------------------------------------

    def _publish_due(self) -> bool:
        if self.learner is None or (self.commit.paused and not self.publish_requested):
            return False
        if self.publication.busy():
            return False
        live = self.store.live()
        behind = self.learner.offset - (live.trained_through_offset if live else 0)
        if behind <= 0:
            self.publish_requested = False
            return False
        if self.publish_requested or behind >= self.config.publish_every_events:
            return True
        return time.time() - self.commit.last_publish >= self.config.publish_every_s

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
                self.retrains.rejected(decision)
                return
            await self._refresh_content()
            await self._checkpoint()
            candidate = await asyncio.to_thread(learner.snapshot)
            candidate.metrics = decision.candidate
            candidate.ranking = self._ranking()
            self.publication.start(candidate, decision)

    # Full retrains ------------------------------------------------------------------------

    async def _finish_retrain_if_done(self) -> None:
        task = self.retrains.finished()
        if task is None:
            return
        try:
            await self._finish_retrain(task)
        finally:
            self.retrains.done()

    async def _finish_retrain(self, task: asyncio.Task[RetrainResult]) -> None:
        try:
            result = task.result()
        except Exception as error:
            log.exception("full retrain failed")
            # One line: Ray's errors (a worker node that died) span many.
            why = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            self.commit.last_gate_decision = f"full retrain failed: {type(error).__name__}: {why}"
            self.checkpoints.write_commit()
            return
        self.last_retrain_ran_on = (result.node_id, result.pid)
        log.info(
            "full retrain finished",
            extra={"node_id": result.node_id, "pid": result.pid, "seconds": result.seconds},
        )
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
            self.retrains.rejected(decision)
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
            forget_users(trained, self.retrains.forgotten)
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
            candidate.ranking = self._ranking()
            if self.publication.task is not None:
                await self.publication.task  # one publish at a time, in order
            self.publication.start(candidate, decision)

    # Requests -----------------------------------------------------------------------------

    async def trigger(self, full: bool, shuffle_labels: bool = False) -> bool:
        if self.commit.paused and not shuffle_labels:
            self.commit.paused = False
            self.checkpoints.write_commit()
        if not full:
            self.publish_requested = True
            return True
        return self.retrains.start("requested", shuffle_labels)

    async def wait_until_trained(self, offset: int, timeout_s: float) -> LiveVersion | None:
        """The live version once it has trained through `offset`; None on timeout."""
        return await self.publication.wait_until_trained(offset, timeout_s)

    async def rollback(self) -> tuple[int, int]:
        """Back to the previous version at once; the learner restarts from its checkpoint,
        and publishing pauses until TriggerRetrain: relearning the same events could well
        make the same model again. Returns (the version now live, the one rolled back from).
        """
        async with self.lock, self.publication.lock:
            live = self.store.live()
            if live is None or live.previous is None:
                raise LookupError("there is no previous version to roll back to")
            target = live.previous
            checkpoint = self.checkpoints.of_version(target)
            if checkpoint is None:
                raise LookupError(f"the checkpoint of {model_name(target)} is gone")
            previous = await asyncio.to_thread(self._load_version, target)
            await self.publication.roll_back_to(previous)
            self.learner = await self._load_learner(checkpoint, await read_content(self.features))
            commit = self.commit
            commit.checkpoint = checkpoint
            commit.paused = True
            commit.last_gate_decision = (
                f"rolled back from {model_name(live.version)} to {model_name(target)};"
                " publishing paused until TriggerRetrain"
            )
            commit.last_publish = time.time()
            self.checkpoints.write_commit()
            self.retrains.recent.clear()
            if self.tuner is not None:  # the settings switch back with the model
                self.tuner.adopt(self.store.serving(target).ranking)
        await self.publication.after_rollback(target)
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
            # A publish under way may hold the users; its version is rewritten below.
            await self.publication.settle()
            if self.retrains.running:
                self.retrains.forgotten |= wanted
            if self.publication.live_model is not None:
                forget_users(self.publication.live_model, wanted)
            if self.tuner is not None:
                await asyncio.to_thread(self.tuner.forget, wanted)
            if self.learner is not None:
                found = await asyncio.to_thread(self.learner.forget, wanted)
                for user, left in found.items():
                    reports[user].model_knew_user = True
                    reports[user].replay_samples_deleted = left.replay_samples
                if found:
                    await self._checkpoint()  # what a restart resumes from
            versions = await self.publication.forget_users(wanted)
            checkpoints = await asyncio.to_thread(
                self.checkpoints.forget_users, wanted, self.config.continual, self.job.train
            )
        for user, report in reports.items():
            report.model_versions_rewritten = versions.get(user, 0)
            report.checkpoints_rewritten = checkpoints.get(user, 0)
        if any(r.model_knew_user or r.model_versions_rewritten for r in reports.values()):
            log.info("users forgotten", extra={"users": len(wanted)})
        return [reports[user] for user in user_ids]

    # Status -------------------------------------------------------------------------------

    def _state_name(self) -> str:
        if self.commit.paused:
            return "paused"  # it learns on, but publishes nothing
        if self.publication.busy():
            return "publishing"
        if self.state != "idle":
            return self.state
        return "full-retrain" if self.retrains.running else "idle"

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
            "full_retrain_running": self.retrains.running,
            "gate_rejections_in_a_row": self.retrains.rejections,
            "events_learned": learner.accounting.events_learned if learner else 0,
            "offset_sum": learner.accounting.offset_sum if learner else 0,
            "last_full_retrain_reason": self.commit.last_full_retrain_reason,
            "last_full_retrain_node_id": self.last_retrain_ran_on[0],
            "last_full_retrain_pid": self.last_retrain_ran_on[1],
            "ranking": self.tuner.status() if self.tuner is not None else {},
            "live_newest_event_appended_at": live.newest_event_appended_at if live else 0.0,
        }

    async def monitored_status(self) -> dict[str, Any]:
        """The status, and when the log acknowledged the oldest event the served version does
        not hold (0.0: it holds them all): how long it has been missing is the model's
        staleness, which no offset or publish time says (a quiet log publishes nothing)."""
        status = self.status()
        events, _ = await read_page(self.features, status["live_trained_offset"] + 1, 1, 5.0)
        status["oldest_unserved_appended_at"] = events[0].appended_at if events else 0.0
        return status
