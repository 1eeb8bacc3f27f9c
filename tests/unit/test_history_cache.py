"""Histories features keeps in memory answer exactly what the log would."""

from __future__ import annotations

from pathlib import Path

from services.features.behaviour import Behaviour, HistoryCache
from services.features.event_log import SqliteEventLog
from services.features.trending import Trending
from shared.events import Event, EventType

DAY = 24 * 3600.0


def event(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, EventType.VIEW, 0.0, 1000.0 + n)


def behaviour(tmp_path: Path, capacity: int = 100) -> Behaviour:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    return Behaviour(log, Trending(DAY), {}, history_cache_ids=capacity)


def items(b: Behaviour, user: str) -> list[str]:
    return [i.item_id for i in b.history(user, 10, include_seen=True).recent]


def test_a_repeated_read_is_answered_from_memory(tmp_path: Path) -> None:
    b = behaviour(tmp_path)
    b.append([[event(1, "u", "a")]])
    first = b.history("u", 10, include_seen=True)
    assert b.cached_history("u", 10, include_seen=True) is first
    assert b.history("u", 10, include_seen=True) is first
    assert b.cached_history("u", 5, include_seen=True) is None  # another query, not yet read


def test_an_append_shows_in_the_users_next_read(tmp_path: Path) -> None:
    b = behaviour(tmp_path)
    b.append([[event(1, "u", "a"), event(2, "v", "x")]])
    assert items(b, "u") == ["a"] and items(b, "v") == ["x"]
    b.append([[event(3, "u", "b")]])
    assert items(b, "u") == ["b", "a"]
    assert b.history("u", 10, include_seen=True).seen == ["a", "b"]
    assert b.cached_history("v", 10, include_seen=True) is not None  # v wrote nothing


def test_a_forgotten_user_is_gone_from_memory(tmp_path: Path) -> None:
    b = behaviour(tmp_path)
    b.append([[event(1, "u", "a")]])
    assert items(b, "u") == ["a"]
    assert b.forget("u") == 1
    assert b.cached_history("u", 10, include_seen=True) is None
    assert items(b, "u") == []
    assert b.history("u", 10, include_seen=True).first_offset == 0


def test_a_read_that_a_write_overlapped_is_not_kept(tmp_path: Path) -> None:
    cache = HistoryCache(capacity_ids=10)
    b = behaviour(tmp_path)
    stale = b.history("u", 10, include_seen=False)
    mark = cache.mark()
    cache.drop(["someone-else"])  # a write lands while the read is on its way
    cache.put("u", (10, False), stale, mark)
    assert cache.get("u", (10, False)) is None
    cache.put("u", (10, False), stale, cache.mark())
    assert cache.get("u", (10, False)) is stale


def test_memory_holds_the_users_read_last_up_to_its_size(tmp_path: Path) -> None:
    b = behaviour(tmp_path, capacity=4)  # two one-item histories: two ids each
    b.append([[event(n, f"u{n}", "a") for n in range(3)]])
    for user in ("u0", "u1", "u0", "u2"):
        b.history(user, 10, include_seen=False)
    assert b.cached_history("u1", 10, include_seen=False) is None
    assert b.cached_history("u0", 10, include_seen=False) is not None


def test_a_cache_of_no_users_keeps_nothing(tmp_path: Path) -> None:
    b = behaviour(tmp_path, capacity=0)
    b.history("u", 10, include_seen=False)
    assert b.cached_history("u", 10, include_seen=False) is None
