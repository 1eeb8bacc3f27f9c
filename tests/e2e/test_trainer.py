"""The continual trainer against the running suite: events flow from LogEvents into a
published version with no manual step; WaitUntilTrained; a deliberately bad candidate is
rejected by the gate while the live version keeps serving; Rollback; the gateway's
GetStatus; and SIGKILL at random moments while events stream in loses and repeats nothing.

The trainer runs as its own process (`python -m services.trainer`, as `recsys up` starts
it), so that the tests can kill and restart it while the rest of the suite keeps serving."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsys.gateway.v1 import gateway_pb2 as api
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.gateway.recommend import TUNED_SETTINGS
from tests.e2e.harness import TrainerProcess, UserSuite, catalogue, files_holding
from tests.e2e.test_events import T0, log, rate, recommend

USERS = 40
GROUPS = 4
GROUP_FILMS = 10
KILLS = 3
# Small and fast: a full retrain of a few seconds, publishes every 2 s, a gate that
# compares on 150 events.
TRAINER_ENV = {
    # Enough passes for the small log to teach its taste groups, so that a model trained
    # on relabelled items is clearly worse.
    "RECSYS_TRAINER_EPOCHS": "20",
    # The 20 epochs take a few seconds here; under load a budget of 8 s cut both the live
    # version's retrain and the shuffled one short, and the gate could not tell them apart.
    "RECSYS_TRAINER_MAX_SECONDS": "30",
    "RECSYS_TRAINER_PUBLISH_EVERY_S": "2",
    "RECSYS_TRAINER_PUBLISH_GRACE_S": "1",
    "RECSYS_TRAINER_BOOTSTRAP_MIN_EVENTS": "300",
    "RECSYS_TRAINER_GATE_MIN_EVENTS": "150",
    "RECSYS_TRAINER_CHECKPOINT_EVERY_S": "1",
    "RECSYS_TRAINER_MAX_BATCH_EVENTS": "200",
}


def ratings(movies: list[str], first: int, count: int) -> list[api.Event]:
    """Four taste groups of 10 films each, in time order: a model that learned them ranks
    a user's next film in its top 10, while one trained on relabelled items places only a
    quarter of the group's films there, a gap no sample of 150 events can hide."""
    rng = random.Random(first)
    spacing = len(movies) // GROUPS
    events = []
    for n in range(first, first + count):
        user = n % USERS
        group = user % GROUPS
        item = movies[group * spacing + rng.randrange(GROUP_FILMS)]
        events.append(rate(f"t{n}", f"u{user}", item, T0 + n, value=float(rng.choice((3, 4, 5)))))
    return events


RUNNING: dict[str, TrainerProcess] = {}


def trainer(suite: UserSuite) -> trainer_pb2_grpc.TrainerServiceStub:
    return RUNNING["trainer"].stub()


def status(suite: UserSuite) -> trainer_pb2.GetStatusResponse:
    return trainer(suite).GetStatus(trainer_pb2.GetStatusRequest(), timeout=10)


def wait_trained(suite: UserSuite, offset: int, timeout_s: float = 240) -> str:
    reply = trainer(suite).WaitUntilTrained(
        trainer_pb2.WaitUntilTrainedRequest(offset=offset, timeout_s=timeout_s),
        timeout=timeout_s + 10,
    )
    assert reply.reached, status(suite)
    assert reply.live_trained_offset >= offset
    return str(reply.live_version)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSuite]:
    running = UserSuite(tmp_path_factory.mktemp("trainer"), external_trainer=True).start()
    client = running.client()
    movies = catalogue()
    for start in range(0, len(movies), 256):
        client.upsert(movies[start : start + 256])
    process = RUNNING["trainer"] = TrainerProcess(running, TRAINER_ENV)
    process.start()
    yield running
    assert process.stop() == 0
    assert running.terminate() == 0


@pytest.fixture(scope="module")
def movies() -> list[str]:
    return [m.item_id for m in catalogue()]


