"""The benchmark's events part, run on the suite and catalogue the SimilarItems part used.

1. Durable event ingest: real MovieLens ratings, in time order, acknowledged (each ack means
   the events are fsync'd) through LogEvents from concurrent producers and through one
   StreamEvents stream.
2. Recommend latency through the gateway, at 1 and 8 callers, for users who now have history.
3. Event to effect: after LogEvents of one fresh rating returns, how long until Recommend
   answers with a list that reflects it.

The model part (bench/model.py) follows on the same suite, with the events logged here.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from bench.memory import suite_cpu_seconds
from bench.timing import (
    CALL_TIMEOUT_S,
    CALLER_COUNTS,
    SEED,
    WARMUP_CALLS,
    K,
    LatencyStats,
    connect,
    percentile_ms,
    run_callers,
    verdict,
)
from recsys.gateway.v1 import gateway_pb2 as api
from services.launcher import SuiteSpec
from suite.client import batches
from suite.datasets import DatasetEvent, dataset_dir, load_interactions

EVENTS_PER_MODE = 40_000  # the first ones go through LogEvents, the next through StreamEvents
LOG_BATCH = 100
PRODUCERS = 4
WRITE_TIMEOUT_S = 60.0  # one LogEvents batch
STREAM_TIMEOUT_S = 300.0  # the whole stream
AIM_EVENTS_PER_S = 5_000.0
AIM_RECOMMEND_CALLERS = 8
AIM_RECOMMEND_P99_MS = 20.0
FALLBACK_SAMPLE = 50
EFFECT_TRIALS = 200
EFFECT_BOUND_S = 2.0
EFFECT_RATING = 5.0
AIM_EFFECT_P99_MS = 50.0


@dataclass(frozen=True)
class Throughput:
    mode: str
    events: int
    accepted: int
    duplicates: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def aim_met(self) -> bool:
        return self.accepted == self.events and self.events_per_s >= AIM_EVENTS_PER_S


@dataclass(frozen=True)
class IngestResult:
    log_events: Throughput
    batch_acks: LatencyStats  # one LogEvents batch, call to ack
    stream_events: Throughput

    @property
    def aim_met(self) -> bool:
        return self.log_events.aim_met and self.stream_events.aim_met


CALLERS_CPU = "callers"  # the benchmark's own process: its client threads


@dataclass(frozen=True)
class RecommendRun:
    callers: int
    gateway: LatencyStats
    # CPU time per call (warm-up calls included) by service, and the callers' own.
    cpu_ms_per_call: dict[str, float]

    @property
    def cpu_ms_total(self) -> float:
        return sum(self.cpu_ms_per_call.values())

    def calls_per_s_bound(self, cores: int) -> float:
        """What the cores could serve if the calls used nothing but this CPU time."""
        return cores * 1000 / self.cpu_ms_total if self.cpu_ms_total else float("inf")


@dataclass(frozen=True)
class RecommendResult:
    requests: int  # calls per run
    users: int  # users with history the calls' users are drawn from
    profiled: int  # of FALLBACK_SAMPLE drawn users, answered from their profile
    runs: list[RecommendRun]

    @property
    def aim_met(self) -> bool:
        at_aim = next(r for r in self.runs if r.callers == AIM_RECOMMEND_CALLERS)
        return at_aim.gateway.p99_ms < AIM_RECOMMEND_P99_MS


@dataclass(frozen=True)
class EffectResult:
    trials: int
    failures: int  # no reflecting answer within EFFECT_BOUND_S
    first_try: int  # the first Recommend after the ack already reflected the event
    p50_ms: float | None  # over the trials that did not fail
    p99_ms: float | None
    log_p50_ms: float  # the one-event LogEvents call itself
    log_p99_ms: float

    @property
    def aim_met(self) -> bool:
        return self.failures == 0 and self.p99_ms is not None and self.p99_ms < AIM_EFFECT_P99_MS


# ---- 1. durable ingest -----------------------------------------------------------------


class Tally:
    """Accepted and duplicate counts summed over the producer threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.duplicates = 0

    def add(self, reply: api.LogEventsResponse) -> None:
        with self._lock:
            self.accepted += reply.accepted
            self.duplicates += reply.duplicates


class EventProducer:
    """One producer thread's channel: each call logs one batch and returns on its ack."""

    def __init__(self, address: str, tally: Tally) -> None:
        self.client = connect(address, WRITE_TIMEOUT_S)
        self.tally = tally

    def call(self, batch: Sequence[api.Event]) -> object:
        request = api.LogEventsRequest(events=batch)
        reply = self.client.stub.LogEvents(request, timeout=WRITE_TIMEOUT_S)
        self.tally.add(reply)
        return reply

    def close(self) -> None:
        self.client.close()


