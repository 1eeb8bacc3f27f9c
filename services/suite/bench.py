"""The benchmark: load MovieLens through the gateway, then time SimilarItems through the
gateway and the same search done in-process on a VectorIndex, at 1 and at 8 callers; then,
on the same suite, durable event ingest, Recommend latency and event-to-effect latency
(services/suite/bench_events.py), and a two-tower model trained, published and timed in
Triton and through Recommend (services/suite/bench_model.py). After them, on a second
suite that runs the continual trainer: its memory, freshness, publish times and learning
throughput (services/suite/bench_trainer.py).

It starts its own suite on free loopback ports with a fresh data dir, so every item is
encoded during ingest and nothing it does touches a suite that may already be running.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import faiss
import numpy as np
from tqdm import tqdm

from services.retrieval.vector_index import IndexSettings, VectorIndex
from services.suite.client import GatewayClient, batches
from services.suite.launcher import WITHOUT_TRAINER, Suite, SuiteError, SuiteSpec
from services.suite.movielens import PROJECT_ROOT, load_movies
from shared.catalog import CONTENT_INDEX, Item, ItemFilter

LOOPBACK = "127.0.0.1"
BATCH = 256
K = 10
CALLER_COUNTS = (1, 8)
WARMUP_CALLS = 100
CALL_TIMEOUT_S = 5.0
SEED = 20240601
AGREEMENT_SAMPLE = 50
AIM_CALLERS = 8
AIM_P50_MS = 5.0
AIM_P99_MS = 15.0
REPORT_PATH = PROJECT_ROOT / "reports" / "bench.json"

KeyT = TypeVar("KeyT")
KeyT_contra = TypeVar("KeyT_contra", contravariant=True)


@dataclass(frozen=True)
class LatencyStats:
    calls: int
    p50_ms: float
    p99_ms: float
    calls_per_s: float


@dataclass(frozen=True)
class RunResult:
    callers: int
    gateway: LatencyStats
    in_process: LatencyStats

    @property
    def ratio_p50(self) -> float:
        return self.gateway.p50_ms / self.in_process.p50_ms

    @property
    def ratio_p99(self) -> float:
        return self.gateway.p99_ms / self.in_process.p99_ms


class Caller(Protocol[KeyT_contra]):
    """One caller's connection: `call` makes one timed call for a key (an item id, a user
    id, a batch of events)."""

    def call(self, key: KeyT_contra) -> object: ...

    def close(self) -> None: ...


class SimilarCaller(Protocol):
    """Something that answers a SimilarItems-style search with the hits' ids."""

    def similar(self, item_id: str) -> list[str]: ...


class GatewayCaller:
    def __init__(self, address: str) -> None:
        self.client = GatewayClient(address, timeout_s=CALL_TIMEOUT_S)

    def similar(self, item_id: str) -> list[str]:
        return [hit.item_id for hit in self.client.similar(item_id, K)]

    def call(self, key: str) -> object:
        return self.similar(key)

    def close(self) -> None:
        self.client.close()


