"""Recommend's cost measured from outside, as a new user would see it: against a suite that
`make up` (`recsys up`, the continual trainer included) is running, load the MovieLens
movies and the first ratings through the public API, wait until the trainer's model
serves with every event learned, then time Recommend for users with history from several
callers and sum the CPU time of every process of the suite from /proc.

    make up                       # in one terminal
    python -m bench.outside       # in another: prints CPU ms per call, p50 and p99

It writes to the suite it measures (the catalogue and the ratings, idempotently: the
event ids are fixed), so run it against a suite kept for the purpose.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from bench.memory import PROC, cpu_seconds, process_tree, read_processes
from bench.similar_items import ingest
from bench.timing import SEED, WARMUP_CALLS, run_callers
from recsys.gateway.v1 import gateway_pb2 as api
from services.gateway import CONTENT_MODEL
from shared.config import default_address
from suite.client import GatewayClient, batches
from suite.datasets import dataset_dir, load_interactions, load_movies

RATINGS = 30_000
CALLS = 1_600
CALLERS = 8
AIM_CPU_MS = 3.5
AIM_P99_MS = 35.0
LOG_BATCH = 1_000
MODEL_WAIT_S = 900.0


def suite_root(pid: int | None, proc: Path = PROC) -> int:
    """The `recsys up` process whose descendants are the suite: `pid`, or the only one
    running."""
    if pid is not None:
        return pid
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"recsys") for a in argv) and b"up" in argv:
            found.append(int(entry.name))
    if len(found) != 1:
        raise SystemExit(
            f"found {len(found)} `recsys up` processes ({found}); name one with --suite-pid"
        )
    return found[0]


def suite_cpu(root: int) -> float:
    return sum(cpu_seconds(p.pid) for p in process_tree(root, read_processes()))


class Caller:
    def __init__(self, address: str) -> None:
        self.client = GatewayClient(address)

    def call(self, user_id: str) -> object:
        request = api.RecommendRequest(user_id=user_id, k=10)
        return self.client.stub.Recommend(request, timeout=10)

    def close(self) -> None:
        self.client.close()


def wait_for_learned_model(client: GatewayClient, timeout_s: float) -> api.GetStatusResponse:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.stub.GetStatus(api.GetStatusRequest(), timeout=10)
        if status.serving_version not in ("", CONTENT_MODEL) and status.events_behind == 0:
            return status
        if time.monotonic() > deadline:
            raise SystemExit(f"no model with every event learned after {timeout_s:.0f} s")
        time.sleep(2.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default=default_address("gateway"))
    parser.add_argument("--suite-pid", type=int, default=None)
    parser.add_argument("--ratings", type=int, default=RATINGS)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--callers", type=int, default=CALLERS)
    args = parser.parse_args(argv)
    root = suite_root(args.suite_pid)
    client = GatewayClient(args.gateway)
    try:
        movies = load_movies()
        print(f"Upserting {len(movies)} movies ...", flush=True)
        ingest(args.gateway, movies)
        ratings = load_interactions(dataset_dir() / "ratings.csv")[: args.ratings]
        print(f"Logging the first {len(ratings)} ratings ...", flush=True)
        for n, chunk in enumerate(batches(ratings, LOG_BATCH)):
            events = [r.to_api(f"outside-{n * LOG_BATCH + i}") for i, r in enumerate(chunk)]
            client.stub.LogEvents(api.LogEventsRequest(events=events), timeout=60)
        print("Waiting for the trainer's model to serve with every event learned ...", flush=True)
        status = wait_for_learned_model(client, MODEL_WAIT_S)
        users = sorted({r.user_id for r in ratings})
        draw = random.Random(SEED)
        user_ids, warmup = draw.choices(users, k=args.calls), draw.choices(users, k=WARMUP_CALLS)
        served = [
            client.stub.Recommend(api.RecommendRequest(user_id=u, k=10), timeout=10)
            for u in user_ids[:50]
        ]
        by_model = sum(r.model_version == status.serving_version for r in served)
    except grpc.RpcError as error:
        print(f"bench.outside: the suite at {args.gateway} failed: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    before = suite_cpu(root)
    stats = run_callers(lambda: Caller(args.gateway), user_ids, warmup, args.callers)
    cpu_ms = 1000 * (suite_cpu(root) - before) / (len(user_ids) + len(warmup))
    print(
        f"Recommend (k=10) from outside: {args.callers} callers, {len(user_ids)} calls after"
        f" {len(warmup)} warm-up, users with history drawn from {len(users)}; serving"
        f" {status.serving_version} ({by_model}/50 sampled answered by it), trained through"
        f" offset {status.trained_offset}"
    )
    print(
        f"p50 {stats.p50_ms:.2f} ms, p99 {stats.p99_ms:.2f} ms, {stats.calls_per_s:.0f} calls/s;"
        f" CPU of every process of the suite (pid {root} and descendants, warm-up included):"
        f" {cpu_ms:.2f} ms per call"
    )
    met = cpu_ms <= AIM_CPU_MS and stats.p99_ms <= AIM_P99_MS
    print(
        f"aim: at most {AIM_CPU_MS:g} ms of CPU per call and p99 at most {AIM_P99_MS:g} ms:"
        f" {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