def log_concurrently(address: str, events: Sequence[api.Event]) -> tuple[Throughput, LatencyStats]:
    """Batches go round-robin to the producers, so together they keep roughly time order."""
    tally = Tally()
    chunks = list(batches(events, LOG_BATCH))
    acks = run_callers(lambda: EventProducer(address, tally), chunks, [], PRODUCERS)
    mode = f"LogEvents, {PRODUCERS} producers, batches of {LOG_BATCH}"
    seconds = acks.calls / acks.calls_per_s
    return Throughput(mode, len(events), tally.accepted, tally.duplicates, seconds), acks


def stream(address: str, events: Sequence[api.Event]) -> Throughput:
    client = connect(address, STREAM_TIMEOUT_S)
    try:
        started = time.perf_counter()
        reply = client.stub.StreamEvents(iter(events), timeout=STREAM_TIMEOUT_S)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return Throughput(
        "StreamEvents, 1 stream", len(events), reply.accepted, reply.duplicates, seconds
    )


def measure_ingest(
    address: str, logged: Sequence[DatasetEvent], streamed: Sequence[DatasetEvent]
) -> IngestResult:
    # Converted before any clock starts: the producer's own cost is not the suite's.
    log_events = [i.to_api() for i in logged]
    stream_events = [i.to_api() for i in streamed]
    print(f"LogEvents: {len(log_events)} events from {PRODUCERS} producers ...", flush=True)
    through_log, acks = log_concurrently(address, log_events)
    print(f"StreamEvents: {len(stream_events)} events on one stream ...", flush=True)
    through_stream = stream(address, stream_events)
    return IngestResult(through_log, acks, through_stream)


# ---- 2. Recommend latency --------------------------------------------------------------


class RecommendCaller:
    def __init__(self, address: str) -> None:
        self.client = connect(address)

    def recommend(self, user_id: str) -> api.RecommendResponse:
        request = api.RecommendRequest(user_id=user_id, k=K)
        return self.client.stub.Recommend(request, timeout=CALL_TIMEOUT_S)

    def ids(self, user_id: str) -> list[str]:
        return [item.item_id for item in self.recommend(user_id).items]

    def call(self, key: str) -> object:
        return self.recommend(key)

    def close(self) -> None:
        self.client.close()


def from_profile(address: str, users: Sequence[str]) -> int:
    """How many of the users get an answer from their profile, not the trending fallback."""
    caller = RecommendCaller(address)
    try:
        return sum(not caller.recommend(user).fallback for user in users)
    finally:
        caller.close()


def cpu_reading(service_pids: Mapping[str, int]) -> dict[str, float]:
    return {**suite_cpu_seconds(service_pids), CALLERS_CPU: time.process_time()}


def measure_recommend(
    address: str,
    users: Sequence[str],
    requests: int,
    draw: random.Random,
    service_pids: Mapping[str, int],
    caller_counts: Sequence[int] = CALLER_COUNTS,
) -> RecommendResult:
    """Each run also reads the CPU time every service (by its process id) spent."""
    user_ids = draw.choices(users, k=requests)
    warmup_ids = draw.choices(users, k=WARMUP_CALLS)
    profiled = from_profile(address, user_ids[:FALLBACK_SAMPLE])
    runs = []
    for callers in caller_counts:
        print(f"Recommend with {callers} caller(s) ...", flush=True)
        before = cpu_reading(service_pids)
        stats = run_callers(lambda: RecommendCaller(address), user_ids, warmup_ids, callers)
        after = cpu_reading(service_pids)
        calls = len(user_ids) + len(warmup_ids)
        cpu = {name: 1000 * (after[name] - before[name]) / calls for name in after}
        runs.append(RecommendRun(callers, stats, cpu))
    return RecommendResult(requests, len(users), profiled, runs)


def print_cpu(runs: Sequence[RecommendRun]) -> None:
    cores = os.cpu_count() or 1
    for run in runs:
        parts = " + ".join(f"{name} {ms:.1f}" for name, ms in run.cpu_ms_per_call.items())
        print(
            f"CPU per call at {run.callers} caller(s): {parts} = {run.cpu_ms_total:.1f} ms;"
            f" {cores} cores at full use would serve at most"
            f" {run.calls_per_s_bound(cores):.0f} calls/s"
        )


# ---- 3. event to effect ----------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    log_s: float  # the LogEvents call
    effect_s: float | None  # ack to a reflecting Recommend; None: not within the bound
    attempts: int  # Recommend calls after the ack


