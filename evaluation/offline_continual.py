"""Continual learning against full retraining and a frozen model, replayed on MovieLens.

    python -m evaluation.offline_continual                 # 8 blocks, both protocols
    python -m evaluation.offline_continual --blocks 3 --no-prequential \\
        --continual lr=1e-3 --continual lr=3e-3,replay_ratio=3       # compare learner settings

Three subjects share one serving: the gateway's own ranking policy on its model path
(evaluation/served_policy.py), with the content term and the kept places off:
- full retrain: the trainer's full training before every block (TrainedPerBlock's cache);
- frozen: the model trained on the history (the first 60%) for every block;
- continual: starts from that same model and learns the new events with the trainer's
  ContinualLearner, in micro-batches, as the trainer does when it tails the event log.
In the blocks protocol the learner learns a block once it is revealed; in the prequential
protocol it learns every --learn-every revealed events. Histories used for
recommendations are always up to date. Training compute is wall-clock seconds spent
training after the first model, which all three share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from evaluation import protocols
from evaluation.dataset import Split, split
from evaluation.offline_two_tower import TrainedPerBlock, item_content, logged
from evaluation.served_policy import ServedPolicySubject, movie_categories
from services.trainer import (
    ContinualConfig,
    ContinualLearner,
    Scores,
    TowerConfig,
    TrainConfig,
    TrainedModel,
    copy_trained,
)
from shared.events import LoggedEvent
from suite.datasets import DatasetEvent, dataset_dir, load_interactions

HISTORY_FRACTION = 0.6
BLOCKS = 8
SHOWN = (
    ("recall@20", "Recall@20"),
    ("ndcg@10", "NDCG@10"),
    ("hr@10", "HR@10"),
    ("cold_recall@20", "cold Recall@20"),
)
PER_BLOCK = (
    ("blocks", "ndcg@10", "NDCG@10"),
    ("blocks", "recall@20", "Recall@20"),
    ("prequential", "hr@10", "prequential HR@10"),
)
FULL, FROZEN = "full retrain", "frozen"
# The learner's defaults (ContinualConfig): one pass over the new events at the full
# training's peak learning rate, picked on all 8 blocks among 0.25, 0.5 and 1 pass; it
# keeps within a tenth of a full retrain's compute (see the README).
DEFAULT_CONTINUAL = "passes=1,lr=3e-3"
ModelAt = Callable[[Sequence[DatasetEvent]], TrainedModel]


class ServedSubject(ServedPolicySubject):
    """The gateway's model path over whichever model `model_at` gives at a block's start."""

    def __init__(
        self,
        name: str,
        models: TrainedPerBlock,
        model_at: ModelAt,
        popularity_weight: float,
        trending_half_life_s: float,
        retrains: bool = True,
    ) -> None:
        super().__init__(
            name,
            movie_categories(),
            models.content,
            models,
            trending_half_life_s,
            model_popularity_weight=popularity_weight,
            model_content_weight=0.0,
            new_item_share=0.0,
        )
        self.per_block = models
        self.model_at = model_at
        self.retrains = retrains
        self.training_seconds: list[float] = []  # per block: spent training since the last

    def model_for(self, history: Sequence[DatasetEvent]) -> TrainedModel:
        trained = self.model_at(history)
        self.training_seconds.append(self._spent(trained))
        return trained

    def _spent(self, trained: TrainedModel) -> float:
        return trained.training_seconds if self.retrains else 0.0


class TimedLearner(ContinualLearner):
    """Keeps apart the time `learn` spends scoring for the publish gate."""

    scoring_seconds = 0.0

    def score(
        self,
        samples: Any,
        model: TrainedModel | None,
    ) -> Scores:
        started = time.monotonic()
        try:
            return super().score(samples, model)
        finally:
            self.scoring_seconds += time.monotonic() - started


class ContinualSubject(ServedSubject):
    """Starts every replay from a copy of the first model; learns revealed events in
    micro-batches of at most `max_batch_events` once `learn_every` are pending."""

    def __init__(
        self,
        name: str,
        models: TrainedPerBlock,
        first: Sequence[DatasetEvent],
        config: ContinualConfig,
        train_config: TrainConfig,
        learn_every: int,
        popularity_weight: float,
        trending_half_life_s: float,
    ) -> None:
        super().__init__(name, models, self._model_at, popularity_weight, trending_half_life_s)
        self.first = list(first)
        self.config = config
        self.train_config = train_config
        self.learn_every = learn_every
        self.learner: TimedLearner | None = None
        self.events: list[LoggedEvent] = []  # the whole stream so far, in log order
        self.learned = 0  # events of `events` the learner has learned
        self.learn_seconds = 0.0
        self.scoring_seconds = 0.0
        self.steps = 0

    def _model_at(self, history: Sequence[DatasetEvent]) -> TrainedModel:
        if len(history) == len(self.first):
            self._restart(history)
        else:
            self._append(history[len(self.events) :])
            self._learn_pending()
        assert self.learner is not None
        return self.learner.trained

    def _spent(self, trained: TrainedModel) -> float:
        spent, self.learn_seconds = self.learn_seconds, 0.0
        return spent

    def _restart(self, history: Sequence[DatasetEvent]) -> None:
        self.events = logged(history)
        self.learned = len(self.events)
        existing = {e.item_id for e in history}
        content = {i: v for i, v in self.per_block.content.items() if i in existing}
        trained = copy_trained(self.per_block.get(history))
        learner = TimedLearner.start(trained, self.events, self.config, self.train_config, content)
        assert isinstance(learner, TimedLearner)
        self.learner = learner
        self.learn_seconds = self.scoring_seconds = 0.0
        self.steps = 0

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        """The block's new items join the catalogue the learner draws negatives from."""
        super().start_block(history, new_items)
        assert self.learner is not None
        content = self.per_block.content
        self.learner.add_content({i: content[i] for i in new_items if i in content})

    def _append(self, interactions: Sequence[DatasetEvent]) -> None:
        start = len(self.events)
        for n, event in enumerate(logged(interactions)):
            self.events.append(dataclasses.replace(event, offset=start + n + 1))

    def _learn_pending(self) -> None:
        assert self.learner is not None
        learner = self.learner
        if self.learned == len(self.events):
            return
        while self.learned < len(self.events):
            chunk = self.events[self.learned : self.learned + self.config.max_batch_events]
            report = learner.learn(chunk)
            self.learn_seconds += report.seconds
            self.steps += report.steps
            self.learned += len(chunk)
        self.scoring_seconds = learner.scoring_seconds
        if self.model is not None:  # else the block is starting and serves it next
            self.serve(learner.trained)

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        super().reveal(events)
        self._append(events)
        if len(self.events) - self.learned >= self.learn_every:
            self._learn_pending()