class InProcessCaller:
    """Does what the retrieval service's SearchSimilar does, minus gRPC and the gateway."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def similar(self, item_id: str) -> list[str]:
        query = self.index.vector_of(item_id)
        if query is None:
            raise KeyError(item_id)
        own = self.index.categories_of(item_id)
        hits = self.index.search(query, K, ItemFilter(), exclude=[item_id])
        # The service also reports shared categories per hit; keep that work in the baseline.
        _ = [own & self.index.categories_of(h.item_id) for h in hits]
        return [h.item_id for h in hits]

    def call(self, key: str) -> object:
        return self.similar(key)

    def close(self) -> None:
        pass


# ---- suite and ingest ------------------------------------------------------------------


def ingest(address: str, movies: Sequence[Item]) -> float:
    """Upserts every movie through the gateway; returns the seconds it took."""
    client = GatewayClient(address)
    try:
        started = time.perf_counter()
        with tqdm(total=len(movies), desc="UpsertItems", unit="movie") as progress:
            for batch in batches(movies, BATCH):
                client.upsert(batch)
                progress.update(len(batch))
        return time.perf_counter() - started
    finally:
        client.close()


def load_content_index(vectors_db: Path) -> VectorIndex:
    """The content vectors the retrieval service stored, read-only, as a fresh index."""
    uri = vectors_db.as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute(
            "SELECT item_id, categories, vector FROM vectors WHERE index_name = ? ORDER BY item_id",
            (CONTENT_INDEX,),
        ).fetchall()
    ids = [str(row[0]) for row in rows]
    categories = [json.loads(row[1]) for row in rows]
    vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.float32)
    vectors = vectors.reshape(len(ids), -1)
    index = VectorIndex(vectors.shape[1], IndexSettings())
    index.upsert(ids, vectors, categories)
    return index


# ---- timing ----------------------------------------------------------------------------


def summarize(latencies_s: Sequence[float], wall_s: float) -> LatencyStats:
    millis = np.asarray(latencies_s) * 1_000.0
    return LatencyStats(
        calls=len(millis),
        p50_ms=float(np.percentile(millis, 50)),
        p99_ms=float(np.percentile(millis, 99)),
        calls_per_s=len(millis) / wall_s,
    )


def timed_calls(caller: Caller[KeyT], keys: Sequence[KeyT]) -> list[float]:
    latencies = []
    for key in keys:
        started = time.perf_counter()
        caller.call(key)
        latencies.append(time.perf_counter() - started)
    return latencies


def run_callers(
    open_caller: Callable[[], Caller[KeyT]],
    keys: Sequence[KeyT],
    warmup_keys: Sequence[KeyT],
    callers: int,
) -> LatencyStats:
    """Each thread opens its own caller and warms it up; then all start together."""
    start_line = threading.Barrier(callers + 1, timeout=60.0)

    def work(share: Sequence[KeyT], warmup: Sequence[KeyT]) -> list[float]:
        caller = open_caller()
        try:
            timed_calls(caller, warmup)
            start_line.wait()
            return timed_calls(caller, share)
        except BaseException:
            start_line.abort()  # the others and the clock would wait on this thread forever
            raise
        finally:
            caller.close()

    with ThreadPoolExecutor(max_workers=callers) as pool:
        futures = [
            pool.submit(work, keys[i::callers], warmup_keys[i::callers]) for i in range(callers)
        ]
        try:
            start_line.wait()
        except threading.BrokenBarrierError:
            _raise_first_cause(futures)
            raise
        started = time.perf_counter()
        latencies = [latency for future in futures for latency in future.result()]
        wall_s = time.perf_counter() - started
    return summarize(latencies, wall_s)


def _raise_first_cause(futures: Sequence[Future[list[float]]]) -> None:
    """The error that broke the start line, rather than the others' BrokenBarrierError."""
    for error in (future.exception() for future in futures):
        if error is not None and not isinstance(error, threading.BrokenBarrierError):
            raise error


def agreement(first: SimilarCaller, second: SimilarCaller, item_ids: Sequence[str]) -> int:
    """How many of the sample get the same hits, in the same order, from both."""
    return sum(first.similar(i) == second.similar(i) for i in item_ids)


# ---- report ----------------------------------------------------------------------------


def aim_met(results: Sequence[RunResult]) -> bool:
    at_aim = next(r for r in results if r.callers == AIM_CALLERS)
    return at_aim.gateway.p50_ms < AIM_P50_MS and at_aim.gateway.p99_ms < AIM_P99_MS


def print_table(results: Sequence[RunResult], requests: int) -> None:
    print(
        f"\nSimilarItems, k={K}, {requests} calls per run after {WARMUP_CALLS} warm-up calls;"
        f" os.cpu_count()={os.cpu_count()} (suite and callers share these CPUs)"
    )
    print(f"{'':8}{'gateway (gRPC)':^28}  {'in-process':^28}  {'gateway/in-process':^18}")
    header = f"{'p50 ms':>8}{'p99 ms':>9}{'calls/s':>11}"
    print(f"{'callers':>7} {header}  {header}  {'p50':>8}{'p99':>9}")
    for r in results:
        print(
            f"{r.callers:>7} {_stats_cells(r.gateway)}  {_stats_cells(r.in_process)}"
            f"  {r.ratio_p50:>7.1f}x{r.ratio_p99:>8.1f}x"
        )
    verdict = "met" if aim_met(results) else "NOT met"
    print(
        f"aim: p50 < {AIM_P50_MS:g} ms and p99 < {AIM_P99_MS:g} ms through the gateway"
        f" at {AIM_CALLERS} callers: {verdict}"
    )


