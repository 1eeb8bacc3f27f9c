"""Users and events through the public API of the whole suite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.gateway.v1 import gateway_pb2 as api
from tests.e2e.harness import JUMANJI, TOY_STORY, TOY_STORY_2, UserSuite, catalogue, files_holding

GODFATHER = "858"
T0 = 1_600_000_000


def rate(event_id: str, user: str, item: str, ts: int, value: float = 5.0) -> api.Event:
    return api.Event(
        event_id=event_id,
        user_id=user,
        item_id=item,
        type=api.EVENT_TYPE_RATE,
        value=value,
        timestamp=Timestamp(seconds=ts),
    )


def log(suite: UserSuite, *events: api.Event) -> api.LogEventsResponse:
    return suite.stub().LogEvents(api.LogEventsRequest(events=list(events)), timeout=10)


def recommend(suite: UserSuite, user: str, k: int = 10, **options: object) -> api.RecommendResponse:
    return suite.stub().Recommend(api.RecommendRequest(user_id=user, k=k, **options), timeout=10)


def ids(reply: api.RecommendResponse) -> list[str]:
    return [i.item_id for i in reply.items]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSuite]:
    # The items users act on together count here (they are off by default).
    together = {"RECSYS_GATEWAY_CO_OCCURRENCE_WEIGHT": "1.0"}
    running = UserSuite(tmp_path_factory.mktemp("events"), env=together).start()
    movies = catalogue() + [m for m in catalogue(extra={GODFATHER}) if m.item_id == GODFATHER]
    client = running.client()
    for start in range(0, len(movies), 256):
        client.upsert(movies[start : start + 256])
    yield running
    assert running.terminate() == 0


def test_retried_events_are_counted_as_duplicates_and_stored_once(suite: UserSuite) -> None:
    first = log(suite, rate("idem-1", "idem", TOY_STORY, T0), rate("idem-2", "idem", JUMANJI, T0))
    retry = log(suite, rate("idem-2", "idem", JUMANJI, T0), rate("idem-3", "idem", "10", T0))
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (retry.accepted, retry.duplicates) == (1, 1)
    assert retry.last_offset > first.last_offset
    assert (
        suite.stub().ForgetUser(api.ForgetUserRequest(user_id="idem"), timeout=10).events_deleted
        == 3
    )


def test_a_new_event_changes_the_next_recommendation(suite: UserSuite) -> None:
    log(suite, rate("fresh-1", "fresh", TOY_STORY, T0))
    before = recommend(suite, "fresh", explain=True)
    assert not before.fallback and TOY_STORY_2 in ids(before)[:3]
    (reason,) = before.items[0].reasons  # its content, or others who rated it too
    assert reason in (
        "because you rated Toy Story (1995)",
        "people who rated Toy Story (1995) also chose this",
    )
    log(suite, rate("fresh-2", "fresh", GODFATHER, T0 + 60 * 86400))
    after = recommend(suite, "fresh", explain=True)
    assert ids(after) != ids(before)
    assert any("Godfather" in reason for item in after.items for reason in item.reasons)


def test_what_others_did_next_is_recommended_at_once_and_named(suite: UserSuite) -> None:
    godfather_fans = [f"mob-{n}" for n in range(3)]
    for n, fan in enumerate(godfather_fans):  # each went from Jumanji to The Godfather
        log(suite, rate(f"{fan}-1", fan, JUMANJI, T0 + n), rate(f"{fan}-2", fan, GODFATHER, T0 + n))
    log(suite, rate("next-1", "next", JUMANJI, T0 + 10))
    reply = recommend(suite, "next", k=3, explain=True)
    assert GODFATHER in ids(reply)
    (reason,) = reply.items[ids(reply).index(GODFATHER)].reasons
    assert reason == "people who rated Jumanji (1995) also chose this"
    suite.stub().ForgetUser(api.ForgetUserRequest(user_id="next"), timeout=10)
    for fan in godfather_fans:
        suite.stub().ForgetUser(api.ForgetUserRequest(user_id=fan), timeout=10)
    log(suite, rate("next-2", "next", JUMANJI, T0 + 11))
    again = recommend(suite, "next", k=3, explain=True)
    assert all("people who" not in r for item in again.items for r in item.reasons)


def test_unknown_user_gets_trending_items_as_fallback(suite: UserSuite) -> None:
    latest = T0 + 365 * 86400  # later than any other test's events: trending runs on event time
    for n in range(3):
        log(suite, rate(f"pop-{n}", f"fan-{n}", JUMANJI, latest + n))
    reply = recommend(suite, "nobody-knows-me", k=5, explain=True)
    assert reply.fallback and reply.model_version == "content-profile"
    assert ids(reply)[0] == JUMANJI
    assert reply.items[0].reasons == ["popular right now"]


def test_seen_items_are_left_out_unless_asked_for(suite: UserSuite) -> None:
    log(suite, rate("seen-1", "seen", TOY_STORY, T0), rate("seen-2", "seen", TOY_STORY_2, T0))
    assert not {TOY_STORY, TOY_STORY_2} & set(ids(recommend(suite, "seen", k=20)))
    assert TOY_STORY_2 in ids(recommend(suite, "seen", k=20, include_seen=True))


def test_events_for_unknown_items_are_kept_and_do_not_break_recommendations(
    suite: UserSuite,
) -> None:
    reply = log(suite, rate("ghost-1", "ghost", "not-in-catalogue", T0))
    assert reply.accepted == 1
    assert recommend(suite, "ghost", k=5).items
    log(suite, rate("ghost-2", "ghost", TOY_STORY, T0 + 1))
    assert TOY_STORY_2 in ids(recommend(suite, "ghost", k=5))


def test_forget_user_removes_their_events_and_history(suite: UserSuite) -> None:
    gone = "gone-user-5e1"
    log(suite, rate("gone-1", gone, TOY_STORY, T0), rate("gone-2", gone, JUMANJI, T0))
    assert not recommend(suite, gone).fallback
    features = Path(suite.env["RECSYS_DATA_DIR"]) / "features"
    assert files_holding(features, gone)
    reply = suite.stub().ForgetUser(api.ForgetUserRequest(user_id=gone), timeout=10)
    assert reply.events_deleted == 2
    assert not reply.trainer_updated  # this suite runs without the continual trainer
    assert recommend(suite, gone).fallback
    assert gone not in {e.user_id for e in suite.logged_events()}
    # Not left readable in free pages or in the WAL either.
    assert files_holding(features, gone) == []


def test_stream_events_acknowledges_every_event(suite: UserSuite) -> None:
    events = [
        rate(f"stream-{n}", f"streamer-{n % 7}", str(n % 50 + 1), T0 + n) for n in range(2500)
    ]
    reply = suite.stub().StreamEvents(iter(events), timeout=30)
    assert (reply.accepted, reply.duplicates) == (2500, 0)


def bad_event(**fields: object) -> api.Event:
    valid: dict[str, object] = {
        "event_id": "b",
        "user_id": "u",
        "item_id": "1",
        "type": api.EVENT_TYPE_VIEW,
    }
    return api.Event(**{**valid, **fields})


BAD_EVENTS = [
    (bad_event(user_id=""), "events[1].user_id"),
    (bad_event(item_id=""), "events[1].item_id"),
    (bad_event(event_id=""), "events[1].event_id"),
    (bad_event(type=api.EVENT_TYPE_UNSPECIFIED), "events[1].type"),
    (bad_event(type=42), "events[1].type"),
    (bad_event(type=api.EVENT_TYPE_RATE, value=float("nan")), "events[1].value"),
    (bad_event(type=api.EVENT_TYPE_RATE, value=float("inf")), "events[1].value"),
    (bad_event(timestamp=Timestamp(seconds=4_000_000_000)), "events[1].timestamp"),
    (bad_event(timestamp=Timestamp(seconds=T0, nanos=-5)), "events[1].timestamp.nanos"),
    (bad_event(timestamp=Timestamp(seconds=T0, nanos=2_000_000_000)), "events[1].timestamp.nanos"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_EVENTS)
def test_a_bad_event_rejects_its_whole_batch_naming_the_field(
    suite: UserSuite, bad: api.Event, field: str
) -> None:
    good = rate("would-be-written", "rejected-user", TOY_STORY, T0)
    with pytest.raises(grpc.RpcError) as error:
        log(suite, good, bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(f"{field}: ")
    assert "would-be-written" not in {e.event_id for e in suite.logged_events()}


@pytest.mark.parametrize(("bad", "field"), BAD_EVENTS[-2:])
def test_a_bad_timestamp_mid_stream_says_how_many_events_were_written(
    suite: UserSuite, bad: api.Event, field: str
) -> None:
    tag = field.rsplit(".", 1)[-1] + str(bad.timestamp.nanos)
    events = [rate(f"partial-{tag}-{n}", "partial", TOY_STORY, T0 + n) for n in range(1500)]
    with pytest.raises(grpc.RpcError) as error:
        suite.stub().StreamEvents(iter([*events, bad]), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    assert details.startswith("events[1500].timestamp.nanos: ")
    assert "the stream's first 1000 events were written" in details
    assert "resume from events[1000]" in details
    trailing = dict(error.value.trailing_metadata())
    assert trailing["recsys-events-written"] == "1000"
    stored = {e.event_id for e in suite.logged_events()}
    assert {e.event_id for e in events[:1000]} <= stored
    assert not {e.event_id for e in events[1000:]} & stored
    assert int(trailing["recsys-last-offset"]) > 0


def test_oversized_batch_is_invalid_argument(suite: UserSuite) -> None:
    events = [rate(f"big-{n}", "big", TOY_STORY, T0) for n in range(10_001)]
    with pytest.raises(grpc.RpcError) as error:
        log(suite, *events)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("events: ")


def test_recommend_rejects_bad_k_and_empty_user(suite: UserSuite) -> None:
    for request, field in [
        (api.RecommendRequest(user_id="", k=5), "user_id"),
        (api.RecommendRequest(user_id="u", k=0), "k"),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            suite.stub().Recommend(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(f"{field}: ")


def test_sigkill_of_features_mid_stream_loses_no_acknowledged_event_and_stores_none_twice(
    tmp_path: Path,
) -> None:
    batches = [
        [rate(f"k{b}-{n}", f"user-{n % 13}", str(n % 90 + 1), T0 + b) for n in range(100)]
        for b in range(60)
    ]
    first = UserSuite(tmp_path).start()
    acknowledged: set[str] = set()
    killed = threading.Event()

    def produce() -> None:
        for batch in batches:
            try:
                log(first, *batch)
            except grpc.RpcError:
                return
            acknowledged.update(e.event_id for e in batch)
            if len(acknowledged) >= 1500 and not killed.is_set():
                killed.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert killed.wait(60)
    first.kill_service("features")
    producer.join(60)
    second = UserSuite(tmp_path).start()
    try:
        stored_before_retry = [e.event_id for e in second.logged_events()]
        assert acknowledged <= set(stored_before_retry)
        for batch in batches:  # the producer retries everything it sent
            log(second, *batch)
        stored = [e.event_id for e in second.logged_events()]
        assert len(stored) == len(set(stored)) == 6000
    finally:
        second.stop()