def run(subject: ServedSubject, data: Split, prequential: bool, learn_every: int) -> dict[str, Any]:
    started = time.monotonic()
    if isinstance(subject, ContinualSubject):
        subject.learn_every = 2**62  # a block is learned when the next one starts
    blocks = protocols.run_blocks(subject, data, lambda _: None)
    result: dict[str, Any] = {
        "blocks": {"overall": protocols.overall(blocks, "users"), "per_block": blocks},
        "training_seconds": sum(subject.training_seconds[1:]),
        "training_seconds_per_block": subject.training_seconds,
    }
    result["continual"] = _learner_figures(subject)
    if prequential:
        subject.block = -1
        subject.training_seconds = []
        if isinstance(subject, ContinualSubject):
            subject.learn_every = learn_every
        per_block = protocols.run_prequential(subject, data, lambda _: None)
        result["prequential"] = {
            "overall": protocols.overall(per_block, "events"),
            "per_block": per_block,
            "training_seconds": sum(subject.training_seconds[1:])
            + getattr(subject, "learn_seconds", 0.0),
            "continual": _learner_figures(subject),
        }
    result["seconds"] = time.monotonic() - started
    figures = {k: round(v, 4) for k, v in result["blocks"]["overall"].items()}
    print(
        f"  {subject.name}: {figures}, training {result['training_seconds']:.1f}s "
        f"{result['continual']} ({result['seconds']:.0f}s)",
        flush=True,
    )
    return result


