"""Offline replay of the two-tower model on MovieLens, next to the popularity baselines.

    python -m evaluation.offline_two_tower               # 8 blocks, retrained per block
    python -m evaluation.offline_two_tower --warm        # warm-started from the last block
    python -m evaluation.offline_two_tower --blocks 2 --set epochs=2 --set dim=32

Item content vectors come from the text encoder once and are cached (--content-cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation import protocols
from evaluation.baselines import ItemKNN, MostPopular, RecentlyPopular
from evaluation.dataset import Split, split
from evaluation.served_policy import ServedPolicySubject, movie_categories
from evaluation.subjects import BaselineSubject
from services.trainer import (
    TowerConfig,
    TrainConfig,
    TrainedModel,
    embed_items,
    embed_users,
    load_trained,
    save_trained,
    train,
)
from shared.events import EventType, LoggedEvent, interaction_weight
from shared.ranking_metrics import ndcg_at_k
from suite.datasets import DatasetEvent, dataset_dir, load_interactions, load_movies

SHOWN = ("recall@20", "ndcg@10", "hr@10", "cold_recall@20", "coverage@10")


def item_content(cache: Path) -> dict[str, np.ndarray]:
    ids_file = cache.with_name(cache.stem + "_ids.json")
    if cache.exists() and ids_file.exists():
        ids = json.loads(ids_file.read_text())
        vectors = np.load(cache)
    else:
        from services.features import TextEncoder

        movies = load_movies()
        encoder = TextEncoder(threads=2)
        encoder.load()
        vectors = encoder.encode([movie.text() for movie in movies])
        ids = [movie.item_id for movie in movies]
        np.save(cache, vectors)
        ids_file.write_text(json.dumps(ids))
    return dict(zip(ids, vectors, strict=True))


def logged(events: Sequence[DatasetEvent]) -> list[LoggedEvent]:
    return [LoggedEvent(n + 1, e.to_event()) for n, e in enumerate(events)]


class TwoTowerSubject:
    """Trains at the start of every block; ranks every existing item by inner product."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray],
        config: TrainConfig,
        tower: TowerConfig,
        warm_config: TrainConfig | None,
        retrain_every: int = 1,
    ) -> None:
        self.retrain_every = retrain_every
        self.block = -1
        self.name = "two-tower" + (" (warm)" if warm_config else "")
        self.content = content
        self.config = config
        self.tower = tower
        self.warm_config = warm_config
        self.trained: TrainedModel | None = None
        self.block_reports: list[dict[str, float]] = []
        self._histories: dict[str, list[tuple[str, float]]] = {}
        self._user_vectors: dict[str, np.ndarray] = {}
        self._items: list[str] = []
        self._item_vectors = np.zeros((0, 1), dtype=np.float32)
        self._column: dict[str, int] = {}

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        existing = sorted({e.item_id for e in history} | new_items)
        catalogue = {i: self.content[i] for i in existing if i in self.content}
        self.block += 1
        if self.trained is None or self.block % self.retrain_every == 0:
            self._train(logged(history), catalogue)
        assert self.trained is not None
        trained = self.trained
        self._items = existing
        self._column = {item: n for n, item in enumerate(existing)}
        self._item_vectors = embed_items(trained, existing, catalogue)
        self._histories = {}
        for event in history:
            self._remember(event)
        self._refresh_users(list(self._histories))

    def _train(self, events: list[LoggedEvent], catalogue: Mapping[str, np.ndarray]) -> None:
        if self.trained is not None and self.warm_config is not None:
            trained = train(events, catalogue, self.warm_config, previous=self.trained)
        else:
            trained = train(events, catalogue, self.config, tower=self.tower)
        self.trained = trained
        metrics = trained.metrics
        self.block_reports.append({"seconds": trained.training_seconds, **metrics})
        print(
            f"  block {self.block}: trained on {len(events)} events in "
            f"{trained.training_seconds:.1f}s; holdout "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "users"),
            flush=True,
        )

    def _remember(self, event: DatasetEvent) -> None:
        weight = interaction_weight(EventType.RATE, event.rating)
        self._histories.setdefault(event.user_id, []).append((event.item_id, weight))

    def _refresh_users(self, users: list[str]) -> None:
        assert self.trained is not None
        histories = [self._histories.get(u, []) for u in users]
        vectors = embed_users(self.trained, users, histories)
        self._user_vectors.update(zip(users, vectors, strict=True))

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]:
        if user_id not in self._user_vectors:
            self._refresh_users([user_id])
        scores = self._item_vectors @ self._user_vectors[user_id]
        excluded = [self._column[i] for i in seen if i in self._column]
        scores[excluded] = -np.inf
        best = np.argpartition(-scores, k)[:k] if scores.size > k else np.arange(scores.size)
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self._items[c] for c in best if np.isfinite(scores[c])]

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        for event in events:
            self._remember(event)
        self._user_vectors = {}  # the next request sees the new history, without retraining


