"""The bench's model part: reading Triton's statistics and building the towers' inputs."""

from __future__ import annotations

import random

import numpy as np
from tritonclient.grpc import service_pb2

from bench.model import TritonCounters, item_samples, recent_by_user, user_samples
from shared.events import EventType
from shared.model_store import ServingInfo
from suite.datasets import DatasetEvent


def statistics(
    inferences: int, executions: int, requests: int, batches: dict[int, int]
) -> service_pb2.ModelStatistics:
    stats = service_pb2.ModelStatistics(
        name="user_tower",
        version="1",
        inference_count=inferences,
        execution_count=executions,
    )
    stats.inference_stats.success.count = requests
    stats.inference_stats.success.ns = requests * 2_000_000
    stats.inference_stats.queue.ns = requests * 500_000
    for size, count in batches.items():
        stats.batch_stats.add(batch_size=size).compute_infer.count = count
    return stats


def model(history_len: int = 3) -> ServingInfo:
    return ServingInfo(
        version=1,
        history_len=history_len,
        dimension=8,
        users={"u1": 1, "u2": 2},
        items={"a": 1, "b": 2, "c": 3},
        trained_through_offset=3,
    )


def test_counters_average_batch_is_inferences_per_execution_within_a_run() -> None:
    before = TritonCounters.of(statistics(100, 100, 100, {1: 100}))
    after = TritonCounters.of(statistics(1124, 356, 1124, {1: 150, 4: 200, 8: 106}))

    run = after.since(before)

    assert run.inferences == 1024
    assert run.executions == 256
    assert run.average_batch == 4.0
    assert run.batches == {1: 50, 4: 200, 8: 106}
    assert run.largest_batch == 8
    assert run.request_ms == 2.0
    assert run.queue_ms == 0.5


def test_counters_report_no_batch_or_times_when_a_run_executed_nothing() -> None:
    same = TritonCounters.of(statistics(10, 10, 10, {1: 10}))

    run = same.since(same)

    assert run.average_batch is None
    assert run.request_ms is None
    assert run.largest_batch == 0
    assert run.batches == {}


def test_recent_by_user_keeps_the_latest_ratings_newest_first() -> None:
    ratings = [DatasetEvent("u1", item, float(t), 4.0) for t, item in enumerate("abcd")]

    recent = recent_by_user(ratings, limit=3)

    assert [i.item_id for i in recent["u1"]] == ["d", "c", "b"]
    assert all(i.type == EventType.RATE and i.value == 4.0 for i in recent["u1"])


def test_user_samples_are_left_padded_batch_one_requests_of_known_users() -> None:
    ratings = [DatasetEvent("u1", "a", 1.0, 5.0), DatasetEvent("u1", "b", 2.0, 5.0)]
    ratings.append(DatasetEvent("stranger", "c", 3.0, 5.0))  # not in the model: never drawn

    samples = user_samples(model(), ratings, 4, random.Random(0))

    assert len(samples) == 4
    user_row, rows, weights = samples[0]
    assert user_row.tolist() == [[1]]
    assert rows.tolist() == [[0, 1, 2]]
    assert weights[0, 0] == 0.0 and weights[0, 2] > 0.0


def test_item_samples_use_row_zero_for_items_the_model_does_not_know() -> None:
    content = {"a": np.ones(4, np.float32), "new": np.zeros(4, np.float32)}

    samples = item_samples(model(), content, batch=64, count=2, draw=random.Random(0))

    rows, vectors = samples[0]
    assert rows.shape == (64, 1) and vectors.shape == (64, 4)
    assert set(rows[:, 0].tolist()) == {0, 1}
    assert vectors.dtype == np.float32
