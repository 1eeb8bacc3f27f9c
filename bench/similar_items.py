"""SimilarItems: load MovieLens through the gateway (every item encoded during ingest),
then time SimilarItems through the gateway and the same search done in-process on the
retrieval service's index, at 1 and at 8 callers."""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from bench.timing import (
    CALL_TIMEOUT_S,
    CALLER_COUNTS,
    SEED,
    WARMUP_CALLS,
    K,
    LatencyStats,
    run_callers,
)
from services.launcher import SuiteSpec
from services.retrieval import VectorIndex, read_stored_index
from shared.items import CONTENT_INDEX, Item, ItemFilter
from suite.client import GatewayClient, batches

BATCH = 256
AGREEMENT_SAMPLE = 50
AIM_CALLERS = 8
AIM_P50_MS = 5.0
AIM_P99_MS = 15.0


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
    """The content vectors the retrieval service stored, as a fresh index in this process."""
    return read_stored_index(vectors_db, CONTENT_INDEX)


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


def bench_similar_items(spec: SuiteSpec, movies: Sequence[Item], requests: int) -> dict[str, Any]:
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
    return build_report(requests, len(movies), ingest_s, agreed, results)
