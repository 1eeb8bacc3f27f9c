"""The benchmark's model part, run on the bench suite once the events part has filled its
event log:

1. train a two-tower model on that log and publish it (Triton, retrieval index, live.json),
   then wait until the gateway's Recommend reports it;
2. time the towers in Triton (gRPC) against the same TorchScript called in-process: the user
   tower at batch 1 from 1, 8 and 32 callers, with the batches Triton's dynamic batcher
   formed meanwhile (its own statistics), and the item tower at batch 1 and 256;
3. time Recommend through the gateway with the model serving (Triton in the path), beside
   the content-profile figures the events part measured before any model existed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2

from bench.events import (
    AIM_RECOMMEND_CALLERS,
    AIM_RECOMMEND_P99_MS,
    FALLBACK_SAMPLE,
    RecommendCaller,
    RecommendResult,
    measure_recommend,
    print_cpu,
    recommend_run_report,
)
from bench.in_process import (
    AIM_RATIO,
    SAME_LIST_SAMPLE,
    Yardstick,
    measure_in_process,
    print_yardstick,
)
from bench.similar_items import load_content_index
from bench.timing import (
    SEED,
    WARMUP_CALLS,
    K,
    LatencyStats,
    run_callers,
    torch_threads,
    verdict,
)
from services.gateway import user_inputs
from services.launcher import SuiteSpec
from services.trainer import JobConfig, JobResult, PublishReport, PublishSettings, run_job
from shared.embedding_client import ITEM_TOWER, OUTPUT, USER_TOWER
from shared.events import EventType, Interaction
from shared.model_store import ModelStore, ServingInfo, model_name
from suite.datasets import DatasetEvent

TRAIN_MAX_SECONDS = 60.0
PUBLISH_GRACE_S = 2.0
SWITCH_BOUND_S = 30.0
TOWER_CALLS = 1024  # per run: 32, 128 or 1024 per caller
ITEM_BATCH_CALLS = 64  # per run at batch ITEM_BATCH
ITEM_BATCH = 256  # the towers' max_batch_size in Triton
USER_CALLERS = (1, 8, 32)
TOWER_WARMUP_CALLS = 50
AGREEMENT_SAMPLE = 16
TRITON_TIMEOUT_S = 10.0
INPUT_NAMES = {
    USER_TOWER: ("user_row", "history_rows", "history_weights"),
    ITEM_TOWER: ("item_row", "content"),
}
TRITON_TYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}

Inputs = tuple[np.ndarray, ...]  # one request's tensors, in the tower's input order


# ---- Triton's own counters ---------------------------------------------------------------


@dataclass(frozen=True)
class TritonCounters:
    """One model version's cumulative counters from Triton's statistics (or, after `since`,
    what one run added to them)."""

    inferences: int  # batch elements inferred: each request's batch size, summed
    executions: int  # model executions, each on one batch as the dynamic batcher formed it
    requests: int  # successful requests
    request_ns: int  # their time inside Triton, arrival to response, summed
    queue_ns: int  # the part of it spent waiting in the scheduler's queue
    batches: dict[int, int] = field(default_factory=dict)  # executions per batch size

    @classmethod
    def of(cls, stats: service_pb2.ModelStatistics) -> TritonCounters:
        return cls(
            inferences=stats.inference_count,
            executions=stats.execution_count,
            requests=stats.inference_stats.success.count,
            request_ns=stats.inference_stats.success.ns,
            queue_ns=stats.inference_stats.queue.ns,
            batches={b.batch_size: b.compute_infer.count for b in stats.batch_stats},
        )

    def since(self, earlier: TritonCounters) -> TritonCounters:
        sizes = self.batches.keys() | earlier.batches.keys()
        batches = {s: self.batches.get(s, 0) - earlier.batches.get(s, 0) for s in sizes}
        return TritonCounters(
            inferences=self.inferences - earlier.inferences,
            executions=self.executions - earlier.executions,
            requests=self.requests - earlier.requests,
            request_ns=self.request_ns - earlier.request_ns,
            queue_ns=self.queue_ns - earlier.queue_ns,
            batches={s: n for s, n in sorted(batches.items()) if n > 0},
        )

    @property
    def average_batch(self) -> float | None:
        return self.inferences / self.executions if self.executions else None

    @property
    def largest_batch(self) -> int:
        return max(self.batches, default=0)

    @property
    def request_ms(self) -> float | None:
        """Mean time a request spent inside Triton: what the client's latency adds to."""
        return self.request_ns / self.requests / 1e6 if self.requests else None

    @property
    def queue_ms(self) -> float | None:
        return self.queue_ns / self.requests / 1e6 if self.requests else None


