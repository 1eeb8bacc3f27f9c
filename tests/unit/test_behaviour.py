from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from services.features.behaviour import Behaviour
from services.features.event_log import SqliteEventLog
from services.features.trending import Trending
from shared.errors import InvalidArgument
from shared.events import Event, EventType, Interaction, validate_events
from shared.items import ItemFilter
from shared.profile import profile_weights

DAY = 24 * 3600.0


def event(n: int, user: str = "u", item: str = "i", ts: float = 1000.0) -> Event:
    return Event(f"e{n}", user, item, EventType.VIEW, 0.0, ts)


def test_event_log_counts_a_retried_event_as_duplicate_and_stores_it_once(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    first = log.append([[event(1), event(2)]])[0]
    retry = log.append([[event(2), event(3)]])[0]
    assert (first.accepted, first.duplicates, first.last_offset) == (2, 0, 2)
    assert (retry.accepted, retry.duplicates, retry.last_offset) == (1, 1, 3)
    assert [e.event.event_id for e in log.read(1, 10)] == ["e1", "e2", "e3"]


def test_event_log_offsets_keep_growing_after_a_user_is_forgotten(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    log.append([[event(1, user="a"), event(2, user="b")]])
    assert len(log.forget_user("b")) == 1
    assert log.end_offset() == 3
    assert log.append([[event(3, user="a")]])[0].last_offset == 3


def test_event_log_history_is_newest_first_by_event_time(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    log.append([[event(1, item="late", ts=50.0), event(2, item="early", ts=10.0)]])
    assert [i.item_id for i in log.history("u", 10)] == ["late", "early"]
    assert sorted(log.seen_items("u", 10)) == ["early", "late"]


def test_event_log_keeps_acknowledged_events_after_reopening(tmp_path: Path) -> None:
    SqliteEventLog(tmp_path / "events.sqlite3").append([[event(1), event(2)]])
    assert SqliteEventLog(tmp_path / "events.sqlite3").end_offset() == 3


def test_event_log_returns_when_each_event_was_appended_by_the_server_clock(
    tmp_path: Path,
) -> None:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    before = time.time()
    stored = log.append([[event(1, ts=5.0)]])[0].stored
    after = time.time()
    read = log.read(1, 10)
    assert before <= read[0].appended_at <= after
    assert stored[0].appended_at == read[0].appended_at
    assert read[0].event.timestamp == 5.0  # the event's own time is kept apart


def test_event_log_reads_append_time_as_unknown_when_written_before_the_column_existed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (log_offset INTEGER PRIMARY KEY AUTOINCREMENT,"
        " event_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, item_id TEXT NOT NULL,"
        " type INTEGER NOT NULL, value REAL NOT NULL, ts REAL NOT NULL);"
        "INSERT INTO events (event_id, user_id, item_id, type, value, ts)"
        " VALUES ('e1', 'u', 'i', 1, 0.0, 1000.0);"
    )
    old.commit()
    old.close()
    log = SqliteEventLog(path)
    log.append([[event(2)]])
    log.close()
    reopened = SqliteEventLog(path)
    first, second = reopened.read(1, 10)
    assert (first.event.event_id, first.appended_at) == ("e1", 0.0)
    assert second.event.event_id == "e2" and second.appended_at > 0


def test_trending_prefers_recent_interactions_in_event_time() -> None:
    trending = Trending(half_life_s=DAY)
    old = [event(n, item="old", ts=0.0) for n in range(4)]
    new = [event(10 + n, item="new", ts=3 * DAY) for n in range(2)]
    trending.add(old + new)
    ranked = trending.top(10)
    assert [i for i, _ in ranked] == ["new", "old"]
    assert ranked[0][1] == 1.0  # relative to the most popular item
    assert ranked[1][1] == pytest.approx(4 * 0.125 / 2)


def test_trending_answers_anew_once_an_event_arrives() -> None:
    trending = Trending(half_life_s=DAY)
    trending.add([event(1, item="a", ts=0.0)])
    assert [i for i, _ in trending.top(10)] == ["a"]
    trending.add([event(2, item="b", ts=DAY), event(3, item="b", ts=DAY)])
    assert [i for i, _ in trending.top(10)] == ["b", "a"]
    assert [i for i, _ in trending.top(1)] == ["b"]


def test_trending_forgets_exactly_what_was_removed() -> None:
    trending = Trending(half_life_s=DAY)
    keep, drop = event(1, item="a", ts=DAY), event(2, item="b", ts=0.0)
    trending.add([keep, drop])
    trending.remove([drop])
    assert trending.top(10) == [("a", pytest.approx(1.0))]


def test_trending_keeps_ranking_items_whose_events_are_years_apart() -> None:
    trending = Trending(half_life_s=DAY)
    trending.add([event(1, item="old", ts=0.0), event(2, item="older", ts=-DAY)])
    trending.add([event(3, item="new", ts=20 * 365 * DAY)])  # 7,300 half-lives later
    assert [i for i, _ in trending.top(10)] == ["new", "old", "older"]


def test_trending_ranks_by_each_half_life_it_keeps() -> None:
    trending = Trending(half_life_s=DAY, half_lives_s=(365 * DAY, 30 * DAY))
    assert trending.half_lives_s == (DAY, 30 * DAY, 365 * DAY)
    classic = [event(n, item="classic", ts=0.0) for n in range(6)]
    hit = [event(10 + n, item="hit", ts=10 * DAY) for n in range(2)]
    trending.add(classic + hit)
    assert [i for i, _ in trending.top(10)] == ["hit", "classic"]  # the default: a day
    assert [i for i, _ in trending.top(10, 365 * DAY)] == ["classic", "hit"]
    assert trending.kept(200 * DAY) == 365 * DAY  # the nearest on a log scale
    assert trending.kept(2 * DAY) == DAY and trending.kept(0.0) == DAY
    trending.remove(classic[:5])
    assert [i for i, _ in trending.top(10, 365 * DAY)] == ["hit", "classic"]


def test_new_user_gets_k_items_when_the_newest_events_were_forgotten(tmp_path: Path) -> None:
    catalogue = {f"m{n}": ("film",) for n in range(20)}
    behaviour = Behaviour(SqliteEventLog(tmp_path / "events.sqlite3"), Trending(DAY), catalogue)
    years_ago = [Event(f"e{n}", "old-user", f"m{n}", EventType.VIEW, 0.0, 0.0) for n in range(3)]
    behaviour.append([years_ago, [Event("x", "gone", "m5", EventType.VIEW, 0.0, 3000 * DAY)]])
    behaviour.forget("gone")
    found = behaviour.trending_items(10, ItemFilter.build([], [], []), [])
    assert len(found) == 10
    assert [i for i, _ in found[:3]] == ["m0", "m1", "m2"]
    assert found[0][1] == 1.0 and all(score == 0.0 for _, score in found[3:])


def test_profile_weighs_recent_and_stronger_interactions_more() -> None:
    recent = [
        Interaction("bought", EventType.PURCHASE, 0.0, 10 * DAY),
        Interaction("viewed", EventType.VIEW, 0.0, 10 * DAY),
        Interaction("old", EventType.PURCHASE, 0.0, 3 * DAY),
    ]
    weights = dict(profile_weights(recent, half_life_s=7 * DAY))
    assert weights["bought"] == pytest.approx(4.0)
    assert weights["viewed"] == pytest.approx(1.0)
    assert weights["old"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (Event("", "u", "i", EventType.VIEW, 0.0, 1.0), "events[1].event_id"),
        (Event("e", "u", "", EventType.VIEW, 0.0, 1.0), "events[1].item_id"),
        (Event("e", "u", "i", EventType.RATE, float("inf"), 1.0), "events[1].value"),
        (Event("e", "u", "i", EventType.VIEW, 0.0, 4e9), "events[1].timestamp"),
    ],
)
def test_validate_events_names_the_position_of_a_bad_event(bad: Event, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_events([event(1), bad])
    assert error.value.field == field
