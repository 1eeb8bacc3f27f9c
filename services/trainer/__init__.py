"""Trains the two-tower retrieval model from the event log and the item content vectors.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported, not when it starts: set
any later, Ray takes the machine's external address for its node, so gcs_server, the
raylet and every worker listen on all interfaces, and its runtime-env agent on the
external address. Ray is imported by modules of this package, so the in-process Ray's
settings go here, before any of them. A trainer that joins a cluster (RAY_ADDRESS) needs
its node's real address and keeps Ray's defaults.
"""

import os

if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# The trainer's public surface, for the `recsys` command, the demo, the benchmark and the
# offline evaluation, which run its training in-process; nothing outside the trainer
# imports its modules directly.
from services.trainer.config import TrainerConfig  # noqa: E402
from services.trainer.continual_learner import (  # noqa: E402
    ContinualConfig,
    ContinualLearner,
    Scores,
    copy_trained,
)
from services.trainer.export import export_repository  # noqa: E402
from services.trainer.features_reader import read_content, read_events  # noqa: E402
from services.trainer.in_process_sources import InProcessSources  # noqa: E402
from services.trainer.model_training import (  # noqa: E402
    TrainConfig,
    TrainedModel,
    embed_items,
    embed_users,
    load_trained,
    save_trained,
    serving_info,
    train,
)
from services.trainer.publisher import PublishReport, PublishSettings  # noqa: E402
from services.trainer.training_job import JobConfig, JobResult, run_job  # noqa: E402
from services.trainer.two_tower import TowerConfig  # noqa: E402

__all__ = [
    "ContinualConfig",
    "ContinualLearner",
    "InProcessSources",
    "JobConfig",
    "JobResult",
    "PublishReport",
    "PublishSettings",
    "Scores",
    "TowerConfig",
    "TrainConfig",
    "TrainedModel",
    "TrainerConfig",
    "copy_trained",
    "embed_items",
    "embed_users",
    "export_repository",
    "load_trained",
    "read_content",
    "read_events",
    "run_job",
    "save_trained",
    "serving_info",
    "train",
]