def test_logged_events_reach_a_published_model_with_no_manual_step(
    suite: UserSuite, movies: list[str]
) -> None:
    reply = log(suite, *ratings(movies, 0, 600))
    version = wait_trained(suite, reply.last_offset)
    assert version.startswith("two-tower-")
    answer = suite.wait_for_version(version)
    assert answer.model_version == version and len(answer.items) == 10

    # Later events are learned incrementally and published without a retrain.
    later = log(suite, *ratings(movies, 600, 300))
    newer = wait_trained(suite, later.last_offset, timeout_s=120)
    assert newer != version
    now = status(suite)
    assert now.trained_offset >= later.last_offset
    assert now.events_learned == later.last_offset  # every event once, none twice
    assert now.learned_offset_sum == later.last_offset * (later.last_offset + 1) // 2
    assert now.last_gate_decision.startswith("published")
    assert not now.full_retrain_running
    # The ranking settings it chooses from the events, published with each version.
    assert set(now.ranking_settings) == set(TUNED_SETTINGS)
    serving = suite.model_dir / "versions" / newer.removeprefix("two-tower-") / "serving.json"
    assert set(json.loads(serving.read_text())["ranking"]) == set(TUNED_SETTINGS)

    gateway = suite.stub().GetStatus(api.GetStatusRequest(), timeout=10)
    suite.wait_for_version(newer)
    gateway = suite.stub().GetStatus(api.GetStatusRequest(), timeout=10)
    assert gateway.live_version == newer
    assert gateway.trained_offset >= later.last_offset
    assert gateway.events_behind == 0
    assert 0 < gateway.newest_event_age_s < 300


def test_gate_rejects_a_candidate_trained_on_shuffled_items(
    suite: UserSuite, movies: list[str]
) -> None:
    live = status(suite).live_version
    assert live
    trainer(suite).TriggerRetrain(
        trainer_pb2.TriggerRetrainRequest(full=True, shuffle_labels=True), timeout=10
    )
    deadline = time.monotonic() + 180
    while True:
        now = status(suite)
        if not now.full_retrain_running and "full retrain" in now.last_gate_decision:
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    assert now.last_gate_decision.startswith("rejected"), now.last_gate_decision
    assert now.live_version == live
    assert recommend(suite, "u0").model_version == live


def test_a_second_full_retrain_while_one_runs_is_refused(suite: UserSuite) -> None:
    stub = trainer(suite)
    stub.TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        stub.TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    deadline = time.monotonic() + 180
    while status(suite).full_retrain_running:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_rollback_serves_the_previous_version_at_once(suite: UserSuite, movies: list[str]) -> None:
    reply = log(suite, *ratings(movies, 900, 200))
    wait_trained(suite, reply.last_offset, timeout_s=120)
    before = status(suite)
    assert before.previous_version, before
    started = time.monotonic()
    answer = trainer(suite).Rollback(trainer_pb2.RollbackRequest(), timeout=30)
    assert answer.live_version == before.previous_version
    assert answer.rolled_back_from == before.live_version
    assert (
        suite.wait_for_version(answer.live_version, timeout_s=5).model_version
        == answer.live_version
    )
    assert time.monotonic() - started < 5
    after = status(suite)
    assert after.live_version == before.previous_version
    assert after.last_gate_decision.startswith("rolled back")
    assert after.state == "paused" and not after.previous_version

    # Paused: new events are learned, not published, until the operator asks again.
    more = log(suite, *ratings(movies, 1100, 150))
    time.sleep(4)
    assert status(suite).live_version == answer.live_version
    trainer(suite).TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=False), timeout=10)
    resumed = wait_trained(suite, more.last_offset, timeout_s=120)
    assert resumed != answer.live_version and status(suite).state != "paused"


