"""The trainer service's configuration, from RECSYS_TRAINER_* variables (and RAY_ADDRESS)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from services.features import FeaturesConfig
from services.gateway import GatewayConfig, RankingSettings
from services.trainer.continual_learner import ContinualConfig
from services.trainer.gate import GateConfig
from services.trainer.ranking_tuner import Signals, TunerConfig
from services.trainer.training_job import PREFIX, JobConfig
from shared.config import Env, data_root
from shared.server_config import ServerConfig


@dataclass(frozen=True)
class TrainerConfig:
    server: ServerConfig
    job: JobConfig  # addresses, model store, full-training and publish settings
    state_dir: Path  # checkpoints and the commit record
    continual: ContinualConfig
    gate: GateConfig
    poll_s: float  # how often the log is read when it had nothing new
    publish_every_events: int  # publish once this many events are learned ...
    publish_every_s: float  # ... or once this long has passed with anything new learned
    checkpoint_every_s: float  # commit the learner's state at least this often
    bootstrap_min_events: int  # the first full training waits for this many events
    full_retrain_interval_s: float  # 0: only when asked or on drift
    drift_tolerance: float  # the live hit rate this share below its baseline is drift
    drift_min_events: int  # events the live hit rate is measured over before it counts
    rejections_before_retrain: int  # consecutive rejected candidates that start a retrain
    ray_address: str  # "": an in-process Ray; otherwise the cluster to join
    ray_cpus: int  # the in-process Ray's CPUs: the actor takes one, a full retrain one
    ray_object_store_bytes: int
    keep_checkpoints: int
    # The gateway's ranking settings (RECSYS_GATEWAY_*, pins included), which the tuner
    # starts from, and how features keeps the signals it ranks by (RECSYS_FEATURES_*):
    # give the trainer the same values as those services.
    ranking: RankingSettings
    signals: Signals
    tuner: TunerConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainerConfig:
        env = Env(PREFIX, environ)
        source = os.environ if environ is None else environ
        defaults, gate, tuner = ContinualConfig(), GateConfig(), TunerConfig()
        features = FeaturesConfig.from_env(environ)
        job = JobConfig.from_env(environ)
        return cls(
            server=ServerConfig.from_env(env, "trainer"),
            job=replace(job, train=replace(job.train, holdout_fraction=0.0)),
            state_dir=env.path("STATE_DIR", data_root(environ) / "trainer"),
            continual=ContinualConfig(
                lr=env.number("CONTINUAL_LR", defaults.lr, minimum=1e-7),
                batch_size=env.integer("CONTINUAL_BATCH_SIZE", defaults.batch_size, minimum=2),
                replay_ratio=env.number("REPLAY_RATIO", defaults.replay_ratio),
                replay_capacity=env.integer("REPLAY_CAPACITY", defaults.replay_capacity),
                passes=env.number("CONTINUAL_PASSES", defaults.passes, minimum=0.01),
                max_batch_events=env.integer(
                    "MAX_BATCH_EVENTS", defaults.max_batch_events, minimum=1
                ),
                gate_sample=env.integer("GATE_SAMPLE", defaults.gate_sample, minimum=1),
            ),
            gate=GateConfig(
                margin=env.number("GATE_MARGIN", gate.margin),
                min_events=env.integer("GATE_MIN_EVENTS", gate.min_events, minimum=1),
            ),
            poll_s=env.number("POLL_S", 0.5, minimum=0.01),
            publish_every_events=env.integer("PUBLISH_EVERY_EVENTS", 2_000, minimum=1),
            publish_every_s=env.number("PUBLISH_EVERY_S", 10.0, minimum=0.1),
            checkpoint_every_s=env.number("CHECKPOINT_EVERY_S", 30.0, minimum=0.1),
            bootstrap_min_events=env.integer("BOOTSTRAP_MIN_EVENTS", 100, minimum=2),
            full_retrain_interval_s=env.number("FULL_RETRAIN_INTERVAL_S", 0.0),
            drift_tolerance=env.number("DRIFT_TOLERANCE", 0.3),
            drift_min_events=env.integer("DRIFT_MIN_EVENTS", 2_000, minimum=1),
            rejections_before_retrain=env.integer("REJECTIONS_BEFORE_RETRAIN", 3, minimum=1),
            ray_address=source.get("RAY_ADDRESS", ""),
            ray_cpus=env.integer("RAY_CPUS", 2, minimum=2, maximum=1024),
            ray_object_store_bytes=env.integer(
                "RAY_OBJECT_STORE_BYTES", 200 * 1024 * 1024, minimum=78 * 1024 * 1024
            ),
            keep_checkpoints=env.integer("KEEP_CHECKPOINTS", 3, minimum=1),
            ranking=GatewayConfig.from_env(environ).ranking(),
            signals=Signals(
                trending_half_life_s=features.trending_half_life_s,
                co_occurrence_window=features.co_occurrence_window,
                co_occurrence_neighbours=features.co_occurrence_neighbours,
                trending_half_lives_s=features.trending_half_lives_s,
            ),
            tuner=TunerConfig(
                enabled=env.integer("TUNE_RANKING", 1, minimum=0, maximum=1) == 1,
                sample=env.integer("TUNE_SAMPLE", tuner.sample, minimum=1),
                window=env.integer("TUNE_WINDOW", tuner.window, minimum=2),
                min_window=env.integer("TUNE_MIN_WINDOW", tuner.min_window, minimum=2),
                confidence_z=env.number("TUNE_CONFIDENCE_Z", tuner.confidence_z),
                horizon=env.integer("TUNE_HORIZON", tuner.horizon, minimum=1),
            ),
        )
