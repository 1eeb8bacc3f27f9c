"""The trained model through the whole suite: `recsys train` learns the event log and
publishes to Triton and retrieval; Recommend answers from it; a new version takes over
under load without a failed or mixed answer; a stalled Triton falls back to content."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.gateway.v1 import gateway_pb2 as api
from services.gateway.reasons import MODEL_REASON, NEW_ITEM_REASON
from services.trainer.export import export_repository
from shared.items import Item
from shared.model_store import ModelStore
from shared.triton_repository import read_config
from tests.e2e.harness import UserSuite, catalogue
from tests.e2e.test_events import T0, ids, log, rate, recommend

USERS = 40
CONTENT_MODEL = "content-profile"


def taste_groups(movies: list[str]) -> list[api.Event]:
    """Two taste groups over disjoint halves of the catalogue, in time order."""
    rng = random.Random(7)
    half = len(movies) // 2
    events = []
    for n in range(USERS * 15):
        user = n % USERS
        pool = movies[:half] if user % 2 == 0 else movies[half:]
        item = pool[rng.randrange(40)]  # each group rates a small head of its half
        events.append(rate(f"m{n}", f"u{user}", item, T0 + n, value=float(rng.choice((3, 4, 5)))))
    return events


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSuite]:
    running = UserSuite(tmp_path_factory.mktemp("model")).start()
    movies = catalogue()
    client = running.client()
    for start in range(0, len(movies), 256):
        client.upsert(movies[start : start + 256])
    events = taste_groups([m.item_id for m in movies])
    for start in range(0, len(events), 500):
        log(running, *events[start : start + 500])
    yield running
    assert running.terminate() == 0


def test_recommend_answers_from_the_published_model(suite: UserSuite) -> None:
    assert recommend(suite, "u0").model_version == CONTENT_MODEL
    output = suite.train()
    assert "published version 1" in output

    reply = suite.wait_for_version("two-tower-1")
    assert reply.model_version == "two-tower-1" and not reply.fallback
    assert len(reply.items) == 10
    events = taste_groups([m.item_id for m in catalogue()])
    rated = {e.item_id for e in events if e.user_id == "u0"}
    assert not rated & set(ids(reply)), "items the user rated are never recommended"
    # One place in ten is kept for the items the version has not learned (nobody rated).
    learned = {e.item_id for e in events}
    assert ids(reply)[-1] not in learned and set(ids(reply)[:9]) <= learned
    explained = recommend(suite, "u0", explain=True)
    for item in explained.items[:9]:  # the model's, or others who rated a film of u0's too
        (reason,) = item.reasons
        assert reason == MODEL_REASON or reason.startswith("people who rated "), reason
    assert list(explained.items[9].reasons) == [NEW_ITEM_REASON]


def test_a_new_item_is_recommendable_by_the_model_at_once(suite: UserSuite) -> None:
    suite.wait_for_version("two-tower-1")
    fresh = Item("brand-new", title="A brand new film nobody has rated", categories=("Fresh",))
    suite.client().upsert([fresh])
    reply = recommend(suite, "u0", filter=api.Filter(include_categories=["Fresh"]))
    assert reply.model_version == "two-tower-1"
    assert ids(reply) == ["brand-new"]


def test_an_upsert_larger_than_a_tower_batch_reaches_the_model_whole(suite: UserSuite) -> None:
    suite.wait_for_version("two-tower-1")
    batch = [
        Item(f"bulk-{n}", title=f"Bulk film number {n}", categories=("Bulk",)) for n in range(300)
    ]
    assert suite.client().upsert(batch) == 300  # the item tower takes 256 rows a request
    reply = recommend(suite, "u0", k=1000, filter=api.Filter(include_categories=["Bulk"]))
    assert reply.model_version == "two-tower-1"
    assert sorted(ids(reply)) == sorted(item.item_id for item in batch)


def test_a_new_event_changes_the_answer_without_retraining(suite: UserSuite) -> None:
    before = suite.wait_for_version("two-tower-1", user="newcomer")
    assert before.fallback  # nothing known about this user yet: popular items
    log(suite, rate("newcomer-1", "newcomer", catalogue()[0].item_id, T0 + 10_000))
    after = recommend(suite, "newcomer")
    assert after.model_version == "two-tower-1" and not after.fallback
    assert ids(after) != ids(before)


def test_a_switch_under_load_fails_nothing_and_mixes_no_versions(suite: UserSuite) -> None:
    suite.wait_for_version("two-tower-1")
    answers: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    scores: dict[str, list[list[float]]] = defaultdict(list)
    failures: list[str] = []
    stop = threading.Event()

    def keep_asking(user: str) -> None:
        stub = suite.stub()
        while not stop.is_set():
            try:
                reply = stub.Recommend(api.RecommendRequest(user_id=user, k=10), timeout=10)
            except Exception as error:
                failures.append(repr(error))
                continue
            key = f"{user}/{reply.model_version}"
            answers[key].add(tuple(i.item_id for i in reply.items))
            scores[key].append([i.score for i in reply.items])

    callers = [threading.Thread(target=keep_asking, args=(u,)) for u in ("u2", "u3", "u2")]
    for caller in callers:
        caller.start()
    try:
        assert "published version 2" in suite.train()
        suite.wait_for_version("two-tower-2")
        time.sleep(3)  # past the grace period: version 1 is retired under load too
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
    assert not failures
    versions = {key.split("/")[1] for key in answers}
    assert versions == {"two-tower-1", "two-tower-2"}
    # A user's history did not change, so every answer of one version is the same list with
    # the same scores; a user vector of one version searched in the other's index is not.
    # (Scores may differ in float rounding: the popularity term is a ratio of decayed counts.)
    for key, distinct in answers.items():
        assert len(distinct) == 1, f"{key} answered {len(distinct)} different ways"
        first = scores[key][0]
        assert all(s == pytest.approx(first, abs=1e-3) for s in scores[key]), key
    assert recommend(suite, "u2").model_version == "two-tower-2"


def test_a_stalled_triton_falls_back_to_the_content_profile(suite: UserSuite) -> None:
    version = recommend(suite, "u0").model_version
    assert version.startswith("two-tower-")
    triton = suite.service_pid("embedding")
    os.kill(triton, signal.SIGSTOP)
    try:
        # u0 did nothing since: the gateway still holds the vector the tower gave it.
        known = recommend(suite, "u0")
        started = time.monotonic()
        reply = recommend(suite, "u7")  # never asked about: only the tower could answer
        took = time.monotonic() - started
    finally:
        os.kill(triton, signal.SIGCONT)
    assert known.model_version == version and not known.fallback
    assert reply.fallback and reply.model_version == CONTENT_MODEL
    assert len(reply.items) == 10
    assert took < 2.0
    assert suite.wait_for_version(version).model_version == version


def test_the_live_version_exports_for_tritons_pytorch_backend(
    suite: UserSuite, tmp_path: Path
) -> None:
    suite.wait_for_version("two-tower-1")
    store = ModelStore(suite.model_dir)
    version = export_repository(store, tmp_path / "production")
    assert version == store.live().version  # type: ignore[union-attr]
    for tower in ("user_tower", "item_tower"):
        config = read_config(tmp_path / "production" / tower / "config.pbtxt")
        assert config.platform == "pytorch_libtorch"
        assert list(config.version_policy.specific.versions) == [version]
        assert (tmp_path / "production" / tower / str(version) / "model.pt").stat().st_size > 0
