"""The benchmark (`recsys bench`, `make bench`): on a suite without the trainer, ingest and
SimilarItems (bench/similar_items.py), then durable event ingest, Recommend latency and
event-to-effect latency (bench/events.py), then a two-tower model trained, published and
timed in Triton and through Recommend (bench/model.py). After them, on a second suite that
runs the continual trainer: its memory, freshness, publish times and learning throughput
(bench/trainer.py).

Each part starts its own suite on free loopback ports with a fresh data dir, so every item
is encoded during ingest and nothing it does touches a suite that may already be running.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss

from bench.events import bench_events
from bench.model import bench_model
from bench.replicas import bench_replicas
from bench.similar_items import bench_similar_items
from bench.timing import CALLER_COUNTS, print_log_tails
from bench.tls import bench_tls
from bench.trainer import bench_trainer
from services.launcher import WITHOUT_TRAINER, Suite, SuiteError, SuiteSpec
from shared.items import Item
from suite.datasets import PROJECT_ROOT, load_movies

LOOPBACK = "127.0.0.1"
REPORT_PATH = PROJECT_ROOT / "reports" / "bench.json"


# The suite without the trainer; the trainer on its own suite; one and two replicas of each.
PARTS = ("suite", "trainer", "replicas", "tls")
TRAINER_REPORT_PATH = PROJECT_ROOT / "reports" / "bench_trainer.json"
REPLICAS_REPORT_PATH = PROJECT_ROOT / "reports" / "bench_replicas.json"
TLS_REPORT_PATH = PROJECT_ROOT / "reports" / "bench_tls.json"


def run_bench(requests: int = 2000, only: str | None = None) -> int:
    """Every part, or `only` one of PARTS (the trainer, replicas and tls parts alone write
    reports of their own)."""
    if requests < max(CALLER_COUNTS):
        print(f"recsys bench: --requests must be at least {max(CALLER_COUNTS)}", file=sys.stderr)
        return 2
    # As the retrieval service does by default: one thread a search.
    faiss.omp_set_num_threads(1)
    movies = load_movies()
    report: dict[str, Any] = {}
    if only in (None, "suite"):
        suite_report = bench_without_trainer(movies, requests)
        if suite_report is None:
            return 1
        report.update(suite_report)
    if only in (None, "trainer"):
        trainer_report = bench_with_trainer(movies)
        if trainer_report is None:
            return 1
        report["trainer"] = trainer_report
    if only in (None, "replicas"):
        report.update(bench_replicas(movies, requests))
    if only in (None, "tls"):
        report["tls"] = bench_tls(movies, requests)
    path = {
        "trainer": TRAINER_REPORT_PATH,
        "replicas": REPLICAS_REPORT_PATH,
        "tls": TLS_REPORT_PATH,
    }.get(only or "", REPORT_PATH)
    print(f"Results written to {write_report(report, path)}")
    return 0


def bench_without_trainer(movies: Sequence[Item], requests: int) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp:
        spec = SuiteSpec.on_free_ports(Path(tmp), Path(tmp) / "logs", WITHOUT_TRAINER)
        print(f"Starting the suite on {LOOPBACK} (service logs in {spec.log_dir}) ...", flush=True)
        started = time.perf_counter()
        try:
            with Suite(spec) as suite:
                print(f"Suite ready in {time.perf_counter() - started:.1f} s.", flush=True)
                pids = {service: p.pid for service, p in suite.processes.items()}
                return bench_suite(spec, movies, requests, pids)
        except SuiteError as error:
            # The logs go with the temporary dir: show their ends while they still exist.
            print(f"recsys bench: {error}", file=sys.stderr)
            print_log_tails(spec.log_dir)
            return None


def bench_with_trainer(movies: Sequence[Item]) -> dict[str, Any] | None:
    try:
        return bench_trainer(movies)
    except SuiteError as error:
        print(f"recsys bench: {error}", file=sys.stderr)
        return None


def bench_suite(
    spec: SuiteSpec, movies: Sequence[Item], requests: int, service_pids: dict[str, int]
) -> dict[str, Any]:
    """The parts without the trainer, in order, on one suite."""
    report = bench_similar_items(spec, movies, requests)
    catalogue_ids = [movie.item_id for movie in movies]
    events, recommend, replayed = bench_events(spec, catalogue_ids, requests, service_pids)
    model = bench_model(spec, replayed, recommend, service_pids)
    return {**report, **events, "model": model}


def write_report(report: dict[str, Any], path: Path = REPORT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