def rating_now(user_id: str, item_id: str) -> api.Event:
    now = Timestamp()
    now.GetCurrentTime()
    return api.Event(
        event_id=f"bench-effect:{uuid.uuid4().hex}",
        user_id=user_id,
        item_id=item_id,
        type=api.EVENT_TYPE_RATE,
        value=EFFECT_RATING,
        timestamp=now,
    )


def wait_for_effect(
    caller: RecommendCaller, user_id: str, item_id: str, before: Sequence[str], acked: float
) -> tuple[float | None, int]:
    """Recommend until the list leaves the item out and differs from `before`."""
    attempts = 0
    while time.perf_counter() - acked < EFFECT_BOUND_S:
        ids = caller.ids(user_id)
        attempts += 1
        if item_id not in ids and list(before) != ids:
            return time.perf_counter() - acked, attempts
    return None, attempts


def effect_trial(caller: RecommendCaller, user_id: str, item_id: str) -> Trial:
    before = caller.ids(user_id)
    request = api.LogEventsRequest(events=[rating_now(user_id, item_id)])
    started = time.perf_counter()
    caller.client.stub.LogEvents(request, timeout=WRITE_TIMEOUT_S)
    acked = time.perf_counter()
    effect_s, attempts = wait_for_effect(caller, user_id, item_id, before, acked)
    return Trial(acked - started, effect_s, attempts)


def pick_trials(
    rated: Mapping[str, set[str]], catalogue_ids: Sequence[str], draw: random.Random
) -> list[tuple[str, str]]:
    """(user, item) pairs: distinct users with history, each with an item they never rated."""
    users = sorted(rated)
    picked = (
        draw.sample(users, EFFECT_TRIALS)
        if len(users) >= EFFECT_TRIALS
        else draw.choices(users, k=EFFECT_TRIALS)
    )
    pairs = []
    for user in picked:
        item = draw.choice(catalogue_ids)
        while item in rated[user]:
            item = draw.choice(catalogue_ids)
        pairs.append((user, item))
    return pairs


def measure_effect(address: str, pairs: Sequence[tuple[str, str]]) -> EffectResult:
    print(f"Event to effect: {len(pairs)} trials ...", flush=True)
    caller = RecommendCaller(address)
    try:
        trials = [effect_trial(caller, user, item) for user, item in pairs]
    finally:
        caller.close()
    return summarize_effect(trials)


def summarize_effect(trials: Sequence[Trial]) -> EffectResult:
    effects = [t.effect_s for t in trials if t.effect_s is not None]
    logs = [t.log_s for t in trials]
    return EffectResult(
        trials=len(trials),
        failures=len(trials) - len(effects),
        first_try=sum(t.effect_s is not None and t.attempts == 1 for t in trials),
        p50_ms=percentile_ms(effects, 50) if effects else None,
        p99_ms=percentile_ms(effects, 99) if effects else None,
        log_p50_ms=percentile_ms(logs, 50),
        log_p99_ms=percentile_ms(logs, 99),
    )


# ---- report ----------------------------------------------------------------------------


def print_ingest(result: IngestResult) -> None:
    print(
        "\nEvents, durable (an ack means fsync'd): MovieLens ratings in time order,"
        " a different slice per mode"
    )
    print(f"{'mode':<40}{'events':>8}{'accepted':>10}{'dups':>6}{'seconds':>9}{'events/s':>10}")
    for t in (result.log_events, result.stream_events):
        print(
            f"{t.mode:<40}{t.events:>8}{t.accepted:>10}{t.duplicates:>6}"
            f"{t.seconds:>9.2f}{t.events_per_s:>10.0f}"
        )
    acks = result.batch_acks
    print(
        f"LogEvents batch of {LOG_BATCH}, call to ack: p50 {acks.p50_ms:.2f} ms,"
        f" p99 {acks.p99_ms:.2f} ms"
    )
    print(
        f"aim: at least {AIM_EVENTS_PER_S:,.0f} events/s acknowledged:"
        f" LogEvents {verdict(result.log_events.aim_met)},"
        f" StreamEvents {verdict(result.stream_events.aim_met)}"
    )