def read_counters(address: str, tower: str, version: int) -> TritonCounters:
    client = triton.InferenceServerClient(address)
    try:
        reply = client.get_inference_statistics(tower, str(version), client_timeout=10.0)
    finally:
        client.close()
    return TritonCounters.of(reply.model_stats[0])


# ---- inputs ------------------------------------------------------------------------------


def recent_by_user(ratings: Sequence[DatasetEvent], limit: int) -> dict[str, list[Interaction]]:
    """Each user's latest `limit` ratings, newest first, as the features service returns a
    history to the gateway; `ratings` are in log order."""
    history: dict[str, list[Interaction]] = defaultdict(list)
    for rating in ratings:
        history[rating.user_id].append(
            Interaction(rating.item_id, EventType.RATE, rating.rating, rating.timestamp)
        )
    return {user: events[::-1][:limit] for user, events in history.items()}


def user_samples(
    model: ServingInfo, ratings: Sequence[DatasetEvent], count: int, draw: random.Random
) -> list[Inputs]:
    """Batch-1 user-tower requests for random users who have a history, built as the
    gateway builds them."""
    recent = recent_by_user(ratings, model.history_len)
    users = sorted(u for u in recent if u in model.users)
    # The model learned every rating logged, so each user's oldest one (offset 1 or later)
    # is inside it.
    return [user_inputs(model, user, recent[user], 1) for user in draw.choices(users, k=count)]


def item_samples(
    model: ServingInfo,
    content: Mapping[str, np.ndarray],
    batch: int,
    count: int,
    draw: random.Random,
) -> list[Inputs]:
    """Item-tower requests of `batch` random catalogue items (row 0 where the model does not
    know the item, as when publishing)."""
    ids = sorted(content)
    samples: list[Inputs] = []
    for _ in range(count):
        picked = draw.choices(ids, k=batch)
        rows = np.array([[model.items.get(i, 0)] for i in picked], dtype=np.int64)
        samples.append((rows, np.stack([content[i] for i in picked]).astype(np.float32)))
    return samples


def triton_request(tower: str, arrays: Inputs) -> list[triton.InferInput]:
    inputs = []
    for name, values in zip(INPUT_NAMES[tower], arrays, strict=True):
        tensor = triton.InferInput(name, list(values.shape), TRITON_TYPES[values.dtype])
        tensor.set_data_from_numpy(np.ascontiguousarray(values))
        inputs.append(tensor)
    return inputs


# ---- callers -------------------------------------------------------------------------------


class TritonCaller:
    """A synchronous client and channel per caller thread, as run_callers gives the
    in-process baseline: every caller blocks in gRPC's C core with the GIL released while
    Triton works, so Triton sees as many requests in flight as there are callers. One aio
    loop would instead build every request on a single thread, and measure that thread.
    The requests are built before the clock starts; what the client still adds shows as
    the gap between these latencies and Triton's own request time (TritonCounters)."""

    def __init__(
        self, address: str, tower: str, version: int, requests: Sequence[list[triton.InferInput]]
    ) -> None:
        self.client = triton.InferenceServerClient(address)
        self.tower = tower
        self.version = str(version)
        self.requests = requests
        # Connects the channel before the clock starts, without an inference that would
        # count in Triton's statistics.
        self.client.is_model_ready(tower, self.version, client_timeout=TRITON_TIMEOUT_S)

    def call(self, key: int) -> object:
        result = self.client.infer(
            self.tower,
            self.requests[key],
            model_version=self.version,
            client_timeout=TRITON_TIMEOUT_S,
        )
        return result.as_numpy(OUTPUT)

    def close(self) -> None:
        self.client.close()


