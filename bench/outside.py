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
from collections import defaultdict
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


def service_name(pid: int, proc: Path = PROC) -> str:
    """`features` for a process started as `python -m services.features`; else its name."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    for arg in argv:
        if arg.startswith(b"services."):
            return arg.decode().removeprefix("services.")
    return Path(argv[0].decode()).name if argv and argv[0] else str(pid)


def suite_cpu_by_part(root: int, proc: Path = PROC) -> dict[str, float]:
    """CPU seconds so far of each service of the suite: its own process, and apart from it
    what it started (the trainer's Ray, the embedding service's Triton), keyed
    `trainer` and `trainer: children`; the launcher itself under `launcher`."""
    processes = read_processes(proc)
    tree = {p.pid: p for p in process_tree(root, processes)}
    parts: dict[str, float] = defaultdict(float)
    for process in tree.values():
        service, pid = None, process.pid
        while pid in tree and pid != root:
            if tree[pid].ppid == root:
                service = pid
                break
            pid = tree[pid].ppid
        if service is None:
            key = "launcher"
        elif service == process.pid:
            key = service_name(service, proc)
        else:
            key = f"{service_name(service, proc)}: children"
        parts[key] += cpu_seconds(process.pid, proc)
    return dict(parts)


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
    before = suite_cpu_by_part(root)
    stats = run_callers(lambda: Caller(args.gateway), user_ids, warmup, args.callers)
    after = suite_cpu_by_part(root)
    calls = len(user_ids) + len(warmup)
    by_part = {k: 1000 * (v - before.get(k, 0.0)) / calls for k, v in after.items()}
    cpu_ms = sum(by_part.values())
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
    print(
        "  by process, ms per call: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(by_part.items(), key=lambda kv: -kv[1]))
    )
    met = cpu_ms <= AIM_CPU_MS and stats.p99_ms <= AIM_P99_MS
    print(
        f"aim: at most {AIM_CPU_MS:g} ms of CPU per call and p99 at most {AIM_P99_MS:g} ms:"
        f" {'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