def _stats_cells(stats: LatencyStats) -> str:
    return f"{stats.p50_ms:>8.2f}{stats.p99_ms:>9.2f}{stats.calls_per_s:>11.0f}"


def write_report(report: dict[str, Any], path: Path = REPORT_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def build_report(
    requests: int, items: int, ingest_s: float, agreed: int, results: Sequence[RunResult]
) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "ingest": {
            "items": items,
            "batch": BATCH,
            "seconds": ingest_s,
            "items_per_s": items / ingest_s,
            "includes_encoding": True,
        },
        "similar_items": {
            "k": K,
            "requests_per_run": requests,
            "warmup_calls": WARMUP_CALLS,
            "call_timeout_s": CALL_TIMEOUT_S,
            "seed": SEED,
            "agreement": {"sample": AGREEMENT_SAMPLE, "identical": agreed},
            "runs": [
                {
                    **asdict(r),
                    "ratio_p50": r.ratio_p50,
                    "ratio_p99": r.ratio_p99,
                }
                for r in results
            ],
        },
        "aim": {
            "callers": AIM_CALLERS,
            "p50_ms_below": AIM_P50_MS,
            "p99_ms_below": AIM_P99_MS,
            "met": aim_met(results),
        },
    }


# ---- the benchmark ---------------------------------------------------------------------


def measure(
    address: str, index: VectorIndex, item_ids: Sequence[str], warmup_ids: Sequence[str]
) -> list[RunResult]:
    results = []
    for callers in CALLER_COUNTS:
        print(f"SimilarItems with {callers} caller(s) ...", flush=True)
        through_gateway = run_callers(lambda: GatewayCaller(address), item_ids, warmup_ids, callers)
        in_process = run_callers(lambda: InProcessCaller(index), item_ids, warmup_ids, callers)
        results.append(RunResult(callers, through_gateway, in_process))
    return results


def check_agreement(address: str, index: VectorIndex, sample: Sequence[str]) -> int:
    gateway = GatewayCaller(address)
    try:
        agreed = agreement(gateway, InProcessCaller(index), sample)
    finally:
        gateway.close()
    print(f"Same hits from the gateway and in-process for {agreed}/{len(sample)} sampled items.")
    return agreed


def bench_suite(
    spec: SuiteSpec, movies: Sequence[Item], requests: int, service_pids: Mapping[str, int]
) -> dict[str, Any]:
    address = spec.address("gateway")
    ingest_s = ingest(address, movies)
    print(
        f"Ingested {len(movies)} movies in {ingest_s:.1f} s: {len(movies) / ingest_s:.0f} items/s"
        f" (batches of {BATCH}, every item encoded)."
    )
    index = load_content_index(spec.data_dir / "retrieval" / "vectors.sqlite3")
    if len(index) != len(movies):
        raise RuntimeError(f"retrieval stored {len(index)} vectors for {len(movies)} movies")
    draw = random.Random(SEED)
    catalogue_ids = [movie.item_id for movie in movies]
    item_ids = draw.choices(catalogue_ids, k=requests)
    warmup_ids = draw.choices(catalogue_ids, k=WARMUP_CALLS)
    agreed = check_agreement(address, index, item_ids[:AGREEMENT_SAMPLE])
    results = measure(address, index, item_ids, warmup_ids)
    print_table(results, requests)
    report = build_report(requests, len(movies), ingest_s, agreed, results)
    # Imported here: the events part builds on this module's timing helpers.
    from services.suite.bench_events import bench_events

    return {**report, **bench_events(spec, catalogue_ids, requests, service_pids)}


def print_log_tails(log_dir: Path | None, lines: int = 20) -> None:
    for log in sorted(log_dir.glob("*.log")) if log_dir else []:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


PARTS = ("suite", "trainer")  # the suite without the trainer; the trainer on its own suite
TRAINER_REPORT_PATH = PROJECT_ROOT / "reports" / "bench_trainer.json"


def run_bench(requests: int = 2000, only: str | None = None) -> int:
    """Every part, or `only` one of PARTS (the trainer part alone writes its own report)."""
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
    path = TRAINER_REPORT_PATH if only == "trainer" else REPORT_PATH
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
    # Imported here: the trainer part builds on the events part and this module.
    from services.suite.bench_trainer import bench_trainer

    try:
        return bench_trainer(movies)
    except SuiteError as error:
        print(f"recsys bench: {error}", file=sys.stderr)
        return None