class TorchCaller:
    """The same TorchScript tower in the calling thread; callers share one module, as
    Triton's callers share its one instance."""

    def __init__(self, module: torch.jit.ScriptModule, requests: Sequence[tuple[Any, ...]]):
        self.module = module
        self.requests = requests

    def forward(self, key: int) -> torch.Tensor:
        with torch.inference_mode():
            output: torch.Tensor = self.module(*self.requests[key])
        return output

    def call(self, key: int) -> object:
        return self.forward(key)

    def close(self) -> None:
        pass


# ---- 1. train and publish ----------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    job: JobResult
    report: PublishReport
    switch_seen_s: float  # from run_job's return until Recommend reported the version

    @property
    def name(self) -> str:
        return model_name(self.report.version)


def job_config(spec: SuiteSpec) -> JobConfig:
    config = JobConfig.from_env()
    return replace(
        config,
        features_address=spec.address("features"),
        retrieval_address=spec.address("retrieval"),
        embedding_address=spec.address("embedding"),
        store=ModelStore(spec.model_dir),
        train=replace(config.train, max_seconds=TRAIN_MAX_SECONDS),
        publish=PublishSettings(grace_s=PUBLISH_GRACE_S),
    )


def wait_for_model(address: str, user_id: str, name: str) -> float:
    """Seconds until Recommend for a user with history reports model `name`."""
    caller = RecommendCaller(address)
    started = time.perf_counter()
    try:
        while caller.recommend(user_id).model_version != name:
            if time.perf_counter() - started > SWITCH_BOUND_S:
                raise RuntimeError(f"the gateway did not serve {name} within {SWITCH_BOUND_S} s")
            time.sleep(0.05)
    finally:
        caller.close()
    return time.perf_counter() - started


def train_and_publish(spec: SuiteSpec, user_id: str) -> Published:
    print(f"Training a two-tower model (at most {TRAIN_MAX_SECONDS:g} s) ...", flush=True)
    job = asyncio.run(run_job(job_config(spec)))
    if job.report is None:
        raise RuntimeError("run_job published nothing")
    name = model_name(job.report.version)
    switch_s = wait_for_model(spec.address("gateway"), user_id, name)
    return Published(job, job.report, switch_s)


def print_published(published: Published) -> None:
    job, report = published.job, published.report
    metrics = job.trained.metrics
    shown = ("recall@10", "recall@20", "ndcg@10", "hr@10", "cold_recall@20")
    print(
        f"\nTwo-tower model {published.name}: trained on {job.events} events in"
        f" {job.trained.training_seconds:.1f} s (max {TRAIN_MAX_SECONDS:g} s); held out"
        f" ({metrics.get('users', 0):.0f} users): "
        + ", ".join(f"{name} {metrics[name]:.3f}" for name in shown if name in metrics)
    )
    print(
        f"Published: save {report.save_s:.1f} s, Triton load {report.load_s:.1f} s,"
        f" embed {report.items} items {report.embed_s:.1f} s, live after {report.switch_s:.1f} s,"
        f" total {report.total_s:.1f} s (with {PUBLISH_GRACE_S:g} s grace and retiring);"
        f" Recommend reported it {published.switch_seen_s:.2f} s after run_job returned"
    )


# ---- 2. the towers -------------------------------------------------------------------------


@dataclass(frozen=True)
class TowerRun:
    tower: str
    batch: int  # items or users per request
    callers: int
    triton: LatencyStats
    in_process: LatencyStats
    server: TritonCounters  # what the Triton run added to Triton's counters

    @property
    def ratio_p50(self) -> float:
        return self.triton.p50_ms / self.in_process.p50_ms

    @property
    def ratio_p99(self) -> float:
        return self.triton.p99_ms / self.in_process.p99_ms


@dataclass(frozen=True)
class Workload:
    tower: str
    batch: int
    samples: list[Inputs]

    def triton_requests(self) -> list[list[triton.InferInput]]:
        return [triton_request(self.tower, s) for s in self.samples]

    def torch_requests(self) -> list[tuple[torch.Tensor, ...]]:
        return [tuple(torch.from_numpy(a) for a in s) for s in self.samples]