def _learner_figures(subject: ServedSubject) -> dict[str, float]:
    if not isinstance(subject, ContinualSubject):
        return {}
    return {"steps": subject.steps, "gate_scoring_seconds": subject.scoring_seconds}


def continual_settings(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """ContinualConfig settings, and TrainConfig settings for the learner's steps only."""
    own = {f.name for f in dataclasses.fields(ContinualConfig)}
    steps = {f.name for f in dataclasses.fields(TrainConfig)}
    settings: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in own | steps:
            raise SystemExit(f"unknown ContinualConfig or TrainConfig setting {key}")
        settings[0 if key in own else 1][key] = json.loads(value)
    return settings


def relative(value: float, reference: float) -> float:
    return value / reference - 1.0 if reference else float("nan")


def markdown(report: Mapping[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"Replay of {setup['interactions']:,} MovieLens ratings: the first "
        f"{setup['history_fraction']:.0%} in time order is history, the rest "
        f"{setup['blocks']} blocks. Every subject is served the gateway's way (user tower on "
        f"the latest 50 items, popularity weight {setup['popularity_weight']:g}) and starts "
        "from the same model, trained on the history. Blocks: users weighted; prequential: "
        "events weighted, the continual learner learning every "
        f"{setup['learn_every']} revealed events. Training: wall-clock seconds spent training "
        f"after that first model ({setup['threads']} torch threads for the learner).",
        "",
        f"`{setup.get('command', '')}`",
        "",
    ]
    lines += _summary(report["subjects"])
    lines += ["", "Relative to full retrain:", ""]
    lines += _relative(report["subjects"])
    lines += _learners(report["subjects"])
    for protocol, key, title in PER_BLOCK:
        lines += ["", f"{title} per block:", ""]
        lines += _per_block(report["subjects"], protocol, key, setup["blocks"])
    return "\n".join(lines) + "\n"


def _summary(subjects: Mapping[str, Any]) -> list[str]:
    full = max(subjects[FULL]["training_seconds"], 1e-9)
    lines = [
        "| subject | prequential HR@10 | "
        + " | ".join(t for _, t in SHOWN)
        + " | training s (blocks) | vs full | training s (prequential) |",
        "|---|---:|" + "---:|" * len(SHOWN) + "---:|---:|---:|",
    ]
    for name, result in subjects.items():
        pre = result.get("prequential", {})
        cells = [f"{pre.get('overall', {}).get('hr@10', math.nan):.4f}"]
        cells += [f"{result['blocks']['overall'][k]:.4f}" for k, _ in SHOWN]
        seconds = result["training_seconds"]
        cells += [f"{seconds:.1f}", f"{seconds / full:.1%}"]
        cells += [f"{pre.get('training_seconds', math.nan):.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _relative(subjects: Mapping[str, Any]) -> list[str]:
    full = subjects[FULL]
    lines = [
        "| subject | prequential HR@10 | " + " | ".join(t for _, t in SHOWN) + " |",
        "|---|---:|" + "---:|" * len(SHOWN),
    ]
    for name, result in subjects.items():
        if name == FULL:
            continue
        pre = result.get("prequential", {}).get("overall", {}).get("hr@10", math.nan)
        full_pre = full.get("prequential", {}).get("overall", {}).get("hr@10", math.nan)
        cells = [f"{relative(pre, full_pre):+.1%}"]
        cells += [
            f"{relative(result['blocks']['overall'][k], full['blocks']['overall'][k]):+.1%}"
            for k, _ in SHOWN
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _learners(subjects: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, result in subjects.items():
        for protocol, figures in (
            ("blocks", result.get("continual")),
            ("prequential", result.get("prequential", {}).get("continual")),
        ):
            if figures:
                lines.append(
                    f"- {name}, {protocol}: {figures['steps']} optimisation steps; "
                    f"{figures['gate_scoring_seconds']:.1f}s of the training seconds scored the "
                    "new events for the publish gate before learning them."
                )
    return ["", *lines] if lines else []


def _per_block(subjects: Mapping[str, Any], protocol: str, key: str, blocks: int) -> list[str]:
    lines = [
        "| subject | " + " | ".join(str(b) for b in range(1, blocks + 1)) + " |",
        "|---|" + "---:|" * blocks,
    ]
    for name, result in subjects.items():
        if protocol in result:
            cells = [f"{b[key]:.4f}" for b in result[protocol]["per_block"]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 4), sharex=True)
    for axis, (protocol, key, title) in zip(axes.flat, PER_BLOCK, strict=True):
        for name, result in report["subjects"].items():
            if protocol in result:
                values = [block[key] for block in result[protocol]["per_block"]]
                axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("block")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(report: Mapping[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "continual.json").write_text(json.dumps(report, indent=2))
    (out / "continual.md").write_text(markdown(report))
    plot(report, out / "continual.png")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ratings", type=Path, default=dataset_dir() / "ratings.csv")
    parser.add_argument("--content-cache", type=Path, default=Path("/tmp/ml_content.npy"))
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/two_tower_models"))
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="evaluate the first N blocks")
    parser.add_argument("--no-prequential", action="store_true")
    parser.add_argument("--popularity-weight", type=float, default=0.0)
    parser.add_argument(
        "--trending-half-life-s", type=float, default=365 * 24 * 3600.0, help="as make eval sets"
    )
    parser.add_argument(
        "--learn-every", type=int, default=500, help="prequential: revealed events per learning"
    )
    parser.add_argument(
        "--continual",
        action="append",
        default=[],
        help="ContinualConfig settings, key=value,...; repeat to compare several",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=TrainConfig().threads,
        help="torch threads (on a busy machine, 1 avoids oversubscription)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="only redraw the report of this JSON"
    )
    return parser.parse_args()


def main() -> int:
    args = arguments()
    if args.from_json is not None:
        stored = json.loads(args.from_json.read_text())
        print(markdown(stored))
        write(stored, args.out or args.from_json.parent)
        return 0
    threads = args.threads
    torch.set_num_threads(threads)
    interactions = load_interactions(args.ratings)
    whole = split(interactions, HISTORY_FRACTION, BLOCKS)
    data = Split(whole.history, whole.blocks[: args.blocks])
    content = item_content(args.content_cache)
    train_config = TrainConfig()
    models = TrainedPerBlock(content, train_config, TowerConfig(), args.model_cache)
    serving = (args.popularity_weight, args.trending_half_life_s)
    history = data.history
    subjects: list[ServedSubject] = [
        ServedSubject(FULL, models, models.get, *serving),
        ServedSubject(FROZEN, models, lambda _: models.get(history), *serving, retrains=False),
    ]
    for text in args.continual or [DEFAULT_CONTINUAL]:
        own, steps = continual_settings(text)
        name = "continual" if text == DEFAULT_CONTINUAL else f"continual ({text})"
        learner_config = dataclasses.replace(train_config, **steps)
        subjects.append(
            ContinualSubject(
                name,
                models,
                history,
                ContinualConfig(**own),
                learner_config,
                args.learn_every,
                *serving,
            )
        )
    prequential = not args.no_prequential
    results = {s.name: run(s, data, prequential, args.learn_every) for s in subjects}
    report: dict[str, Any] = {
        "setup": {
            "command": " ".join(["python -m evaluation.offline_continual", *sys.argv[1:]]),
            "interactions": len(interactions),
            "history_fraction": HISTORY_FRACTION,
            "blocks": len(data.blocks),
            "popularity_weight": args.popularity_weight,
            "trending_half_life_s": args.trending_half_life_s,
            "learn_every": args.learn_every,
            "threads": threads,
            "continual": {
                s.name: {
                    **dataclasses.asdict(s.config),
                    "train": dataclasses.asdict(s.train_config),
                }
                for s in subjects
                if isinstance(s, ContinualSubject)
            },
        },
        "subjects": results,
    }
    print("\n" + markdown(report))
    if args.out is not None:
        write(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
