"""The benchmark's trainer part, on its own suite WITH the continual trainer (the other
parts run without it), loaded with the MovieLens catalogue and a history of ratings that
the trainer's first full retrain (its bootstrap) learns:

1. the suite's memory: every service process and all its descendants (Ray's gcs_server,
   raylet and workers; Triton's python-backend stubs), idle with a model live, and at its
   peak under steady ingest with Recommend callers and the publishes they cause;
2. event-to-served-model freshness under steady ingest: for each LogEvents batch (events
   timestamped now), from its ack to the first gateway GetStatus whose serving version
   holds the batch's last offset;
3. each publish's time, split (save, Triton load, embed the catalogue into the version's
   retrieval index, live), from the trainer's "published" log lines (its PublishReport);
4. Recommend latency for calls that overlap a publish against calls that do not, under
   the same ingest, and with no ingest at all;
5. learning throughput: the trainer catching up a burst of events (publishes included, as
   the service does it), and `ContinualLearner.learn` timed in-process on the same events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np

from bench.events import RecommendCaller, log_concurrently
from bench.memory import ServiceMemory, SuiteMemory, largest, suite_memory
from bench.similar_items import ingest
from bench.timing import CALL_TIMEOUT_S, SEED, K, LatencyStats, connect, print_log_tails
from recsys.features.v1 import features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2 as api
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.launcher import SERVICES, Suite, SuiteSpec
from shared.events import LoggedEvent
from shared.items import Item
from shared.model_store import LiveVersion, ModelStore
from suite.datasets import DatasetEvent, dataset_dir, load_interactions

HISTORY_EVENTS = 20_000  # logged first, at full speed; the bootstrap learns them
TRAIN_MAX_SECONDS = 20  # the bootstrap's full retrain
STEADY_EVENTS_PER_S = 100
STEADY_BATCH = 20  # events per LogEvents call
STEADY_S = 120.0
SETTLE_BOUND_S = 60.0  # after the ingest stops, how long the last batches may take to serve
BURST_EVENTS = 4_000
BURST_BOUND_S = 90.0
BOOTSTRAP_BOUND_S = 300.0
RECOMMEND_CALLERS = 2
# Each caller's pace, as traffic comes; back to back, two callers kept both cores busy and
# every other figure measured a saturated machine.
RECOMMEND_PER_S = 25.0
QUIET_S = 8.0
STATUS_EVERY_S = 0.1  # the gateway's GetStatus, for freshness
TRAINER_STATUS_EVERY_S = 0.25
MEMORY_EVERY_S = 2.0
LEARN_BATCHES = 3  # micro-batches timed in-process
AIM_MEMORY_BYTES = 4 * 10**9
AIM_FRESHNESS_P99_S = 30.0
MB = 10**6
TRAINER_ENV = {
    "RECSYS_TRAINER_MAX_SECONDS": str(TRAIN_MAX_SECONDS),
    "RECSYS_TRAINER_BOOTSTRAP_MIN_EVENTS": str(HISTORY_EVENTS),
}


# ---- what is recorded ------------------------------------------------------------------


class Sample(Protocol):
    @property
    def at(self) -> float: ...


SampleT = TypeVar("SampleT", bound=Sample)


@dataclass(frozen=True)
class LoggedBatch:
    acked_at: float  # wall clock, when LogEvents returned
    last_offset: int
    events: int


@dataclass(frozen=True)
class StatusSample:
    """One gateway GetStatus: the offset the serving version holds, when it is the live one."""

    at: float  # wall clock, when the reply came
    serving_version: str
    live_version: str
    trained_offset: int

    @property
    def served_offset(self) -> int:
        """trained_offset belongs to the live version: it counts once the gateway serves it."""
        live = self.live_version and self.serving_version == self.live_version
        return self.trained_offset if live else 0


@dataclass(frozen=True)
class TrainerSample:
    at: float  # wall clock
    trained_offset: int  # the learner's, published or not
    live_trained_offset: int
    log_end_offset: int  # the next offset to be written
    state: str

    @property
    def behind(self) -> bool:
        return self.trained_offset < self.log_end_offset - 1


@dataclass(frozen=True)
class TimedCall:
    started_at: float  # wall clock
    seconds: float


@dataclass(frozen=True)
class PublishRecord:
    """One "published" line of the trainer's log (its PublishReport)."""

    version: int
    ended_at: float  # wall clock, when the trainer logged it
    trained_through: int
    save_s: float
    load_s: float
    embed_s: float  # the catalogue through the item tower into the version's index
    switch_s: float  # from the start until live.json named the version
    total_s: float  # the switch and the second catalogue pass for items added meanwhile

    @property
    def started_at(self) -> float:
        return self.ended_at - self.total_s


