"""What every part of the benchmark times with: callers on threads started together, and
latency statistics of their calls."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
import torch

from suite.client import GatewayClient

K = 10
CALLER_COUNTS = (1, 8)
WARMUP_CALLS = 100
CALL_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
SEED = 20240601

KeyT = TypeVar("KeyT")
KeyT_contra = TypeVar("KeyT_contra", contravariant=True)


@dataclass(frozen=True)
class LatencyStats:
    calls: int
    p50_ms: float
    p99_ms: float
    calls_per_s: float


class Caller(Protocol[KeyT_contra]):
    """One caller's connection: `call` makes one timed call for a key (an item id, a user
    id, a batch of events)."""

    def call(self, key: KeyT_contra) -> object: ...

    def close(self) -> None: ...


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


def print_log_tails(log_dir: Path | None, lines: int = 20) -> None:
    for log in sorted(log_dir.glob("*.log")) if log_dir else []:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


# How to reach a gateway that asks for TLS and a token, by its address (bench/tls.py):
# GatewayClient's `token` and `ca`.
CLIENT_SETTINGS: dict[str, dict[str, Any]] = {}


def connect(address: str, timeout_s: float = CALL_TIMEOUT_S) -> GatewayClient:
    """A client whose channel is already connected, so no timing includes the handshake."""
    client = GatewayClient(address, timeout_s=timeout_s, **CLIENT_SETTINGS.get(address, {}))
    try:
        grpc.channel_ready_future(client.channel).result(timeout=CONNECT_TIMEOUT_S)
    except BaseException:
        client.close()
        raise
    return client


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1_000.0, q))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Triton runs each tower with one torch thread (RECSYS_EMBEDDING_TORCH_THREADS)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
