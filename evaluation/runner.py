"""`recsys eval`: replay a timestamped interaction file through the live API, with the same
protocols run in-process for simple baselines, so every report carries its own yardstick.

The suite runs privately (free loopback ports, a temporary data directory). The history is
loaded once; both protocols then start from copies of that same state.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from evaluation import protocols, report
from evaluation.baselines import ItemKNN, MostPopular, PerEventALS, RecentlyPopular, Recommender
from evaluation.dataset import Split, split
from evaluation.protocols import Subject
from evaluation.subjects import (
    BaselineSubject,
    ContinualSuiteSubject,
    ModelSuiteSubject,
    SuiteSubject,
)
from recsys.features.v1 import features_pb2_grpc
from recsys.trainer.v1 import trainer_pb2_grpc
from services.launcher import SERVICES, WITHOUT_TRAINER, Suite, SuiteSpec
from services.trainer import JobConfig, PublishSettings, TrainConfig, run_job
from shared.items import Item
from shared.model_store import ModelStore, model_name
from suite.client import GatewayClient
from suite.datasets import dataset_dir, load_interactions, load_movies

SUITE_NAME = "suite: content-profile"
MODEL_NAME = "suite: two-tower (retrained per block)"
CONTINUAL_NAME = "suite: continual trainer"
# What `--subjects` names: the suite without a model, with a model retrained per block by
# `recsys train`, and as `make up` runs it, with its continual trainer.
SUITE_SUBJECTS = {"content": SUITE_NAME, "model": MODEL_NAME, "continual": CONTINUAL_NAME}


@dataclass(frozen=True)
class EvalOptions:
    ratings: Path
    out_dir: Path
    blocks: int = 8
    history_fraction: float = 0.6
    max_events: int = 0  # 0: every event in the file
    subjects: tuple[str, ...] = tuple(SUITE_SUBJECTS)
    train: TrainConfig = field(default_factory=TrainConfig)


def baselines() -> list[Recommender]:
    return [MostPopular(), RecentlyPopular(window=5_000), ItemKNN(), PerEventALS()]


def catalogue_for(ratings: Path) -> dict[str, Item]:
    """Items for the replayed ids: MovieLens movies when the file sits beside a movies.csv;
    otherwise each item is known only by its id."""
    if (ratings.parent / "movies.csv").exists():
        return {item.item_id: item for item in load_movies(ratings.parent)}
    return {}


def _results(blocks: list[dict[str, float]], prequential: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "blocks": {"per_block": blocks, "overall": protocols.overall(blocks, "users")},
        "prequential": {
            "per_block": prequential,
            "overall": protocols.overall(prequential, "events"),
        },
    }


def _run_baseline(subject: Subject, data: Split, bar: tqdm) -> dict[str, Any]:
    blocks = protocols.run_blocks(subject, data, bar.update)
    return _results(blocks, protocols.run_prequential(subject, data, bar.update))


class PrivateSuite:
    """The suite on free ports over a data directory; its history is loaded once and the
    directory copied, so that every run (protocol x subject) starts from the same state."""

    def __init__(self, root: Path, catalogue: Mapping[str, Item], train: TrainConfig) -> None:
        self.root = root
        self.catalogue = catalogue
        self.train = train

    def load_history(self, data: Split) -> None:
        with _Running(self.root / "history", self.catalogue) as running:
            subject = running.subject(SUITE_NAME)
            subject.add_items({e.item_id for e in data.history})
            subject.reveal(data.history)

    def _copy(self, name: str) -> Path:
        target = self.root / name
        shutil.copytree(self.root / "history", target)
        return target

    def run(self, data: Split, bar: tqdm, kind: str) -> dict[str, Any]:
        results = []
        ranking: dict[str, Any] = {}
        for protocol in (protocols.run_blocks, protocols.run_prequential):
            run_dir = self._copy(f"{kind}-{protocol.__name__}")
            with _Running(run_dir, self.catalogue, kind == "continual", self.train) as running:
                subject: Subject
                if kind == "continual":
                    continual = running.continual_subject()
                    results.append(protocol(continual, data, bar.update))
                    ranking[protocol.__name__.removeprefix("run_")] = continual.ranking()
                else:
                    if kind == "model":
                        subject = running.model_subject(self.train)
                    else:
                        subject = running.subject(SUITE_NAME)
                    results.append(protocol(subject, data, bar.update))
            shutil.rmtree(run_dir, ignore_errors=True)
        combined = _results(results[0], results[1])
        if ranking:
            combined["ranking"] = ranking
        return combined


class _Running:
    def __init__(
        self,
        data_dir: Path,
        catalogue: Mapping[str, Item],
        with_trainer: bool = False,
        train: TrainConfig | None = None,
    ) -> None:
        """`with_trainer`: the continual trainer too, its full trainings within
        `train.max_seconds`; its other settings are its defaults."""
        services = SERVICES if with_trainer else WITHOUT_TRAINER
        env = {"RECSYS_TRAINER_MAX_SECONDS": str(train.max_seconds)} if train else {}
        self.suite = Suite(
            SuiteSpec.on_free_ports(data_dir, data_dir.parent / "logs", services, env)
        )
        self.catalogue = catalogue
        self.client: GatewayClient | None = None

    def __enter__(self) -> _Running:
        self.suite.start()
        self.client = GatewayClient(self.suite.spec.address("gateway"))
        return self

    def subject(self, name: str) -> SuiteSubject:
        assert self.client is not None
        return SuiteSubject(self.client, self.catalogue, name)

    def model_subject(self, train: TrainConfig) -> ModelSuiteSubject:
        assert self.client is not None
        spec = self.suite.spec
        job = JobConfig(
            features_address=spec.address("features"),
            retrieval_address=spec.address("retrieval"),
            embedding_address=spec.address("embedding"),
            store=ModelStore(spec.model_dir),
            train=train,
            publish=PublishSettings(grace_s=1.0),
        )

        def train_and_publish() -> str:
            result = asyncio.run(run_job(job))
            assert result.report is not None
            return model_name(result.report.version)

        return ModelSuiteSubject(self.client, self.catalogue, MODEL_NAME, train_and_publish)

    def continual_subject(self) -> ContinualSuiteSubject:
        assert self.client is not None
        spec = self.suite.spec
        self._channels = [grpc.insecure_channel(spec.address(s)) for s in ("trainer", "features")]
        return ContinualSuiteSubject(
            self.client,
            self.catalogue,
            CONTINUAL_NAME,
            trainer_pb2_grpc.TrainerServiceStub(self._channels[0]),
            features_pb2_grpc.FeaturesServiceStub(self._channels[1]),
        )

    def __exit__(self, *exc: object) -> None:
        for opened in getattr(self, "_channels", []):
            opened.close()
        if self.client is not None:
            self.client.close()
        self.suite.stop()


def evaluate(options: EvalOptions) -> dict[str, Any]:
    interactions = load_interactions(options.ratings)
    if options.max_events:
        interactions = interactions[: options.max_events]
    data = split(interactions, options.history_fraction, options.blocks)
    test_events = sum(len(b) for b in data.blocks)
    started = time.monotonic()
    unknown = set(options.subjects) - set(SUITE_SUBJECTS)
    if unknown:
        raise ValueError(f"unknown subjects {sorted(unknown)}; choose from {list(SUITE_SUBJECTS)}")
    subjects: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        suite = PrivateSuite(Path(tmp), catalogue_for(options.ratings), options.train)
        print("Loading the catalogue and the history into the suite ...", flush=True)
        suite.load_history(data)
        for kind in options.subjects:
            name = SUITE_SUBJECTS[kind]
            with tqdm(total=2 * test_events, desc=name, unit="event") as bar:
                subjects[name] = suite.run(data, bar, kind)
    for recommender in baselines():
        with tqdm(total=2 * test_events, desc=recommender.name, unit="event") as bar:
            subjects[recommender.name] = _run_baseline(BaselineSubject(recommender), data, bar)
    return {
        "setup": {
            "source": str(options.ratings),
            "interactions": len(interactions),
            "history_fraction": options.history_fraction,
            "blocks": len(data.blocks),
            "seconds": round(time.monotonic() - started, 1),
        },
        "subjects": subjects,
    }


def run_eval(
    ratings: Path | None,
    out_dir: Path,
    blocks: int,
    history_fraction: float,
    max_events: int,
    subjects: tuple[str, ...] = tuple(SUITE_SUBJECTS),
    train_seconds: float | None = None,
) -> int:
    train = TrainConfig()
    if train_seconds is not None:
        train = replace(train, max_seconds=train_seconds)
    options = EvalOptions(
        ratings or dataset_dir() / "ratings.csv",
        out_dir,
        blocks,
        history_fraction,
        max_events,
        subjects,
        train,
    )
    result = evaluate(options)
    print()
    print(report.markdown(result))
    for path in report.write(result, options.out_dir):
        print(f"wrote {path}")
    return 0
