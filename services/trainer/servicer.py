"""recsys.trainer.v1.TrainerService: a thin layer over the trainer actor."""

from __future__ import annotations

from typing import Any

import grpc
from ray.exceptions import RayActorError, RayTaskError

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from shared.errors import FailedPrecondition, InvalidArgument, Unavailable
from shared.items import validate_id
from shared.model_store import model_name

MAX_WAIT_S = 3600.0


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, actor: Any, ray_address: str) -> None:
        self.actor = actor
        self.ray_address = ray_address or "in-process"

    async def _call(self, method: Any, *args: Any) -> Any:
        try:
            return await method.remote(*args)
        except RayTaskError as error:
            cause = error.cause
            if isinstance(cause, LookupError):
                raise FailedPrecondition(str(cause)) from error
            raise
        except RayActorError as error:
            raise Unavailable(f"the trainer actor is gone: {error}") from error

    async def GetStatus(
        self, request: trainer_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.GetStatusResponse:
        status = await self._call(self.actor.status)
        reply = trainer_pb2.GetStatusResponse(
            live_version=status["live_version"],
            trained_offset=status["trained_offset"],
            log_end_offset=status["log_end_offset"],
            live_metrics=status["live_metrics"],
            last_gate_decision=status["last_gate_decision"],
            live_trained_offset=status["live_trained_offset"],
            state=status["state"],
            full_retrain_running=status["full_retrain_running"],
            events_learned=status["events_learned"],
            previous_version=status["previous_version"],
            last_full_retrain_reason=status["last_full_retrain_reason"],
            last_full_retrain_node_id=status["last_full_retrain_node_id"],
            last_full_retrain_pid=status["last_full_retrain_pid"],
            ray_address=self.ray_address,
            learned_offset_sum=status["offset_sum"],
        )
        ranking = status["ranking"]
        if ranking:
            reply.ranking_settings.update(ranking["weights"])
            reply.ranking_changes = ranking["changes"]
            reply.last_ranking_change = ranking["last_change"]
        if status["last_publish"]:
            reply.last_publish.FromNanoseconds(int(status["last_publish"] * 1e9))
        return reply

    async def TriggerRetrain(
        self, request: trainer_pb2.TriggerRetrainRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TriggerRetrainResponse:
        if request.shuffle_labels and not request.full:
            raise InvalidArgument("shuffle_labels", "applies to a full retrain only")
        started = await self._call(self.actor.trigger, request.full, request.shuffle_labels)
        if not started:
            raise FailedPrecondition("a full retrain is running already")
        return trainer_pb2.TriggerRetrainResponse(started=True)

    async def WaitUntilTrained(
        self, request: trainer_pb2.WaitUntilTrainedRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.WaitUntilTrainedResponse:
        if request.offset < 0:
            raise InvalidArgument("offset", "must be >= 0")
        if not 0 <= request.timeout_s <= MAX_WAIT_S:
            raise InvalidArgument("timeout_s", f"must be in [0, {MAX_WAIT_S:.0f}]")
        timeout = request.timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining - 0.05))
        reached, live, offset = await self._call(
            self.actor.wait_until_trained, request.offset, timeout
        )
        return trainer_pb2.WaitUntilTrainedResponse(
            reached=reached, live_version=live, live_trained_offset=offset
        )

    async def ForgetUser(
        self, request: trainer_pb2.ForgetUserRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ForgetUserResponse:
        validate_id(request.user_id, "user_id")
        report = await self._call(self.actor.forget, request.user_id)
        return trainer_pb2.ForgetUserResponse(
            model_knew_user=report.model_knew_user,
            replay_samples_deleted=report.replay_samples_deleted,
            model_versions_rewritten=report.model_versions_rewritten,
            checkpoints_rewritten=report.checkpoints_rewritten,
        )

    async def Rollback(
        self, request: trainer_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.RollbackResponse:
        live, rolled_back_from = await self._call(self.actor.rollback)
        return trainer_pb2.RollbackResponse(
            live_version=model_name(live), rolled_back_from=model_name(rolled_back_from)
        )