def test_bad_requests_get_invalid_argument(suite: UserSuite) -> None:
    stub = trainer(suite)
    with pytest.raises(grpc.RpcError) as raised:
        stub.WaitUntilTrained(
            trainer_pb2.WaitUntilTrainedRequest(offset=-1, timeout_s=1), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:
        stub.TriggerRetrain(trainer_pb2.TriggerRetrainRequest(shuffle_labels=True), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    missed = stub.WaitUntilTrained(
        trainer_pb2.WaitUntilTrainedRequest(offset=10**9, timeout_s=0.2), timeout=10
    )
    assert not missed.reached


@pytest.mark.timeout(900)  # three restarts of Ray and the trainer, then a publish
def test_trainer_killed_at_random_moments_learns_every_event_exactly_once(
    suite: UserSuite, movies: list[str]
) -> None:
    process = RUNNING["trainer"]
    trainer(suite).TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=False), timeout=10)
    stop = threading.Event()
    offsets: list[int] = []

    def ingest() -> None:  # steady traffic while the trainer dies and comes back
        n = 2_000
        while not stop.wait(0.3):
            offsets.append(log(suite, *ratings(movies, n, 40)).last_offset)
            n += 40

    feeder = threading.Thread(target=ingest)
    feeder.start()
    rng = random.Random(5)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.0, 8.0))
            process.kill()
            process.start()
    finally:
        stop.set()
        feeder.join()
    final = max(offsets)
    wait_trained(suite, final)
    now = status(suite)
    assert now.trained_offset == final
    assert now.events_learned == final, "an event was skipped or learned twice"
    assert now.learned_offset_sum == final * (final + 1) // 2


# Last: it deletes events, after which no count of events learned can equal the offsets.
FORGOTTEN = "forgotten-user-7f3a"


def wait_no_full_retrain(suite: UserSuite, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while status(suite).full_retrain_running:
        assert time.monotonic() < deadline
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_a_forgotten_user_leaves_the_model_everywhere_and_a_restart_brings_it_back_nowhere(
    suite: UserSuite, movies: list[str]
) -> None:
    data = Path(suite.env["RECSYS_DATA_DIR"])
    films = movies[:GROUP_FILMS]
    mine = [rate(f"fg{n}", FORGOTTEN, films[n % GROUP_FILMS], T0 + 3000 + n) for n in range(40)]
    version = wait_trained(suite, log(suite, *mine).last_offset)
    known = suite.wait_for_version(version, user=FORGOTTEN)
    assert known.model_version == version and not known.fallback
    assert files_holding(data, FORGOTTEN), "the user should be on disk before the forget"
    wait_no_full_retrain(suite)
    # A full retrain under way when the forget arrives may have read the user's events.
    trainer(suite).TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)

    reply = suite.stub().ForgetUser(api.ForgetUserRequest(user_id=FORGOTTEN), timeout=120)

    assert reply.events_deleted == len(mine)
    assert reply.trainer_updated and reply.model_knew_user
    assert reply.replay_samples_deleted > 0
    assert reply.model_versions_rewritten >= 1 and reply.checkpoints_rewritten >= 1
    # The very next request: a new user, though the serving version has a row for the id.
    assert recommend(suite, FORGOTTEN).fallback
    assert files_holding(data, FORGOTTEN) == []

    wait_no_full_retrain(suite)  # adopted or rejected: either way without the user
    later = log(suite, *ratings(movies, 1300, 150))
    wait_trained(suite, later.last_offset, timeout_s=120)
    assert files_holding(data, FORGOTTEN) == []

    # SIGTERM during a full retrain is a clean stop; the restart resumes from checkpoints
    # that no longer hold the user.
    process = RUNNING["trainer"]
    trainer(suite).TriggerRetrain(trainer_pb2.TriggerRetrainRequest(full=True), timeout=10)
    time.sleep(1.0)
    assert process.stop() == 0
    process.start()
    assert files_holding(data, FORGOTTEN) == []
    assert recommend(suite, FORGOTTEN).fallback

    # The same id again is a new user, learned from its new events only.
    back = log(suite, rate("fg-back", FORGOTTEN, films[0], T0 + 5000))
    assert not recommend(suite, FORGOTTEN).fallback  # its new history, at once
    wait_trained(suite, back.last_offset, timeout_s=120)
    assert len(files_holding(data, FORGOTTEN)) >= 1
