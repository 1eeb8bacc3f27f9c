"""`recsys eval`: replay a timestamped interaction file through the live API, with the same
protocols run in-process for simple baselines, so every report carries its own yardstick.

The suite runs privately (free loopback ports, a temporary data directory). The history is
loaded once; both protocols then start from copies of that same state.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.suite.client import GatewayClient
from services.suite.evaluation import protocols, report
from services.suite.evaluation.baselines import ItemKNN, MostPopular, RecentlyPopular, Recommender
from services.suite.evaluation.dataset import Split, load_interactions, split
from services.suite.evaluation.protocols import Subject
from services.suite.evaluation.subjects import BaselineSubject, SuiteSubject
from services.suite.launcher import Suite, SuiteSpec
from services.suite.movielens import dataset_dir, load_movies
from shared.catalog import Item

SUITE_NAME = "suite: content-profile"


@dataclass(frozen=True)
class EvalOptions:
    ratings: Path
    out_dir: Path
    blocks: int = 8
    history_fraction: float = 0.6
    max_events: int = 0  # 0: every event in the file


def baselines() -> list[Recommender]:
    return [MostPopular(), RecentlyPopular(window=5_000), ItemKNN()]


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
    directory copied, so that each protocol starts from the same state."""

    def __init__(self, root: Path, catalogue: Mapping[str, Item]) -> None:
        self.root = root
        self.catalogue = catalogue

    def load_history(self, data: Split) -> None:
        with self._running("history") as subject:
            subject.add_items({e.item_id for e in data.history})
            subject.reveal(data.history)
        shutil.copytree(self.root / "history", self.root / "history-copy")

    def _running(self, name: str) -> _Running:
        return _Running(self.root / name, self.catalogue)

    def run(self, data: Split, bar: tqdm) -> dict[str, Any]:
        with self._running("history") as subject:
            blocks = protocols.run_blocks(subject, data, bar.update)
        with self._running("history-copy") as subject:
            prequential = protocols.run_prequential(subject, data, bar.update)
        return _results(blocks, prequential)


class _Running:
    def __init__(self, data_dir: Path, catalogue: Mapping[str, Item]) -> None:
        self.suite = Suite(SuiteSpec.on_free_ports(data_dir, data_dir.parent / "logs"))
        self.catalogue = catalogue
        self.client: GatewayClient | None = None

    def __enter__(self) -> SuiteSubject:
        self.suite.start()
        self.client = GatewayClient(self.suite.spec.address("gateway"))
        return SuiteSubject(self.client, self.catalogue, SUITE_NAME)

    def __exit__(self, *exc: object) -> None:
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
    subjects: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        suite = PrivateSuite(Path(tmp), catalogue_for(options.ratings))
        print("Loading the catalogue and the history into the suite ...", flush=True)
        suite.load_history(data)
        with tqdm(total=2 * test_events, desc=SUITE_NAME, unit="event") as bar:
            subjects[SUITE_NAME] = suite.run(data, bar)
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
    ratings: Path | None, out_dir: Path, blocks: int, history_fraction: float, max_events: int
) -> int:
    options = EvalOptions(
        ratings or dataset_dir() / "ratings.csv", out_dir, blocks, history_fraction, max_events
    )
    result = evaluate(options)
    print()
    print(report.markdown(result))
    for path in report.write(result, options.out_dir):
        print(f"wrote {path}")
    return 0