class TrainedPerBlock:
    """One training per block, shared by every serving variant and kept on disk, so that
    serving settings can be compared on the very same models."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray],
        config: TrainConfig,
        tower: TowerConfig,
        cache: Path,
    ) -> None:
        self.content = content
        self.config = config
        self.tower = tower
        key = json.dumps([dataclasses.asdict(config), dataclasses.asdict(tower)], sort_keys=True)
        self.cache = cache / hashlib.sha256(key.encode()).hexdigest()[:12]
        self.cache.mkdir(parents=True, exist_ok=True)
        (self.cache / "settings.json").write_text(key)

    def get(self, history: Sequence[DatasetEvent]) -> TrainedModel:
        directory = self.cache / f"through-{len(history)}"
        if (directory / "config.json").exists():
            return load_trained(directory)
        catalogue = {i: self.content[i] for i in {e.item_id for e in history} if i in self.content}
        trained = train(logged(history), catalogue, self.config, tower=self.tower)
        print(f"  {len(history)} events: trained in {trained.training_seconds:.1f}s", flush=True)
        save_trained(trained, directory)
        return trained


def served_subject(
    blend: str,
    categories: Mapping[str, Sequence[str]],
    content: Mapping[str, np.ndarray],
    models: TrainedPerBlock,
    trending_half_life_s: float,
) -> ServedPolicySubject:
    """The gateway's ranking at `model:content:popularity[:new-item share]`: with model 1,
    the model path, its content and popularity terms at those weights; with model 0, the
    content path (whose similarity always counts once) with that popularity weight."""
    model_w, content_w, popularity_w, *share = (float(x) for x in blend.split(":"))
    name = f"gateway {blend}"
    if model_w == 1:
        return ServedPolicySubject(
            name,
            categories,
            content,
            models,
            trending_half_life_s,
            model_content_weight=content_w,
            model_popularity_weight=popularity_w,
            new_item_share=share[0] if share else 0.0,
        )
    if model_w == 0 and content_w == 1 and not share:
        return ServedPolicySubject(
            name, categories, content, None, trending_half_life_s, popularity_weight=popularity_w
        )
    raise SystemExit(
        f"--blends {blend}: the gateway weighs the model's score by 1 (the model path) or"
        " leaves it out (0, the content path, with content 1 and no new-item share)"
    )


def overrides(pairs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    train_fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    tower_fields = {f.name: f.type for f in dataclasses.fields(TowerConfig)}
    train_values: dict[str, Any] = {}
    tower_values: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        value: Any = json.loads(text) if text not in ("True", "False") else text == "True"
        if key.startswith("warm_"):
            continue
        if key in train_fields:
            train_values[key] = value
        elif key in tower_fields:
            tower_values[key] = value
        else:
            raise SystemExit(f"unknown setting {key}")
    return train_values, tower_values


def warm_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key.startswith("warm_"):
            result[key.removeprefix("warm_")] = json.loads(text)
    return result


class Recording:
    """Passes calls through and keeps each block's rankings, to split the figures by users
    with and without a history."""

    def __init__(self, subject: Any) -> None:
        self.subject = subject
        self.name = subject.name
        self.rankings: list[dict[str, tuple[list[str], bool]]] = []

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None:
        self.rankings.append({})
        self.subject.start_block(history, new_items)

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]:
        ranked: list[str] = self.subject.recommend(user_id, k, seen, existing)
        self.rankings[-1][user_id] = (ranked, not seen)
        return ranked

    def reveal(self, events: Sequence[DatasetEvent]) -> None:
        self.subject.reveal(events)

    def by_kind(self, data: Split) -> dict[str, float]:
        scores: dict[str, list[float]] = {"new": [], "known": []}
        for number, block in enumerate(data.blocks):
            before = {(e.user_id, e.item_id) for e in data.before(number)}
            truth: dict[str, set[str]] = {}
            for e in block:
                if (e.user_id, e.item_id) not in before:
                    truth.setdefault(e.user_id, set()).add(e.item_id)
            for user, (ranked, new) in self.rankings[number].items():
                scores["new" if new else "known"].append(ndcg_at_k(ranked, truth[user], 10))
        return {f"ndcg@10 {kind}": float(np.mean(v)) for kind, v in scores.items() if v}


def run(subject: Any, data: Split, prequential: bool) -> dict[str, Any]:
    started = time.monotonic()
    recording = Recording(subject)
    blocks = protocols.run_blocks(recording, data, lambda _: None)
    result: dict[str, Any] = {
        "by_kind": recording.by_kind(data),
        "blocks": protocols.overall(blocks, "users"),
        "per_block": blocks,
        "seconds": time.monotonic() - started,
    }
    if prequential:
        result["prequential"] = protocols.overall(
            protocols.run_prequential(subject, data, lambda _: None), "events"
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ratings", type=Path, default=dataset_dir() / "ratings.csv")
    parser.add_argument("--content-cache", type=Path, default=Path("/tmp/ml_content.npy"))
    parser.add_argument("--blocks", type=int, default=8, help="evaluate only the first N blocks")
    parser.add_argument("--warm", action="store_true", help="warm-start each block's training")
    parser.add_argument("--prequential", action="store_true")
    parser.add_argument("--retrain-every", type=int, default=1, help="blocks between trainings")
    parser.add_argument("--max-events", type=int, default=0)
    parser.add_argument(
        "--popularity-weights",
        default="",
        help="comma-separated: the gateway's model path with these popularity weights (and no"
        " content term) instead",
    )
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/two_tower_models"))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--blends",
        default="",
        help="comma-separated model:content:popularity[:new-item share]: the gateway's ranking"
        " with these weights instead (model 1: the model path; 0: the content path)",
    )
    parser.add_argument(
        "--trending-half-life-s", type=float, default=365 * 24 * 3600.0, help="as make eval sets"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="key=value (TrainConfig, TowerConfig; warm_key for the warm start)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    interactions = load_interactions(args.ratings)
    if args.max_events:
        interactions = interactions[: args.max_events]
    data = split(interactions, 0.6, 8)
    data = Split(data.history, data.blocks[: args.blocks])
    train_values, tower_values = overrides(args.set)
    config = TrainConfig(**train_values)
    warm = None
    if args.warm:
        warm = dataclasses.replace(config, **{"epochs": 1.0, **warm_overrides(args.set)})
    content = item_content(args.content_cache)
    results: dict[str, Any] = {}
    if args.blends or args.popularity_weights:
        models = TrainedPerBlock(content, config, TowerConfig(**tower_values), args.model_cache)
        categories = movie_categories()
        blends = args.blends.split(",") if args.blends else []
        blends += [f"1:0:{w}" for w in args.popularity_weights.split(",") if w]
        for blend in blends:
            served = served_subject(blend, categories, content, models, args.trending_half_life_s)
            results[served.name] = run(served, data, args.prequential)
            served.close()
            print(f"  {served.name}: {results[served.name]['blocks']}", flush=True)
    else:
        subject = TwoTowerSubject(
            content, config, TowerConfig(**tower_values), warm, args.retrain_every
        )
        results[subject.name] = run(subject, data, args.prequential)
        seconds = [r["seconds"] for r in subject.block_reports]
        print(f"\nseconds per training: mean {np.mean(seconds):.1f}, max {max(seconds):.1f}")
    baselines = (
        () if args.no_baselines else (RecentlyPopular(window=5_000), MostPopular(), ItemKNN())
    )
    for baseline in baselines:
        results[baseline.name] = run(BaselineSubject(baseline), data, args.prequential)
    print(f"\n{len(data.blocks)} blocks")
    print(f"{'subject':<22}" + "".join(f"{k:>16}" for k in SHOWN) + "   prequential hr@10")
    for name, result in results.items():
        row = "".join(f"{result['blocks'][k]:>16.4f}" for k in SHOWN)
        pre = result.get("prequential", {}).get("hr@10", float("nan"))
        kinds = ", ".join(f"{k} {v:.4f}" for k, v in result["by_kind"].items())
        print(f"{name:<22}{row}   {pre:.4f}   {kinds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
