"""What Recommend's streamed reads buy (`python -m bench.streamed_reads [ROUNDS]`): one suite
without the trainer holding the MovieLens catalogue and its first 30,000 ratings, and a
second gateway beside its own with `RECSYS_GATEWAY_STREAMED_READS=0`, over the same
features and retrieval; rounds of 2,000 Recommend calls at 8 callers go to each gateway in
turn (the order alternating), and each round's CPU of every process of the suite per call
is printed, then the medians and the paired ratios. Pairs, since this machine's speed
drifts by a third within minutes."""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss

from bench.events import log_concurrently, measure_recommend, rated_by_user
from services.launcher import WITHOUT_TRAINER, Suite, SuiteSpec, free_ports, is_serving
from suite.client import GatewayClient
from suite.datasets import dataset_dir, load_interactions, load_movies

RATINGS = 30_000
REQUESTS = 2_000
CALLERS = 8
UPSERT_BATCH = 500


def main(rounds: int) -> None:
    faiss.omp_set_num_threads(1)
    movies = load_movies()
    with tempfile.TemporaryDirectory(prefix="recsys-streamed-") as tmp:
        spec = SuiteSpec.on_free_ports(Path(tmp), Path(tmp) / "logs", WITHOUT_TRAINER)
        with Suite(spec) as suite:
            streamed = spec.address("gateway")
            client = GatewayClient(streamed, timeout_s=600)
            for first in range(0, len(movies), UPSERT_BATCH):
                client.upsert(movies[first : first + UPSERT_BATCH])
            events = load_interactions(dataset_dir() / "ratings.csv")[:RATINGS]
            log_concurrently(streamed, [e.to_api() for e in events])
            users = sorted(rated_by_user(events))
            port = free_ports(1)[0]
            env = spec.env_for("gateway")
            env.update(
                {
                    "RECSYS_GATEWAY_PORT": str(port),
                    "RECSYS_GATEWAY_METRICS_PORT": "0",
                    "RECSYS_GATEWAY_STREAMED_READS": "0",
                    "RECSYS_GATEWAY_DATA_DIR": str(Path(tmp) / "unary-gateway"),
                }
            )
            other = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env)
            unary = f"{spec.host}:{port}"
            try:
                while not is_serving(unary):
                    time.sleep(0.3)
                pids = {name: p.pid for name, p in suite.processes.items()}
                gateway = next(name for name in pids if name.startswith("gateway"))
                paths = {
                    "streamed": (streamed, pids),
                    "unary": (unary, {**pids, gateway: other.pid}),
                }
                cpu: dict[str, list[float]] = {"streamed": [], "unary": []}
                for number in range(rounds):
                    order = ["streamed", "unary"] if number % 2 == 0 else ["unary", "streamed"]
                    for name in order:
                        address, service_pids = paths[name]
                        run = measure_recommend(
                            address, users, REQUESTS, random.Random(7), service_pids, (CALLERS,)
                        ).runs[0]
                        cpu[name].append(run.cpu_ms_total)
                        parts = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_ms_per_call.items())
                        print(f"  {name:8s} {run.cpu_ms_total:.2f} ms per call ({parts})")
            finally:
                other.terminate()
                other.wait(30)
    ratios = [u / s for u, s in zip(cpu["unary"], cpu["streamed"], strict=True)]
    print(f"CPU per Recommend at {CALLERS} callers, the suite's processes and the callers:")
    for name, values in cpu.items():
        print(f"  {name:8s} median {statistics.median(values):.2f} ms")
    print(
        f"  unary / streamed per round: {', '.join(f'{r:.2f}' for r in ratios)};"
        f" median x{statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
