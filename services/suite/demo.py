"""The demo: load the MovieLens catalogue through the public API and print similar movies."""

from __future__ import annotations

import sys

from tqdm import tqdm

from services.suite.client import GatewayClient, batches
from services.suite.launcher import Suite, SuiteSpec, is_serving
from services.suite.movielens import load_movies

# Toy Story, The Matrix, The Godfather, The Fellowship of the Ring, Alien
SHOWCASE = ("1", "2571", "858", "4993", "1214")
BATCH = 256


def load_catalogue(client: GatewayClient) -> int:
    movies = load_movies()
    with tqdm(total=len(movies), desc="UpsertItems", unit="movie") as progress:
        for batch in batches(movies, BATCH):
            client.upsert(batch)
            progress.update(len(batch))
    return len(movies)


def print_similar(client: GatewayClient, item_id: str, k: int = 5) -> None:
    similar = client.similar(item_id, k)
    titles = client.titles([item_id, *(s.item_id for s in similar)])
    print(f"\nSimilar to {titles.get(item_id, item_id)}:")
    for rank, scored in enumerate(similar, 1):
        title = titles.get(scored.item_id, scored.item_id)
        shared = "; ".join(scored.reasons[1:])
        print(f"  {rank}. {title:<55} {scored.score:.3f}  {shared}")


def run_demo(keep_running: bool = False) -> int:
    spec = SuiteSpec.from_env()
    gateway = spec.address("gateway")
    suite = None
    if not is_serving(gateway):
        log_dir = spec.data_dir / "logs"
        print(f"Starting the suite (service logs in {log_dir}) ...", flush=True)
        suite = Suite(spec.with_log_dir(log_dir))
        suite.start()
    client = GatewayClient(gateway)
    try:
        count = load_catalogue(client)
        print(f"Loaded {count} movies through {gateway}.")
        for item_id in SHOWCASE:
            print_similar(client, item_id)
    finally:
        client.close()
        if suite is not None and not keep_running:
            suite.stop()
            print("\nStopped the suite the demo started; `make up` runs it until Ctrl-C.")
    if suite is not None and keep_running:
        from services.suite.cli import stop_on_signals, supervise

        return supervise(suite, stop_on_signals())
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
