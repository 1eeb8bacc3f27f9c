"""The features service as a real process with the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.features.v1 import features_pb2, features_pb2_grpc
from recsys.gateway.v1 import gateway_pb2
from shared.convert import timestamp_seconds
from tests.conftest import ServiceProcess

MOVIES = [
    gateway_pb2.Item(item_id="1", title="Toy Story (1995)", categories=["Animation", "Children"]),
    gateway_pb2.Item(item_id="2", title="Toy Story 2 (1999)", categories=["Animation", "Children"]),
    gateway_pb2.Item(item_id="3", title="The Godfather (1972)", categories=["Crime", "Drama"]),
]


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = ServiceProcess("features", tmp_path_factory.mktemp("features")).start()
    yield service
    service.stop()


def stub_of(service: ServiceProcess) -> features_pb2_grpc.FeaturesServiceStub:
    return features_pb2_grpc.FeaturesServiceStub(service.channel())


def upsert(
    service: ServiceProcess, items: list[gateway_pb2.Item]
) -> features_pb2.UpsertItemsResponse:
    return stub_of(service).UpsertItems(features_pb2.UpsertItemsRequest(items=items), timeout=60)


def test_upsert_returns_unit_vectors_that_place_sequels_together(features: ServiceProcess) -> None:
    reply = upsert(features, MOVIES)
    vectors = {v.item_id: np.asarray(v.vector) for v in reply.vectors}
    assert reply.upserted == 3 and reply.encoder == "all-MiniLM-L6-v2"
    assert all(v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors.values())
    assert vectors["1"] @ vectors["2"] > vectors["1"] @ vectors["3"]


def test_unchanged_text_reuses_the_stored_encoding(features: ServiceProcess) -> None:
    upsert(features, MOVIES)
    changed = gateway_pb2.Item(item_id="3", title="The Godfather Part II (1974)")
    reply = upsert(features, [MOVIES[0], changed])
    assert reply.reused_encodings == 1


def test_batch_with_one_bad_item_is_rejected_whole(features: ServiceProcess) -> None:
    batch = [
        gateway_pb2.Item(item_id="new-ok", title="fine"),
        gateway_pb2.Item(item_id="", title="x"),
    ]
    with pytest.raises(grpc.RpcError) as error:
        upsert(features, batch)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("items[1].item_id")
    found = stub_of(features).GetItems(
        features_pb2.GetItemsRequest(item_ids=["new-ok"], allow_missing=True), timeout=5
    )
    assert list(found.missing_item_ids) == ["new-ok"]


def test_catalogue_and_encodings_survive_sigkill(tmp_path: Path) -> None:
    service = ServiceProcess("features", tmp_path).start()
    upsert(service, MOVIES)
    service.kill()
    restarted = ServiceProcess("features", tmp_path).start()
    try:
        found = stub_of(restarted).GetItems(
            features_pb2.GetItemsRequest(item_ids=["3", "1"]), timeout=5
        )
        assert [i.title for i in found.items] == ["The Godfather (1972)", "Toy Story (1995)"]
        assert upsert(restarted, MOVIES).reused_encodings == 3
    finally:
        restarted.stop()


def test_read_events_returns_when_the_log_appended_each_event(features: ServiceProcess) -> None:
    stub = stub_of(features)
    happened = Timestamp(seconds=1_600_000_000)
    before = time.time()
    appended = stub.AppendEvents(
        features_pb2.AppendEventsRequest(
            events=[
                gateway_pb2.Event(
                    event_id="appended-at-1",
                    user_id="u",
                    item_id="1",
                    type=gateway_pb2.EVENT_TYPE_VIEW,
                    timestamp=happened,
                )
            ]
        ),
        timeout=10,
    )
    after = time.time()
    reply = stub.ReadEvents(
        features_pb2.ReadEventsRequest(from_offset=appended.last_offset, limit=1), timeout=10
    )
    (logged,) = reply.events
    assert logged.event.event_id == "appended-at-1" and logged.event.timestamp == happened
    assert before - 0.01 <= timestamp_seconds(logged.appended_at) <= after + 0.01


def test_ranking_inputs_send_the_trending_list_again_only_once_it_changed(
    features: ServiceProcess,
) -> None:
    stub = stub_of(features)
    upsert(features, MOVIES)

    def inputs(known_version: str = "") -> features_pb2.GetRankingInputsResponse:
        return stub.GetRankingInputs(
            features_pb2.GetRankingInputsRequest(
                history=features_pb2.GetUserHistoryRequest(
                    user_id="cached", limit=10, include_seen_item_ids=True
                ),
                trending=features_pb2.GetTrendingRequest(k=2, known_version=known_version),
            ),
            timeout=10,
        )

    first = inputs()
    assert len(first.trending.items) == 2 and not first.trending.unchanged
    again = inputs(first.trending.version)
    assert again.trending.unchanged and not again.trending.items
    assert again.trending.version == first.trending.version
    event = gateway_pb2.Event(
        event_id="cached-1", user_id="cached", item_id="3", type=gateway_pb2.EVENT_TYPE_PURCHASE
    )
    stub.AppendEvents(features_pb2.AppendEventsRequest(events=[event]), timeout=10)
    after = inputs(first.trending.version)
    assert not after.trending.unchanged and after.trending.version != first.trending.version
    assert after.trending.items[0].item_id == "3"
    assert [i.item_id for i in after.history.recent] == ["3"]
    assert list(after.history.seen_item_ids) == ["3"]


def test_trending_ranks_by_the_half_life_asked_for(features: ServiceProcess) -> None:
    stub = stub_of(features)
    westerns = gateway_pb2.Filter(include_categories=["Western"])
    upsert(
        features,
        [
            gateway_pb2.Item(item_id=i, title=title, categories=["Western"])
            for i, title in (("10", "Rio Bravo (1959)"), ("11", "True Grit (2010)"))
        ],
    )
    day, now = 86_400.0, time.time()

    def viewed(n: int, item: str, days_ago: float) -> gateway_pb2.Event:
        at = Timestamp()
        at.FromNanoseconds(int((now - days_ago * day) * 1e9))
        return gateway_pb2.Event(
            event_id=f"western-{n}",
            user_id=f"rider-{n}",
            item_id=item,
            type=gateway_pb2.EVENT_TYPE_VIEW,
            timestamp=at,
        )

    events = [viewed(n, "10", 300) for n in range(5)] + [viewed(9, "11", 0), viewed(8, "11", 0)]
    stub.AppendEvents(features_pb2.AppendEventsRequest(events=events), timeout=10)

    def trending(half_life_s: float) -> features_pb2.GetTrendingResponse:
        request = features_pb2.GetTrendingRequest(k=2, filter=westerns, half_life_s=half_life_s)
        return stub.GetTrending(request, timeout=10)

    default, days, years = trending(0.0), trending(2 * day), trending(400 * day)
    assert [i.item_id for i in default.items] == ["11", "10"] and default.half_life_s == 7 * day
    assert [i.item_id for i in days.items] == ["11", "10"] and days.half_life_s == day
    assert [i.item_id for i in years.items] == ["10", "11"] and years.half_life_s == 365 * day
    with pytest.raises(grpc.RpcError) as refused:
        trending(-1.0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_history_is_sent_again_only_once_it_changed_and_never_to_another_process(
    features: ServiceProcess, tmp_path: Path
) -> None:
    stub = stub_of(features)
    upsert(features, MOVIES)

    def history(
        known_version: str = "", stub: features_pb2_grpc.FeaturesServiceStub = stub
    ) -> features_pb2.GetUserHistoryResponse:
        return stub.GetUserHistory(
            features_pb2.GetUserHistoryRequest(
                user_id="versioned",
                limit=10,
                include_seen_item_ids=True,
                known_version=known_version,
            ),
            timeout=10,
        )

    def append(event_id: str, item_id: str) -> None:
        event = gateway_pb2.Event(
            event_id=event_id,
            user_id="versioned",
            item_id=item_id,
            type=gateway_pb2.EVENT_TYPE_VIEW,
        )
        stub.AppendEvents(features_pb2.AppendEventsRequest(events=[event]), timeout=10)

    append("versioned-1", "1")
    first = history()
    assert [i.item_id for i in first.recent] == ["1"] and first.version and not first.unchanged
    again = history(first.version)
    assert again.unchanged and again.version == first.version
    assert not again.recent and not again.seen_item_ids

    append("versioned-2", "2")
    after = history(first.version)
    assert not after.unchanged and after.version != first.version
    assert [i.item_id for i in after.recent] == ["2", "1"]
    stub.ForgetUser(features_pb2.ForgetUserRequest(user_id="versioned"), timeout=10)
    gone = history(after.version)
    assert not gone.unchanged and not gone.recent

    # Another features process (a restart, or a replica) never takes a version for its own.
    other = ServiceProcess("features", tmp_path).start()
    try:
        elsewhere = stub_of(other)
        assert not history(gone.version, elsewhere).unchanged
    finally:
        other.stop()


def test_related_items_follow_each_event_leave_with_a_forgotten_user_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    service = ServiceProcess("features", tmp_path).start()
    try:
        upsert(service, MOVIES)
        stub = stub_of(service)

        def log(user: str, *items: str) -> None:
            events = [
                gateway_pb2.Event(
                    event_id=f"{user}-{item}",
                    user_id=user,
                    item_id=item,
                    type=gateway_pb2.EVENT_TYPE_VIEW,
                    timestamp=timestamp(n),
                )
                for n, item in enumerate(items)
            ]
            stub.AppendEvents(features_pb2.AppendEventsRequest(events=events), timeout=10)

        def related(user: str) -> list[tuple[str, str]]:
            reply = stub.GetRankingInputs(
                features_pb2.GetRankingInputsRequest(
                    history=features_pb2.GetUserHistoryRequest(
                        user_id=user, limit=10, include_seen_item_ids=True
                    ),
                    related=features_pb2.GetRelatedRequest(k=5, profile_half_life_s=86400.0),
                ),
                timeout=10,
            )
            assert not reply.HasField("trending")
            return [(r.item_id, r.because_item_id) for r in reply.related]

        log("fan", "1", "2")
        log("newcomer", "1")
        assert related("newcomer") == [("2", "1")]  # the next Recommend knows it
        only_crime = features_pb2.GetRelatedRequest(
            k=5,
            profile_half_life_s=86400.0,
            filter=gateway_pb2.Filter(include_categories=["Crime"]),
        )
        filtered = stub.GetRankingInputs(
            features_pb2.GetRankingInputsRequest(
                history=features_pb2.GetUserHistoryRequest(user_id="newcomer", limit=10),
                related=only_crime,
            ),
            timeout=10,
        )
        assert list(filtered.related) == []
        log("critic", "1", "3")
        service.terminate()
        service.start()
        stub = stub_of(service)
        assert sorted(related("newcomer")) == [("2", "1"), ("3", "1")]  # rebuilt from the log
        stub.ForgetUser(features_pb2.ForgetUserRequest(user_id="fan"), timeout=10)
        assert related("newcomer") == [("3", "1")]
    finally:
        service.stop()


def timestamp(n: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(1_600_000_000 + n)
    return stamp
