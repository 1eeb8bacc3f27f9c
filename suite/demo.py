"""The demo: load the MovieLens catalogue and ratings through the public API, print similar
movies, have the continual trainer learn the ratings and publish the two-tower model, and
print what it recommends."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
from tqdm import tqdm

from evaluation.subjects import LOG_BATCH
from recsys.gateway.v1 import gateway_pb2 as api
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.launcher import Suite, SuiteSpec, is_serving, stop_on_signals, supervise
from services.trainer import JobConfig, PublishSettings, TrainConfig, run_job
from shared.model_store import ModelStore, model_name
from suite.client import GatewayClient, batches
from suite.datasets import dataset_dir, load_interactions, load_movies

# Toy Story, The Matrix, The Godfather, The Fellowship of the Ring, Alien
SHOWCASE = ("1", "2571", "858", "4993", "1214")
SHOWCASE_USERS = ("1", "414")
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


def load_ratings(client: GatewayClient) -> tuple[int, int]:
    """Logs every rating; returns how many, and the log offset of the last."""
    ratings = load_interactions(dataset_dir() / "ratings.csv")
    last = 0
    with tqdm(total=len(ratings), desc="LogEvents", unit="event") as progress:
        for batch in batches(ratings, LOG_BATCH):
            request = api.LogEventsRequest(events=[r.to_api() for r in batch])
            last = client.stub.LogEvents(request, timeout=60).last_offset
            progress.update(len(batch))
    return len(ratings), last


def learn_with_trainer(spec: SuiteSpec, last_offset: int, timeout_s: float = 900) -> str:
    """The trainer has been learning the ratings as they arrived (a first full training,
    then micro-batches); a full retrain over all of them is asked for too. Returns the
    first published version that holds every rating."""
    with grpc.insecure_channel(spec.address("trainer")) as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        print(
            "\nThe continual trainer learns the ratings as they arrive and publishes every few"
            " seconds; asking it for a full retrain over all of them too ...",
            flush=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                trainer.TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                time.sleep(1.0)  # the first (bootstrap) training is still running
        left = max(1.0, deadline - time.monotonic())
        reached = trainer.WaitUntilTrained(
            trainer_pb2.WaitUntilTrainedRequest(offset=last_offset, timeout_s=left),
            timeout=left + 10,
        )
        status = trainer.GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)
    if not reached.reached:
        raise RuntimeError(f"no published version holds offset {last_offset}: {status}")
    print(
        f"{reached.live_version} is live, trained through offset {reached.live_trained_offset}"
        f" ({status.events_learned} events learned; gate: {status.last_gate_decision})."
    )
    return str(reached.live_version)


def train_and_publish(spec: SuiteSpec) -> str:
    job = JobConfig(
        features_address=spec.address("features"),
        retrieval_address=spec.address("retrieval"),
        embedding_address=spec.address("embedding"),
        store=ModelStore(spec.model_dir),
        train=TrainConfig(),
        publish=PublishSettings(grace_s=2.0),
    )
    print("\nTraining the two-tower model on the event log (about a minute) ...", flush=True)
    result = asyncio.run(run_job(job))
    trained, report = result.trained, result.report
    assert report is not None
    held_out = ", ".join(
        f"{key} {trained.metrics[key]:.3f}"
        for key in ("recall@20", "ndcg@10", "hr@10")
        if key in trained.metrics
    )
    print(
        f"Trained on {result.events} events in {trained.training_seconds:.0f}s"
        f" (held-out: {held_out}); published version {report.version} to Triton and"
        f" retrieval in {report.switch_s:.1f}s."
    )
    return model_name(report.version)


def print_recommendations(client: GatewayClient, user_id: str, version: str, k: int = 5) -> None:
    deadline = time.monotonic() + 30
    while True:
        request = api.RecommendRequest(user_id=user_id, k=k, explain=True)
        reply = client.stub.Recommend(request, timeout=10)
        if reply.model_version == version or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    titles = client.titles([i.item_id for i in reply.items])
    print(f"\nRecommended for user {user_id} by {reply.model_version}:")
    for rank, scored in enumerate(reply.items, 1):
        title = titles.get(scored.item_id, scored.item_id)
        print(f"  {rank}. {title:<55} {scored.score:.3f}  {'; '.join(scored.reasons)}")


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
        count, last_offset = load_ratings(client)
        print(f"\nLogged {count} MovieLens ratings as events.")
        if "trainer" in spec.services:
            version = learn_with_trainer(spec, last_offset)
        else:
            version = train_and_publish(spec)
        for user_id in SHOWCASE_USERS:
            print_recommendations(client, user_id, version)
    finally:
        client.close()
        if suite is not None and not keep_running:
            suite.stop()
            print("\nStopped the suite the demo started; `make up` runs it until Ctrl-C.")
    if suite is not None and keep_running:
        return supervise(suite, stop_on_signals())
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
