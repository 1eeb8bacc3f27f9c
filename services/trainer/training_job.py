"""One training run: read the event log and the catalogue from the features service,
train, and publish the result (the `recsys train` command; the evaluation calls it too)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from recsys.features.v1 import features_pb2_grpc
from services.trainer.features_reader import read_training_data
from services.trainer.model_training import TrainConfig, TrainedModel, save_trained, train
from services.trainer.publisher import Publisher, PublishReport, PublishSettings
from shared.clients import channel
from shared.config import ConfigError, Env, default_address, model_dir, triton_control_key
from shared.embedding_client import EmbeddingClient
from shared.model_store import ModelStore
from shared.retrieval_client import ReplicatedRetrieval
from shared.triton_repository import VARIANTS, Variant

log = logging.getLogger(__name__)
PREFIX = "RECSYS_TRAINER_"


@dataclass(frozen=True)
class JobConfig:
    features_address: str
    retrieval_address: str
    embedding_address: str
    store: ModelStore
    train: TrainConfig
    publish: PublishSettings
    triton_control_key: str = ""  # shared/config.triton_control_key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobConfig:
        env = Env(PREFIX, environ)
        defaults = TrainConfig()
        return cls(
            features_address=env.address("FEATURES_ADDRESS", default_address("features")),
            retrieval_address=env.address("RETRIEVAL_ADDRESS", default_address("retrieval")),
            embedding_address=env.address("EMBEDDING_ADDRESS", default_address("embedding")),
            store=ModelStore(model_dir(environ)),
            train=replace(
                defaults,
                epochs=env.number("EPOCHS", defaults.epochs, minimum=0.01),
                max_seconds=env.number("MAX_SECONDS", defaults.max_seconds, minimum=0.1),
                threads=env.integer("THREADS", defaults.threads, minimum=1, maximum=256),
            ),
            publish=PublishSettings(
                grace_s=env.number("PUBLISH_GRACE_S", 10.0),
                triton_variant=_triton_variant(env),
            ),
            triton_control_key=triton_control_key(environ),
        )


def _triton_variant(env: Env) -> Variant:
    value = env.string("TRITON_PLATFORM", "python")
    for variant in VARIANTS:
        if value == variant:
            return variant
    raise ConfigError(f"{env.prefix}TRITON_PLATFORM={value!r} is not one of {', '.join(VARIANTS)}")


@dataclass
class JobResult:
    trained: TrainedModel
    events: int
    report: PublishReport | None


async def run_job(config: JobConfig, from_offset: int = 0, publish: bool = True) -> JobResult:
    features_channel = channel(config.features_address)
    retrieval = ReplicatedRetrieval(config.retrieval_address)
    embedding = EmbeddingClient(
        config.embedding_address, timeout_s=30.0, control_key=config.triton_control_key
    )
    try:
        features = features_pb2_grpc.FeaturesServiceStub(features_channel)
        events, content = await read_training_data(features, from_offset)
        if not events:
            raise ValueError("the event log holds no events to train on")
        trained = await asyncio.to_thread(train, events, content, config.train)
        log.info(
            "trained",
            extra={"events": len(events), "seconds": trained.training_seconds, **trained.metrics},
        )
        report = None
        if not publish:
            directory = config.store.version_dir(config.store.next_version()) / "weights"
            await asyncio.to_thread(save_trained, trained, directory)
            log.info("saved without publishing", extra={"directory": str(directory)})
        else:
            publisher = Publisher(
                config.store,
                embedding,
                features,
                retrieval,
                config.publish,
            )
            report = await publisher.publish(trained)
        return JobResult(trained, len(events), report)
    finally:
        await features_channel.close()
        await retrieval.close()
        await embedding.close()