def print_recommend(result: RecommendResult) -> None:
    print(
        f"\nRecommend through the gateway, k={K}, {result.requests} calls per run after"
        f" {WARMUP_CALLS} warm-up calls, users drawn from the {result.users} with history"
        f" ({result.profiled}/{FALLBACK_SAMPLE} sampled answered from their profile,"
        " not the trending fallback)"
    )
    print(f"{'callers':>7}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>11}")
    for r in result.runs:
        s = r.gateway
        print(f"{r.callers:>7}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{s.calls_per_s:>11.0f}")
    print_cpu(result.runs)
    print(
        f"aim: p99 < {AIM_RECOMMEND_P99_MS:g} ms at {AIM_RECOMMEND_CALLERS} callers:"
        f" {verdict(result.aim_met)}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_effect(result: EffectResult) -> None:
    print(
        f"\nEvent to effect: one RATE {EFFECT_RATING:g} event (timestamp now) per trial for an item"
        f" the user never rated; from the LogEvents ack to a Recommend (k={K}) that leaves the"
        f" item out and differs from the list before (bound {EFFECT_BOUND_S:g} s)"
    )
    print(
        f"{'trials':>7}{'p50 ms':>9}{'p99 ms':>9}{'failures':>10}{'1st try':>9}"
        f"{'LogEvents p50/p99 ms':>23}"
    )
    log_cells = f"{result.log_p50_ms:.2f} / {result.log_p99_ms:.2f}"
    print(
        f"{result.trials:>7}{_ms(result.p50_ms):>9}{_ms(result.p99_ms):>9}{result.failures:>10}"
        f"{result.first_try:>9}{log_cells:>23}"
    )
    print(f"aim: p99 < {AIM_EFFECT_P99_MS:g} ms and no failures: {verdict(result.aim_met)}")


def _throughput(t: Throughput) -> dict[str, Any]:
    return {**asdict(t), "events_per_s": t.events_per_s, "aim_met": t.aim_met}


def recommend_run_report(run: RecommendRun) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {
        **asdict(run),
        "cpu_ms_total": run.cpu_ms_total,
        "cores": cores,
        "calls_per_s_bound": run.calls_per_s_bound(cores),
    }


def build_events_report(
    ratings: Path, ingest: IngestResult, recommend: RecommendResult, effect: EffectResult
) -> dict[str, Any]:
    return {
        "event_ingest": {
            "source": str(ratings),
            "durable": "each ack after fsync (SQLite WAL, synchronous=FULL)",
            "log_events": {
                **_throughput(ingest.log_events),
                "producers": PRODUCERS,
                "batch": LOG_BATCH,
                "batch_ack": asdict(ingest.batch_acks),
            },
            "stream_events": _throughput(ingest.stream_events),
            "aim": {"events_per_s_at_least": AIM_EVENTS_PER_S, "met": ingest.aim_met},
        },
        "recommend": {
            "k": K,
            "requests_per_run": recommend.requests,
            "warmup_calls": WARMUP_CALLS,
            "call_timeout_s": CALL_TIMEOUT_S,
            "seed": SEED,
            "users_with_history": recommend.users,
            "from_profile": {"sample": FALLBACK_SAMPLE, "not_fallback": recommend.profiled},
            "runs": [recommend_run_report(r) for r in recommend.runs],
            "aim": {
                "callers": AIM_RECOMMEND_CALLERS,
                "p99_ms_below": AIM_RECOMMEND_P99_MS,
                "met": recommend.aim_met,
            },
        },
        "event_to_effect": {
            **asdict(effect),
            "k": K,
            "bound_s": EFFECT_BOUND_S,
            "aim": {"p99_ms_below": AIM_EFFECT_P99_MS, "no_failures": True, "met": effect.aim_met},
        },
    }


# ---- the events part -------------------------------------------------------------------


def rated_by_user(interactions: Sequence[DatasetEvent]) -> dict[str, set[str]]:
    rated: dict[str, set[str]] = defaultdict(set)
    for interaction in interactions:
        rated[interaction.user_id].add(interaction.item_id)
    return dict(rated)


def bench_events(
    spec: SuiteSpec,
    catalogue_ids: Sequence[str],
    requests: int,
    service_pids: Mapping[str, int],
) -> tuple[dict[str, Any], RecommendResult, list[DatasetEvent]]:
    """Runs the three parts in order on a suite that holds the catalogue and no events:
    their report, the Recommend runs and the events replayed (the model part's baseline and
    training data)."""
    address = spec.address("gateway")
    ratings = dataset_dir() / "ratings.csv"
    interactions = load_interactions(ratings)
    logged = interactions[:EVENTS_PER_MODE]
    streamed = interactions[EVENTS_PER_MODE : 2 * EVENTS_PER_MODE]
    ingest = measure_ingest(address, logged, streamed)
    print_ingest(ingest)
    rated = rated_by_user([*logged, *streamed])
    draw = random.Random(SEED)
    recommend = measure_recommend(address, sorted(rated), requests, draw, service_pids)
    print_recommend(recommend)
    effect = measure_effect(address, pick_trials(rated, catalogue_ids, draw))
    print_effect(effect)
    report = build_events_report(ratings, ingest, recommend, effect)
    return report, recommend, [*logged, *streamed]
