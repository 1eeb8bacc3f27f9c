"""A full retrain over every event, with the gate's comparison built in: it runs wherever
the trainer sends it (a Ray task on the cluster, or a thread), reading the log and the
catalogue from the features service and the live version from the model store."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recsys.features.v1 import features_pb2_grpc
from services.trainer.continual_learner import Scores, copy_trained, score_samples
from services.trainer.features_reader import read_training_data
from services.trainer.model_training import (
    SampleBuilder,
    TrainConfig,
    TrainedModel,
    load_trained,
    train,
)
from services.trainer.two_tower import Vocabulary
from shared.clients import channel
from shared.events import LoggedEvent
from shared.model_store import ModelStore

MAX_GATE_EVENTS = 5_000


@dataclass(frozen=True)
class RetrainRequest:
    features_address: str
    train: TrainConfig
    reason: str  # "requested", "schedule", "drift" or "bootstrap"
    holdout_events: int  # at least this many newest events are held out for the gate (0: none)
    k: int
    # The model store: the candidate is scored against the version live once it has
    # trained (not when it started: a version may go live meanwhile); "": against none.
    model_dir: str = ""
    shuffle_labels: bool = False  # a gate drill: the model learns shuffled items


@dataclass
class RetrainResult:
    trained: TrainedModel
    candidate: Scores  # the candidate before it learned the held-out events
    live: Scores | None  # the live version on the same events
    live_version: int | None  # which version that was
    events: int
    seconds: float
    reason: str
    node_id: str = ""  # the Ray node that ran it ("" outside Ray)
    pid: int = 0  # and the worker process there


async def _read(address: str) -> tuple[list[LoggedEvent], dict[str, np.ndarray]]:
    features_channel = channel(address)
    try:
        return await read_training_data(features_pb2_grpc.FeaturesServiceStub(features_channel))
    finally:
        await features_channel.close()


def shuffled(events: list[LoggedEvent], seed: int) -> list[LoggedEvent]:
    """The same users at the same times, every item relabelled as another one: a model
    that learns this places every item where another belongs."""
    items = sorted({e.event.item_id for e in events})
    relabelled = dict(zip(items, np.random.default_rng(seed).permutation(items), strict=True))
    return [
        replace(e, event=replace(e.event, item_id=str(relabelled[e.event.item_id]))) for e in events
    ]


def full_retrain(request: RetrainRequest) -> RetrainResult:
    started = time.monotonic()
    events, content = asyncio.run(_read(request.features_address))
    if len(events) < 2:
        raise ValueError("the event log holds too few events to train on")
    # The gate's events: a tenth of the log, at least the gate's minimum, at most 5,000.
    wanted = min(max(request.holdout_events, len(events) // 10), MAX_GATE_EVENTS)
    held = max(0, min(wanted, len(events) // 2)) if request.holdout_events else 0
    cut = len(events) - held
    learned = events
    if request.shuffle_labels:
        learned = shuffled(events[:cut], request.train.seed) + events[cut:]
    at_cut: list[TrainedModel] = []
    trained = train(
        learned,
        content,
        request.train,
        holdout_events=held,
        at_cut=lambda model: at_cut.append(copy_trained(model)),
    )
    candidate, live, live_version = Scores(), None, None
    if held:
        builder = SampleBuilder(Vocabulary(), Vocabulary(), trained.tower.history_len)
        samples = builder.add(events).take(slice(cut, None))  # the true events, histories
        item_ids = builder.items.ids
        catalogue = item_ids + [i for i in content if i not in builder.items]
        users = builder.users.ids

        def score(model: TrainedModel) -> Scores:
            return score_samples(model, samples, users, item_ids, catalogue, content, request.k)

        candidate = score(at_cut[0] if at_cut else trained)
        store = ModelStore(Path(request.model_dir)) if request.model_dir else None
        serving = store.live() if store else None
        if store and serving:
            live = score(load_trained(store.version_dir(serving.version) / "weights"))
            live_version = serving.version
    return RetrainResult(
        trained,
        candidate,
        live,
        live_version,
        len(events),
        time.monotonic() - started,
        request.reason,
        *_where(),
    )


def _where() -> tuple[str, int]:
    import ray  # only where Ray runs it; the thread runner and tests need no Ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return node, os.getpid()