class TowerBench:
    def __init__(self, spec: SuiteSpec, version: int) -> None:
        self.address = spec.address("embedding")
        self.version = version
        self.torchscript = ModelStore(spec.model_dir).version_dir(version) / "torchscript"

    def load(self, tower: str) -> torch.jit.ScriptModule:
        module = torch.jit.load(str(self.torchscript / f"{tower}.pt"), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        return module

    def triton_caller(
        self, tower: str, requests: Sequence[list[triton.InferInput]]
    ) -> Callable[[], TritonCaller]:
        return lambda: TritonCaller(self.address, tower, self.version, requests)

    def measure(self, work: Workload, callers: Sequence[int]) -> list[TowerRun]:
        module = self.load(work.tower)
        via_triton, via_torch = work.triton_requests(), work.torch_requests()
        open_triton = self.triton_caller(work.tower, via_triton)
        keys = list(range(len(work.samples)))
        warmup = keys[: min(TOWER_WARMUP_CALLS, len(keys))]
        # Sequential warm-up outside the clock and before the counters are read; the runs
        # themselves then need none (each caller connects in its constructor).
        run_callers(open_triton, warmup, [], 1)
        run_callers(lambda: TorchCaller(module, via_torch), warmup, [], 1)
        runs = []
        for count in callers:
            print(f"{work.tower} at batch {work.batch}, {count} caller(s) ...", flush=True)
            before = read_counters(self.address, work.tower, self.version)
            in_triton = run_callers(open_triton, keys, [], count)
            server = read_counters(self.address, work.tower, self.version).since(before)
            in_process = run_callers(lambda: TorchCaller(module, via_torch), keys, [], count)
            runs.append(TowerRun(work.tower, work.batch, count, in_triton, in_process, server))
        return runs

    def disagreement(self, work: Workload) -> float:
        """Largest difference between Triton's and the in-process vectors over a sample."""
        module = self.load(work.tower)
        caller = TritonCaller(self.address, work.tower, self.version, work.triton_requests())
        local = TorchCaller(module, work.torch_requests())
        try:
            return max(
                float(np.max(np.abs(np.asarray(caller.call(k)) - local.forward(k).numpy())))
                for k in range(min(AGREEMENT_SAMPLE, len(work.samples)))
            )
        finally:
            caller.close()


@dataclass(frozen=True)
class TowerResult:
    runs: list[TowerRun]
    max_abs_difference: float  # Triton's vectors against in-process, over a sample


def measure_towers(
    spec: SuiteSpec, model: ServingInfo, ratings: Sequence[DatasetEvent], draw: random.Random
) -> TowerResult:
    content_index = load_content_index(spec.data_dir / "retrieval" / "vectors.sqlite3")
    vectors = ((i, content_index.vector_of(i)) for i in model.items)
    content = {i: v for i, v in vectors if v is not None}
    users = Workload(USER_TOWER, 1, user_samples(model, ratings, TOWER_CALLS, draw))
    singles = Workload(ITEM_TOWER, 1, item_samples(model, content, 1, TOWER_CALLS, draw))
    batches = item_samples(model, content, ITEM_BATCH, ITEM_BATCH_CALLS, draw)
    bench = TowerBench(spec, model.version)
    with torch_threads(1):
        difference = max(bench.disagreement(users), bench.disagreement(singles))
        runs = [
            *bench.measure(users, USER_CALLERS),
            *bench.measure(singles, (1,)),
            *bench.measure(Workload(ITEM_TOWER, ITEM_BATCH, batches), (1,)),
        ]
    return TowerResult(runs, difference)


def _cells(stats: LatencyStats) -> str:
    return f"{stats.p50_ms:>8.2f}{stats.p99_ms:>9.2f}{stats.calls_per_s:>9.0f}"


def _optional(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_towers(result: TowerResult, version: int) -> None:
    print(
        f"\nTowers of {model_name(version)}: Triton (gRPC, a sync client per caller thread,"
        f" dynamic batching) vs the same TorchScript in-process (torch threads=1, threads as"
        f" callers); {TOWER_CALLS} calls per run ({ITEM_BATCH_CALLS} at batch {ITEM_BATCH});"
        f" vectors agree within {result.max_abs_difference:.1e}"
    )
    print(
        f"{'':24}{'Triton':^26}  {'in-process':^26}  {'Triton/in-proc':^15}"
        f"  {'inside Triton, per request':^30}"
    )
    header = f"{'p50 ms':>8}{'p99 ms':>9}{'calls/s':>9}"
    print(
        f"{'tower':<11}{'batch':>5}{'callers':>8}{header}  {header}  {'p50':>7}{'p99':>8}"
        f"  {'mean ms':>8}{'queue ms':>9}{'avg batch':>10}{'max':>5}"
    )
    for r in result.runs:
        s = r.server
        print(
            f"{r.tower:<11}{r.batch:>5}{r.callers:>8}{_cells(r.triton)}  {_cells(r.in_process)}"
            f"  {r.ratio_p50:>6.1f}x{r.ratio_p99:>7.1f}x  {_optional(s.request_ms, 8, 2)}"
            f"{_optional(s.queue_ms, 9, 2)}{_optional(s.average_batch, 10, 1)}"
            f"{s.largest_batch:>5}"
        )
    print(
        "inside Triton: its own statistics over the run (mean request time, queue included);"
        " avg batch = inference_count / execution_count: the batches its dynamic batcher formed"
        " (max queue delay 200 us)"
    )


# ---- 3. Recommend with the model ---------------------------------------------------------


@dataclass(frozen=True)
class ModelRecommend:
    content: RecommendResult  # before any model was published
    model: RecommendResult
    served_by_model: int  # of FALLBACK_SAMPLE drawn users, answered by the model

    @property
    def aim_met(self) -> bool:
        return self.model.aim_met


def served_by(address: str, users: Sequence[str], name: str) -> int:
    caller = RecommendCaller(address)
    try:
        return sum(caller.recommend(user).model_version == name for user in users)
    finally:
        caller.close()


def measure_model_recommend(
    address: str,
    users: Sequence[str],
    content: RecommendResult,
    name: str,
    service_pids: Mapping[str, int],
) -> ModelRecommend:
    # The events part's draw: the same users, in the same order, as its content-profile runs.
    model = measure_recommend(address, users, content.requests, random.Random(SEED), service_pids)
    sample = random.Random(SEED).choices(users, k=FALLBACK_SAMPLE)
    return ModelRecommend(content, model, served_by(address, sample, name))


def _recommend_cells(stats: LatencyStats) -> str:
    return f"{stats.p50_ms:>8.2f}{stats.p99_ms:>9.2f}{stats.calls_per_s:>11.0f}"


def print_model_recommend(result: ModelRecommend, name: str) -> None:
    print(
        f"\nRecommend through the gateway, k={K}, {result.model.requests} calls per run after"
        f" {WARMUP_CALLS} warm-up calls, the same users for both; with {name}"
        f" {result.served_by_model}/{FALLBACK_SAMPLE} sampled users were answered by the model"
    )
    print(f"{'':8}{'content profile (no model)':^28}  {name + ' (Triton in the path)':^28}")
    header = f"{'p50 ms':>8}{'p99 ms':>9}{'calls/s':>11}"
    print(f"{'callers':>7} {header}  {header}")
    content_runs = {r.callers: r.gateway for r in result.content.runs}
    for run in result.model.runs:
        before, after = content_runs[run.callers], run.gateway
        print(f"{run.callers:>7} {_recommend_cells(before)}  {_recommend_cells(after)}")
    print(f"with {name}:")
    print_cpu(result.model.runs)
    print(
        f"aim: p99 < {AIM_RECOMMEND_P99_MS:g} ms at {AIM_RECOMMEND_CALLERS} callers with the"
        f" model serving: {verdict(result.aim_met)}"
    )


# ---- report and the part -------------------------------------------------------------------


def build_model_report(
    published: Published, towers: TowerResult, recommend: ModelRecommend
) -> dict[str, Any]:
    job = published.job
    return {
        "name": published.name,
        "training": {
            "events": job.events,
            "seconds": job.trained.training_seconds,
            "max_seconds": TRAIN_MAX_SECONDS,
            "held_out": job.trained.metrics,
        },
        "publish": {**asdict(published.report), "grace_s": PUBLISH_GRACE_S},
        "recommend_switch_seen_s": published.switch_seen_s,
        "towers": {
            "client": "tritonclient.grpc sync, one client per caller thread",
            "in_process_torch_threads": 1,
            "calls_per_run": TOWER_CALLS,
            "calls_per_run_at_batch_256": ITEM_BATCH_CALLS,
            "max_abs_difference": towers.max_abs_difference,
            "runs": [
                {
                    **asdict(r),
                    "ratio_p50": r.ratio_p50,
                    "ratio_p99": r.ratio_p99,
                    "server": {
                        **asdict(r.server),
                        "average_batch": r.server.average_batch,
                        "request_ms": r.server.request_ms,
                        "queue_ms": r.server.queue_ms,
                    },
                }
                for r in towers.runs
            ],
        },
        "recommend": {
            "k": K,
            "requests_per_run": recommend.model.requests,
            "served_by_model": {"sample": FALLBACK_SAMPLE, "model": recommend.served_by_model},
            "runs": [recommend_run_report(r) for r in recommend.model.runs],
            "content_profile_runs": [recommend_run_report(r) for r in recommend.content.runs],
            "aim": {
                "callers": AIM_RECOMMEND_CALLERS,
                "p99_ms_below": AIM_RECOMMEND_P99_MS,
                "met": recommend.aim_met,
            },
        },
    }


def bench_model(
    spec: SuiteSpec,
    ratings: Sequence[DatasetEvent],
    content: RecommendResult,
    service_pids: Mapping[str, int],
) -> dict[str, Any]:
    """`ratings` are the events the events part logged, in log order; `content` its
    Recommend figures from before any model existed."""
    started = time.perf_counter()
    users = sorted({r.user_id for r in ratings})
    published = train_and_publish(spec, users[0])
    print_published(published)
    model = ModelStore(spec.model_dir).serving(published.report.version)
    towers = measure_towers(spec, model, ratings, random.Random(SEED))
    print_towers(towers, published.report.version)
    address = spec.address("gateway")
    recommend = measure_model_recommend(address, users, content, model.name, service_pids)
    print_model_recommend(recommend, model.name)
    sample = sorted(set(random.Random(SEED).choices(users, k=SAME_LIST_SAMPLE)))
    yardstick = measure_in_process(
        spec, users, content.requests, suite_lists(address, sample), address, service_pids
    )
    print_yardstick(yardstick, content, recommend.model, model.name, AIM_RECOMMEND_CALLERS)
    print(f"Model part: {time.perf_counter() - started:.0f} s")
    report = build_model_report(published, towers, recommend)
    report["in_process"] = yardstick_report(yardstick, content, recommend.model)
    return report


def suite_lists(address: str, users: Sequence[str]) -> dict[str, list[str]]:
    caller = RecommendCaller(address)
    try:
        return {user: caller.ids(user) for user in users}
    finally:
        caller.close()


def yardstick_report(
    yardstick: Yardstick, content: RecommendResult, model: RecommendResult
) -> dict[str, Any]:
    return {
        "content": asdict(yardstick.content),
        "model": asdict(yardstick.model),
        "agreeing": {"sample": yardstick.sampled, "same_list": yardstick.agreeing},
        "suite_over_in_process": {
            f"{run.path}_at_{run_callers.callers}_callers": run_callers.cpu_ms_total
            / run.cpu_ms_per_call
            for run, suite in ((yardstick.content, content), (yardstick.model, model))
            for run_callers in suite.runs
        },
        "paired_rounds": [{**asdict(r), "ratio": r.ratio} for r in yardstick.rounds],
        "paired_median_ratio": yardstick.median_ratio,
        "aim_ratio_at_most": AIM_RATIO,
        "aim_met": yardstick.median_ratio <= AIM_RATIO,
    }