# ---- pure figures ----------------------------------------------------------------------


def first_after(
    samples: Iterable[SampleT], after: float, holds: Callable[[SampleT], bool]
) -> float | None:
    """When the first sample taken at or after `after` that `holds` was taken."""
    return next((s.at for s in samples if s.at >= after and holds(s)), None)


def freshness_s(
    batches: Sequence[LoggedBatch], samples: Sequence[StatusSample]
) -> list[float | None]:
    """Per batch, seconds from its ack to the first status sample taken after it whose
    serving version holds its last offset; None when no sample did."""
    served = sorted((s.at, s.served_offset) for s in samples)
    out: list[float | None] = []
    for batch in batches:
        first = next(
            (at for at, offset in served if at >= batch.acked_at and offset >= batch.last_offset),
            None,
        )
        out.append(None if first is None else first - batch.acked_at)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def split_by_windows(
    calls: Sequence[TimedCall], windows: Sequence[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """(latencies of the calls that overlap a window, latencies of the others)."""
    inside: list[float] = []
    outside: list[float] = []
    for call in calls:
        ends = call.started_at + call.seconds
        overlaps = any(call.started_at <= stop and ends >= start for start, stop in windows)
        (inside if overlaps else outside).append(call.seconds)
    return inside, outside


def latency_stats(seconds: Sequence[float], wall_s: float) -> LatencyStats | None:
    if not seconds:
        return None
    millis = np.asarray(seconds) * 1_000.0
    return LatencyStats(
        len(millis),
        float(np.percentile(millis, 50)),
        float(np.percentile(millis, 99)),
        len(millis) / wall_s if wall_s > 0 else 0.0,
    )


def overlap_s(windows: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside any of the (non-overlapping) windows."""
    return sum(max(0.0, min(stop, end) - max(begin, start)) for begin, stop in windows)


@dataclass(frozen=True)
class Catching:
    """The learner while it was behind the log: what it learned, and how its time went."""

    events: int
    seconds: float
    states: dict[str, float]  # share of that time in each trainer state

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def catching_up(samples: Sequence[TrainerSample]) -> Catching:
    """Over consecutive samples whose first found the learner behind the log's end."""
    events, seconds = 0, 0.0
    states: dict[str, float] = {}
    for first, second in zip(samples, samples[1:], strict=False):
        if not first.behind:
            continue
        span = second.at - first.at
        events += second.trained_offset - first.trained_offset
        seconds += span
        states[first.state] = states.get(first.state, 0.0) + span
    shares = {state: span / seconds for state, span in states.items()} if seconds else {}
    return Catching(events, seconds, shares)


def wall_time(stamp: str) -> float:
    """Seconds since the epoch from the logs' "2026-01-02T03:04:05.678Z"."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def parse_published(lines: Sequence[str]) -> list[PublishRecord]:
    """The trainer's "published" records; lines Ray forwarded carry a "(Trainer pid=..) "
    prefix, and the publisher's own "published" line (no trained_through) is not one."""
    records = []
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if entry.get("msg") != "published" or "trained_through" not in entry:
            continue
        switch_s = float(entry.get("publish_s", 0.0))
        records.append(
            PublishRecord(
                version=int(entry["version"]),
                ended_at=wall_time(entry["ts"]),
                trained_through=int(entry["trained_through"]),
                save_s=float(entry.get("save_s", 0.0)),
                load_s=float(entry.get("load_s", 0.0)),
                embed_s=float(entry.get("embed_s", 0.0)),
                switch_s=switch_s,
                total_s=float(entry.get("total_s", switch_s)),
            )
        )
    return records


# ---- background recorders --------------------------------------------------------------


def every(interval_s: float, stop: threading.Event, work: Callable[[], None]) -> None:
    due = time.monotonic()
    while not stop.is_set():
        work()
        due += interval_s
        stop.wait(max(0.0, due - time.monotonic()))


class Recorder:
    """Samples the gateway's and the trainer's status and the suite's memory in background
    threads until stopped; errors of single polls are counted, not raised."""

    def __init__(self, spec: SuiteSpec, roots: dict[str, int]) -> None:
        self.gateway = connect(spec.address("gateway"))
        self.trainer_channel = grpc.insecure_channel(spec.address("trainer"))
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self.trainer_channel)
        self.roots = roots
        self.status: list[StatusSample] = []
        self.trainer_status: list[TrainerSample] = []
        self.memory: list[tuple[float, SuiteMemory]] = []
        self.poll_errors = 0
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=3)
        self._futures: list[Future[None]] = []

    def start(self) -> None:
        for interval, work in (
            (STATUS_EVERY_S, self._gateway_status),
            (TRAINER_STATUS_EVERY_S, self._trainer_status),
            (MEMORY_EVERY_S, self._memory),
        ):
            self._futures.append(self._pool.submit(every, interval, self.stop, work))

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown()
        self.gateway.close()
        self.trainer_channel.close()
        for future in self._futures:
            future.result()

    def _gateway_status(self) -> None:
        try:
            reply = self.gateway.stub.GetStatus(api.GetStatusRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            self.poll_errors += 1
            return
        self.status.append(
            StatusSample(
                time.time(), reply.serving_version, reply.live_version, reply.trained_offset
            )
        )

    def _trainer_status(self) -> None:
        try:
            reply = self.trainer.GetStatus(trainer_pb2.GetStatusRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            self.poll_errors += 1
            return
        self.trainer_status.append(
            TrainerSample(
                time.time(),
                reply.trained_offset,
                reply.live_trained_offset,
                reply.log_end_offset,
                reply.state,
            )
        )

    def _memory(self) -> None:
        self.memory.append((time.time(), suite_memory(self.roots)))

    def learner_offset(self) -> int:
        return self.trainer_status[-1].trained_offset if self.trainer_status else 0

    def served_offset(self) -> int:
        return max((s.served_offset for s in self.status[-50:]), default=0)

    def peak_memory(self, since: float) -> SuiteMemory | None:
        taken = [m for at, m in self.memory if at >= since]
        return max(taken, key=lambda m: m.rss_bytes) if taken else None


# ---- load ------------------------------------------------------------------------------


def rating_now(interaction: DatasetEvent) -> api.Event:
    """A MovieLens rating as if it happened now (a fresh id, so it is never a duplicate)."""
    return interaction.to_api(f"bench-trainer:{uuid.uuid4().hex}", now=True)


def produce_steadily(address: str, source: Sequence[DatasetEvent]) -> list[LoggedBatch]:
    """LogEvents batches at STEADY_EVENTS_PER_S; a batch that is late goes at once."""
    client = connect(address)
    interval = STEADY_BATCH / STEADY_EVENTS_PER_S
    batches = []
    started = time.monotonic()
    try:
        for n, first in enumerate(range(0, len(source), STEADY_BATCH)):
            time.sleep(max(0.0, started + n * interval - time.monotonic()))
            events = [rating_now(i) for i in source[first : first + STEADY_BATCH]]
            reply = client.stub.LogEvents(api.LogEventsRequest(events=events), timeout=60.0)
            batches.append(LoggedBatch(time.time(), reply.last_offset, len(events)))
    finally:
        client.close()
    return batches


def recommend_until(address: str, users: Sequence[str], stop: threading.Event) -> list[TimedCall]:
    """Recommend at RECOMMEND_PER_S until stopped; a call that is late goes at once."""
    caller = RecommendCaller(address)
    draw = random.Random(threading.get_ident())
    calls = []
    interval = 1.0 / RECOMMEND_PER_S
    first = time.monotonic()
    try:
        for n in itertools.count():
            stop.wait(max(0.0, first + n * interval - time.monotonic()))
            if stop.is_set():
                break
            started, clock = time.time(), time.perf_counter()
            caller.recommend(draw.choice(users))
            calls.append(TimedCall(started, time.perf_counter() - clock))
    finally:
        caller.close()
    return calls


@contextmanager
def recommend_load(address: str, users: Sequence[str]) -> Iterator[list[TimedCall]]:
    """RECOMMEND_CALLERS threads calling Recommend at their pace while the block runs."""
    stop = threading.Event()
    calls: list[TimedCall] = []
    with ThreadPoolExecutor(max_workers=RECOMMEND_CALLERS) as pool:
        futures = [
            pool.submit(recommend_until, address, users, stop) for _ in range(RECOMMEND_CALLERS)
        ]
        try:
            yield calls
        finally:
            stop.set()
        for future in futures:
            calls.extend(future.result())


# ---- phases ----------------------------------------------------------------------------


@dataclass
class Bootstrap:
    history_events: int
    live: LiveVersion
    seconds: float  # from the history's last ack until the gateway served the version


def wait_served(recorder: Recorder, offset: int, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while recorder.served_offset() < offset:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def bootstrap(spec: SuiteSpec, recorder: Recorder, history: Sequence[DatasetEvent]) -> Bootstrap:
    print(f"Logging {len(history)} MovieLens ratings as history ...", flush=True)
    log_concurrently(spec.address("gateway"), [i.to_api() for i in history])
    started = time.monotonic()
    print(
        f"Waiting for the bootstrap (full retrain, at most {TRAIN_MAX_SECONDS} s, and publish) ...",
        flush=True,
    )
    if not wait_served(recorder, len(history), BOOTSTRAP_BOUND_S):
        raise RuntimeError(f"no version holding the history served within {BOOTSTRAP_BOUND_S} s")
    live = ModelStore(spec.model_dir).live()
    assert live is not None
    return Bootstrap(len(history), live, time.monotonic() - started)


@dataclass
class Steady:
    seconds: float  # the ingest itself
    started_at: float
    ended_at: float  # the last batch served, or the settle bound
    batches: list[LoggedBatch]
    freshness: list[float | None]
    calls: list[TimedCall]
    learned_events: int  # by the learner during the ingest


def steady(
    spec: SuiteSpec, recorder: Recorder, source: Sequence[DatasetEvent], users: Sequence[str]
) -> Steady:
    address = spec.address("gateway")
    print(
        f"Steady ingest: {STEADY_EVENTS_PER_S} events/s for {STEADY_S:g} s with"
        f" {RECOMMEND_CALLERS} Recommend callers at {RECOMMEND_PER_S:g} calls/s each ...",
        flush=True,
    )
    started_at, clock = time.time(), time.monotonic()
    before = recorder.learner_offset()
    with recommend_load(address, users) as calls:
        batches = produce_steadily(address, source)
    seconds = time.monotonic() - clock
    learned = recorder.learner_offset() - before
    wait_served(recorder, batches[-1].last_offset, SETTLE_BOUND_S)
    ended_at = time.time()
    fresh = freshness_s(batches, recorder.status)
    return Steady(seconds, started_at, ended_at, batches, fresh, calls, learned)


@dataclass
class Burst:
    events: int
    learned_s: float | None  # from the last ack until the learner held the last event
    served_s: float | None  # ... until the gateway served a version holding it


def burst(spec: SuiteSpec, recorder: Recorder, source: Sequence[DatasetEvent]) -> Burst:
    print(f"Burst: {len(source)} events at once; timing the trainer's catch-up ...", flush=True)
    log_concurrently(spec.address("gateway"), [rating_now(i) for i in source])
    acked = time.time()
    reply = recorder.gateway.stub.GetStatus(api.GetStatusRequest(), timeout=CALL_TIMEOUT_S)
    target = reply.log_end_offset - 1
    wait_served(recorder, target, BURST_BOUND_S)
    learned_at = first_after(recorder.trainer_status, acked, lambda s: s.trained_offset >= target)
    served_at = first_after(recorder.status, acked, lambda s: s.served_offset >= target)
    return Burst(
        len(source),
        None if learned_at is None else learned_at - acked,
        None if served_at is None else served_at - acked,
    )


@dataclass
class InProcessLearning:
    batch_events: int
    seconds: list[float] = field(default_factory=list)  # one learn call per micro-batch
    # This process's CPU time in each call (torch's threads included): what the call costs
    # however loaded the machine is.
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.batch_events * len(self.seconds) / sum(self.seconds) if self.seconds else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        spent = sum(self.cpu_seconds)
        return self.batch_events * len(self.cpu_seconds) / spent if spent else 0.0


def learn_in_process(spec: SuiteSpec, version: int) -> InProcessLearning:
    """The learner the trainer starts from `version` (a full retrain: it learned the log up
    to its offset), timed on the micro-batches that follow in the log, each scored against
    `version` as the live model first, as the trainer does."""
    import torch

    from services.trainer import ContinualLearner, TrainerConfig, load_trained

    config = TrainerConfig.from_env({**os.environ, **TRAINER_ENV})
    weights = ModelStore(spec.model_dir).version_dir(version) / "weights"
    trained, live = load_trained(weights), load_trained(weights)
    size = config.continual.max_batch_events
    through = trained.trained_through_offset
    learned, fresh, content = asyncio.run(
        _read_log(spec.address("features"), through, through + size * LEARN_BATCHES)
    )
    result = InProcessLearning(size)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.job.train.threads)
    try:
        learner = ContinualLearner.start(
            trained, learned, config.continual, config.job.train, content
        )
        for first in range(0, len(fresh), size):
            clock, cpu = time.perf_counter(), time.process_time()
            learner.learn(fresh[first : first + size], live)
            result.seconds.append(time.perf_counter() - clock)
            result.cpu_seconds.append(time.process_time() - cpu)
    finally:
        torch.set_num_threads(threads)
    return result


async def _read_log(
    address: str, through: int, until: int
) -> tuple[list[LoggedEvent], list[LoggedEvent], dict[str, np.ndarray]]:
    from services.trainer import read_content, read_events
    from shared.clients import channel

    features_channel = channel(address)
    try:
        stub = features_pb2_grpc.FeaturesServiceStub(features_channel)
        learned = await read_events(stub, 1, through)
        fresh = await read_events(stub, through + 1, until)
        return learned, fresh, await read_content(stub)
    finally:
        await features_channel.close()


# ---- report ----------------------------------------------------------------------------


@dataclass
class TrainerBench:
    movies: int
    ingest_s: float
    bootstrap: Bootstrap
    idle: SuiteMemory
    loaded: SuiteMemory | None
    quiet: LatencyStats
    steady: Steady
    publishes: list[PublishRecord]
    burst: Burst
    learning: InProcessLearning
    catching: Catching  # the trainer service whenever it was behind the log
    poll_errors: int

    def steady_publishes(self) -> list[PublishRecord]:
        """The publishes that overlap the steady ingest (and its settling)."""
        start, end = self.steady.started_at, self.steady.ended_at
        return [p for p in self.publishes if p.started_at <= end and p.ended_at >= start]

    def recommend_split(self) -> tuple[LatencyStats | None, LatencyStats | None]:
        """Recommend under the steady ingest: (overlapping a publish, overlapping none)."""
        steady = self.steady
        windows = [(p.started_at, p.ended_at) for p in self.steady_publishes()]
        inside, outside = split_by_windows(steady.calls, windows)
        end = steady.started_at + steady.seconds
        publishing = overlap_s(windows, steady.started_at, end)
        return (
            latency_stats(inside, publishing),
            latency_stats(outside, steady.seconds - publishing),
        )

    def waits(self) -> list[float]:
        """Every batch's freshness; an unserved batch's wait until the end (a lower bound)."""
        steady = self.steady
        return [
            fresh if fresh is not None else steady.ended_at - batch.acked_at
            for fresh, batch in zip(steady.freshness, steady.batches, strict=True)
        ]


def _mb(value: int) -> str:
    return f"{value / MB:>8.0f}"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_memory(idle: SuiteMemory, loaded: SuiteMemory | None) -> None:
    print(
        "\nMemory of the suite: each service process and all its descendants; RSS summed"
        " (a page shared by processes counts in each), PSS beside it (shared pages split)"
    )
    print(
        f"{'service':<10}{'idle procs':>11}{'RSS MB':>9}{'PSS MB':>9}"
        f"{'load procs':>12}{'RSS MB':>9}{'PSS MB':>9}  largest processes under load (RSS MB)"
    )
    for service in idle.services:
        under = loaded.service(service.service) if loaded else None
        print(
            f"{service.service:<10}{_service_cells(service)}{_service_cells(under, 12)}"
            f"  {_largest(under or service)}"
        )
    print(
        f"{'total':<10}{idle.process_count:>11}{_mb(idle.rss_bytes)}{_mb(idle.pss_bytes)}"
        + (
            f"{loaded.process_count:>12}{_mb(loaded.rss_bytes)}{_mb(loaded.pss_bytes)}"
            if loaded
            else ""
        )
    )
    top = loaded or idle
    print(
        f"aim: the whole suite under {AIM_MEMORY_BYTES / 10**9:g} GB (RSS summed, at its peak"
        f" under load): {verdict(top.rss_bytes < AIM_MEMORY_BYTES)}"
    )


def _service_cells(service: ServiceMemory | None, width: int = 11) -> str:
    if service is None:
        return f"{'-':>{width}}{'-':>9}{'-':>9}"
    return f"{len(service.processes):>{width}}{_mb(service.rss_bytes)}{_mb(service.pss_bytes)}"


def _largest(service: ServiceMemory) -> str:
    return ", ".join(f"{p.name} {p.rss_bytes / MB:.0f}" for p in largest(service.processes, 3))


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.1f} / {max(values):.1f}"


def print_freshness(result: TrainerBench) -> None:
    steady = result.steady
    fresh = [f for f in steady.freshness if f is not None]
    waits = result.waits()
    events = sum(b.events for b in steady.batches)
    print(
        f"\nSteady ingest: {events} MovieLens ratings (timestamp now) in {steady.seconds:.0f} s"
        f" ({events / steady.seconds:.0f} events/s, LogEvents batches of {STEADY_BATCH}) with"
        f" {RECOMMEND_CALLERS} Recommend callers; {len(result.steady_publishes())} publish(es)"
        f" overlapped it; the learner advanced {steady.learned_events} offsets meanwhile"
    )
    print(
        "Freshness, from a batch's LogEvents ack to the first gateway GetStatus (every"
        f" {STATUS_EVERY_S:g} s) whose serving version holds the batch; a batch not served"
        f" {SETTLE_BOUND_S:g} s after the ingest stopped counts with its wait so far"
    )
    print(f"{'batches':>8}{'unserved':>10}{'p50 s':>8}{'p99 s':>8}{'max s':>8}   served only")
    bound = ">=" if len(fresh) < len(waits) else ""
    cells = "".join(f"{bound + format(v, '.1f'):>8}" for v in _figures(waits))
    served = " / ".join(f"{v:.1f}" for v in _figures(fresh)) if fresh else "-"
    print(f"{len(steady.batches):>8}{len(waits) - len(fresh):>10}{cells}   {served}")
    met = len(fresh) == len(waits) and percentile(waits, 99) < AIM_FRESHNESS_P99_S
    print(f"aim: p99 < {AIM_FRESHNESS_P99_S:g} s with every batch served: {verdict(met)}")


def _figures(values: Sequence[float]) -> tuple[float, float, float]:
    return percentile(values, 50), percentile(values, 99), max(values)


def print_publishes(publishes: Sequence[PublishRecord]) -> None:
    print(
        "\nPublishes that overlapped the steady ingest, from the trainer's PublishReport, p50 /"
        " max seconds: Triton load (both towers, beside the live version), the catalogue through"
        " the item tower into the version's retrieval index, live.json naming it (from the"
        " start), and total with the catch-up pass"
    )
    heads = ("save", "Triton load", "embed+index", "live after", "total")
    print(f"{'count':>6}" + "".join(f"{h:>14}" for h in heads))
    columns = [
        [p.save_s for p in publishes],
        [p.load_s for p in publishes],
        [p.embed_s for p in publishes],
        [p.switch_s for p in publishes],
        [p.total_s for p in publishes],
    ]
    print(f"{len(publishes):>6}" + "".join(f"{_seconds(c):>14}" for c in columns))


def print_recommend(
    quiet: LatencyStats, inside: LatencyStats | None, outside: LatencyStats | None
) -> None:
    print(
        f"\nRecommend (k={K}), {RECOMMEND_CALLERS} callers at {RECOMMEND_PER_S:g} calls/s each:"
        " no ingest; steady ingest,"
        " calls that overlap no publish; calls that overlap a publish"
    )
    print(f"{'':<26}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}")
    base = outside or quiet
    for label, stats in (
        ("no ingest", quiet),
        ("ingest, no publish", outside),
        ("ingest, during a publish", inside),
    ):
        if stats is None:
            print(f"{label:<26}{0:>7}")
            continue
        print(
            f"{label:<26}{stats.calls:>7}{stats.p50_ms:>9.2f}{stats.p99_ms:>9.2f}"
            f"{stats.p50_ms / base.p50_ms:>7.1f}x{stats.p99_ms / base.p99_ms:>7.1f}x"
        )
    against = "under ingest that overlap no publish" if outside else "with no ingest"
    print(f"(ratios against the calls {against})")


def print_learning(result: TrainerBench) -> None:
    b, learning, catching = result.burst, result.learning, result.catching
    print("\nIncremental training throughput")
    states = ", ".join(f"{state} {share:.0%}" for state, share in sorted(catching.states.items()))
    print(
        f"  trainer service, from its GetStatus every {TRAINER_STATUS_EVERY_S:g} s while it was"
        f" behind the log: {catching.events} events learned in {catching.seconds:.0f} s ="
        f" {catching.events_per_s:.0f} events/s, publishes included (its time: {states})"
    )
    burst = f"  a burst of {b.events} events logged at once: "
    if b.learned_s is None:
        print(burst + f"not all learned within {BURST_BOUND_S:g} s")
    else:
        served = f"served after {b.served_s:.1f} s" if b.served_s is not None else "not served"
        print(burst + f"learned {b.learned_s:.1f} s after its ack, {served}")
    if learning.seconds:
        print(
            f"  in-process ContinualLearner.learn (torch threads as the trainer's; each"
            f" micro-batch scored by it and the live model, then learned with replay):"
            f" {len(learning.seconds)} micro-batches of {learning.batch_events} events, p50"
            f" {percentile(learning.seconds, 50):.1f} s = {learning.events_per_s:.0f} events/s;"
            f" CPU {percentile(learning.cpu_seconds, 50):.1f} s a batch ="
            f" {learning.events_per_cpu_s:.0f} events per CPU second"
        )


def print_trainer_bench(result: TrainerBench) -> None:
    print(
        f"\nContinual trainer, on its own suite with the trainer (in-process Ray):"
        f" {result.movies} movies ingested in {result.ingest_s:.0f} s;"
        f" bootstrap on {result.bootstrap.history_events} ratings (full retrain, at most"
        f" {TRAIN_MAX_SECONDS} s) served as two-tower-{result.bootstrap.live.version}"
        f" {result.bootstrap.seconds:.0f} s after the history's last ack"
    )
    print_memory(result.idle, result.loaded)
    print_freshness(result)
    print_publishes(result.steady_publishes())
    inside, outside = result.recommend_split()
    print_recommend(result.quiet, inside, outside)
    print_learning(result)
    if result.poll_errors:
        print(f"({result.poll_errors} status polls failed and were skipped)")


def _memory_report(memory: SuiteMemory | None) -> dict[str, Any] | None:
    if memory is None:
        return None
    return {
        "rss_bytes": memory.rss_bytes,
        "pss_bytes": memory.pss_bytes,
        "services": {
            s.service: {
                "processes": [asdict(p) for p in s.processes],
                "rss_bytes": s.rss_bytes,
                "pss_bytes": s.pss_bytes,
            }
            for s in memory.services
        },
    }


def build_trainer_report(result: TrainerBench) -> dict[str, Any]:
    fresh = [f for f in result.steady.freshness if f is not None]
    waits = result.waits()
    inside, outside = result.recommend_split()
    return {
        "settings": {
            "history_events": HISTORY_EVENTS,
            "train_max_seconds": TRAIN_MAX_SECONDS,
            "steady_events_per_s": STEADY_EVENTS_PER_S,
            "steady_batch": STEADY_BATCH,
            "steady_s": STEADY_S,
            "recommend_callers": RECOMMEND_CALLERS,
            "recommend_per_s_each": RECOMMEND_PER_S,
            "trainer_env": TRAINER_ENV,
            "seed": SEED,
        },
        "bootstrap": {**asdict(result.bootstrap), "live": asdict(result.bootstrap.live)},
        "memory": {
            "idle": _memory_report(result.idle),
            "peak_under_load": _memory_report(result.loaded),
            "aim_bytes_below": AIM_MEMORY_BYTES,
        },
        "freshness": {
            "batches": len(waits),
            "unserved": len(waits) - len(fresh),
            "p50_s": percentile(waits, 50),
            "p99_s": percentile(waits, 99),
            "lower_bounds": len(waits) > len(fresh),
            "served_p50_s": percentile(fresh, 50),
            "served_p99_s": percentile(fresh, 99),
            "aim_p99_s_below": AIM_FRESHNESS_P99_S,
        },
        "publishes": [asdict(p) for p in result.steady_publishes()],
        "recommend": {
            "no_ingest": asdict(result.quiet),
            "ingest_no_publish": asdict(outside) if outside else None,
            "ingest_during_publish": asdict(inside) if inside else None,
        },
        "throughput": {
            "service_while_behind": {
                **asdict(result.catching),
                "events_per_s": result.catching.events_per_s,
            },
            "burst": asdict(result.burst),
            "in_process": {
                **asdict(result.learning),
                "events_per_s": result.learning.events_per_s,
                "events_per_cpu_s": result.learning.events_per_cpu_s,
            },
            "steady_learned_events": result.steady.learned_events,
        },
        "poll_errors": result.poll_errors,
    }


# ---- the trainer part ------------------------------------------------------------------


def slices(interactions: Sequence[DatasetEvent]) -> tuple[list[DatasetEvent], ...]:
    steady_events = int(STEADY_EVENTS_PER_S * STEADY_S)
    history = list(interactions[:HISTORY_EVENTS])
    rest = interactions[HISTORY_EVENTS:]
    return (
        history,
        list(rest[:steady_events]),
        list(rest[steady_events : steady_events + BURST_EVENTS]),
    )


def quiet_recommend(address: str, users: Sequence[str]) -> LatencyStats:
    print(f"Recommend with {RECOMMEND_CALLERS} callers, no ingest ...", flush=True)
    with recommend_load(address, users) as calls:
        time.sleep(QUIET_S)
    stats = latency_stats([c.seconds for c in calls], QUIET_S)
    assert stats is not None, "no Recommend call finished"
    return stats


def measure(suite: Suite, movies: Sequence[Item]) -> TrainerBench:
    spec = suite.spec
    address = spec.address("gateway")
    history, steady_source, burst_source = slices(load_interactions(dataset_dir() / "ratings.csv"))
    users = sorted({i.user_id for i in history})
    ingest_s = ingest(address, movies)
    recorder = Recorder(spec, {s: p.pid for s, p in suite.processes.items()})
    recorder.start()
    try:
        boot = bootstrap(spec, recorder, history)
        time.sleep(MEMORY_EVERY_S)
        idle = suite_memory(recorder.roots)
        quiet = quiet_recommend(address, users)
        result = steady(spec, recorder, steady_source, users)
        loaded = recorder.peak_memory(result.started_at)
        burst_result = burst(spec, recorder, burst_source)
    finally:
        recorder.close()
    print("Timing ContinualLearner.learn in-process ...", flush=True)
    learning = learn_in_process(spec, boot.live.version)
    log = spec.log_dir / "trainer.log" if spec.log_dir else None
    publishes = parse_published(log.read_text(errors="replace").splitlines() if log else [])
    # From the steady ingest on: before it, the bootstrap's jump from no learner is no rate.
    catching = catching_up([s for s in recorder.trainer_status if s.at >= result.started_at])
    return TrainerBench(
        len(movies),
        ingest_s,
        boot,
        idle,
        loaded,
        quiet,
        result,
        publishes,
        burst_result,
        learning,
        catching,
        recorder.poll_errors,
    )


def bench_trainer(movies: Sequence[Item]) -> dict[str, Any]:
    """Starts a private suite with the trainer, measures, prints, and returns the report."""
    with tempfile.TemporaryDirectory(prefix="recsys-bench-trainer-") as tmp:
        spec = SuiteSpec.on_free_ports(Path(tmp), Path(tmp) / "logs", SERVICES, TRAINER_ENV)
        print(f"Starting a suite with the trainer (service logs in {spec.log_dir}) ...", flush=True)
        try:
            with Suite(spec) as suite:
                result = measure(suite, movies)
        except BaseException:
            # The logs go with the temporary dir: show their ends while they still exist.
            print_log_tails(spec.log_dir)
            raise
    print_trainer_bench(result)
    return build_trainer_report(result)
