"""Replicas (`recsys bench --only replicas`): one suite with one instance of each service,
then one with two gateways, two Tritons and two retrieval replicas (RECSYS_SUITE_REPLICAS),
in the same run and with the same data: the catalogue, the first MovieLens events, one
two-tower model trained and published. For each, Recommend p50 / p99 and calls/s at 8
callers through the gateway's address (the list of replicas for two), and the time the
publish took (every Triton loads the version, every retrieval replica takes its index).

On 2 cores two replicas cannot be faster: they share the same CPUs. The point is that they
cost little and stay correct (tests/e2e/test_replicas.py shows the latter).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.events import RecommendCaller
from bench.model import Published, train_and_publish
from bench.timing import LatencyStats, connect, run_callers
from recsys.gateway.v1 import gateway_pb2 as api
from services.launcher import WITHOUT_TRAINER, Suite, SuiteSpec
from shared.items import Item
from suite.datasets import dataset_dir, load_interactions

CALLERS = 8
EVENTS = 20_000
LOG_BATCH = 500
UPSERT_BATCH = 256
SEED = 7
REPLICATED: Mapping[str, int] = {"gateway": 2, "embedding": 2, "retrieval": 2}


@dataclass(frozen=True)
class ReplicaRun:
    replicas: int
    ready_s: float  # `recsys up` until every process serves
    publish_s: float  # from the publish's start until the version is live
    publish_total_s: float  # with the grace period and retiring
    switch_seen_s: float  # then until Recommend answers from it
    recommend: LatencyStats


def bench_replicas(movies: Sequence[Item], requests: int) -> dict[str, Any]:
    interactions = load_interactions(dataset_dir() / "ratings.csv")[:EVENTS]
    users = sorted({i.user_id for i in interactions})
    draw = random.Random(SEED)
    keys = [draw.choice(users) for _ in range(requests)]
    warmup = [draw.choice(users) for _ in range(4 * CALLERS)]
    runs = []
    for replicas in ({}, REPLICATED):
        with tempfile.TemporaryDirectory(prefix="recsys-bench-replicas-") as tmp:
            spec = SuiteSpec.on_free_ports(
                Path(tmp), Path(tmp) / "logs", WITHOUT_TRAINER, replicas=replicas
            )
            count = max(replicas.values(), default=1)
            print(f"\nReplicas: {count} of gateway, Triton and retrieval ...", flush=True)
            started = time.perf_counter()
            with Suite(spec):
                ready_s = time.perf_counter() - started
                load(spec, movies, [i.to_api() for i in interactions])
                published = train_and_publish(spec, keys[0])
                stats = run_callers(
                    partial(RecommendCaller, spec.address("gateway")), keys, warmup, CALLERS
                )
            runs.append(run_of(count, ready_s, published, stats))
            print_run(runs[-1])
    print_comparison(runs)
    return {"replicas": [report_of(run) for run in runs]}


def load(spec: SuiteSpec, movies: Sequence[Item], events: Sequence[api.Event]) -> None:
    client = connect(spec.address("gateway"), timeout_s=300.0)
    try:
        for start in range(0, len(movies), UPSERT_BATCH):
            client.upsert(movies[start : start + UPSERT_BATCH])
        for start in range(0, len(events), LOG_BATCH):
            request = api.LogEventsRequest(events=events[start : start + LOG_BATCH])
            client.stub.LogEvents(request, timeout=60.0)
    finally:
        client.close()


def run_of(count: int, ready_s: float, published: Published, stats: LatencyStats) -> ReplicaRun:
    report = published.report
    return ReplicaRun(
        count, ready_s, report.switch_s, report.total_s, published.switch_seen_s, stats
    )


def print_run(run: ReplicaRun) -> None:
    stats = run.recommend
    print(
        f"  {run.replicas} of each: ready in {run.ready_s:.1f} s; publish live after"
        f" {run.publish_s:.1f} s ({run.publish_total_s:.1f} s with grace and retiring),"
        f" served {run.switch_seen_s:.2f} s later; Recommend at {CALLERS} callers:"
        f" p50 {stats.p50_ms:.1f} ms, p99 {stats.p99_ms:.1f} ms, {stats.calls_per_s:.0f} calls/s",
        flush=True,
    )


def print_comparison(runs: Sequence[ReplicaRun]) -> None:
    one, two = runs
    print(
        f"Two of each against one: p50 x{two.recommend.p50_ms / one.recommend.p50_ms:.2f},"
        f" p99 x{two.recommend.p99_ms / one.recommend.p99_ms:.2f},"
        f" calls/s x{two.recommend.calls_per_s / one.recommend.calls_per_s:.2f},"
        f" publish x{two.publish_s / one.publish_s:.2f} (on this machine's cores, shared by"
        " every replica)",
        flush=True,
    )


def report_of(run: ReplicaRun) -> dict[str, Any]:
    stats = run.recommend
    return {
        "replicas": run.replicas,
        "ready_s": round(run.ready_s, 2),
        "publish_s": round(run.publish_s, 2),
        "publish_total_s": round(run.publish_total_s, 2),
        "switch_seen_s": round(run.switch_seen_s, 3),
        "recommend_callers": CALLERS,
        "recommend_p50_ms": round(stats.p50_ms, 2),
        "recommend_p99_ms": round(stats.p99_ms, 2),
        "recommend_calls_per_s": round(stats.calls_per_s, 1),
    }
