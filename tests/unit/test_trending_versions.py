"""Trending lists by version: features names the state a list was ranked from, and the
gateway keeps each list until features says it changed."""

from __future__ import annotations

from pathlib import Path

from recsys.features.v1 import features_pb2
from recsys.gateway.v1 import gateway_pb2
from services.features.behaviour import Behaviour
from services.features.event_log import SqliteEventLog
from services.features.trending import Trending
from services.gateway.downstream import TrendingCache
from services.gateway.recommend import Scored, TrendingQuery
from shared.events import Event, EventType
from shared.items import ItemFilter

DAY = 24 * 3600.0
ANY = ItemFilter()


def view(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, EventType.VIEW, 0.0, 1000.0 + n)


def test_the_version_changes_with_every_event_forget_and_catalogue_write(tmp_path: Path) -> None:
    catalogue = {"a": ("film",), "b": ("film",)}
    revision = [0]
    behaviour = Behaviour(
        SqliteEventLog(tmp_path / "events.sqlite3"), Trending(DAY), catalogue, lambda: revision[0]
    )
    seen = [behaviour.trending_version()]
    assert behaviour.trending_version() == seen[-1]  # reading changes nothing
    behaviour.append([[view(1, "u", "a")]])
    seen.append(behaviour.trending_version())
    behaviour.forget("u")
    seen.append(behaviour.trending_version())
    revision[0] += 1  # an upsert or delete in the catalogue
    seen.append(behaviour.trending_version())
    assert len(set(seen)) == 4


def test_a_restart_names_new_versions(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.sqlite3")
    before = Behaviour(log, Trending(DAY), {}).trending_version()
    assert Behaviour(log, Trending(DAY), {}).trending_version() != before


def reply(version: str, *items: tuple[str, float]) -> features_pb2.GetTrendingResponse:
    return features_pb2.GetTrendingResponse(
        items=[gateway_pb2.ScoredItem(item_id=i, score=s) for i, s in items], version=version
    )


def test_the_cache_keeps_a_list_until_features_sends_another() -> None:
    cache = TrendingCache()
    assert cache.known_version(TrendingQuery(200, ANY)) == ""
    first = cache.answer(TrendingQuery(200, ANY), reply("v1", ("a", 1.0), ("b", 0.5)))
    assert first == [Scored("a", 1.0), Scored("b", 0.5)]
    assert cache.known_version(TrendingQuery(200, ANY)) == "v1"
    unchanged = features_pb2.GetTrendingResponse(version="v1", unchanged=True)
    assert cache.answer(TrendingQuery(200, ANY), unchanged) is first
    assert cache.answer(TrendingQuery(200, ANY), reply("v2", ("b", 1.0))) == [Scored("b", 1.0)]
    assert cache.known_version(TrendingQuery(200, ANY)) == "v2"
    assert cache.known_version(TrendingQuery(10, ANY)) == ""  # another k is another list


def test_the_cache_holds_lists_by_filter_and_forgets_the_least_recent() -> None:
    cache = TrendingCache(capacity=2)
    films, books, music = (ItemFilter.build([c], [], []) for c in ("film", "book", "music"))
    cache.answer(TrendingQuery(5, films), reply("v1", ("f", 1.0)))
    cache.answer(TrendingQuery(5, books), reply("v1", ("b", 1.0)))
    cache.known_version(TrendingQuery(5, films))
    cache.answer(
        TrendingQuery(5, films), features_pb2.GetTrendingResponse(version="v1", unchanged=True)
    )
    cache.answer(TrendingQuery(5, music), reply("v1", ("m", 1.0)))
    assert cache.known_version(TrendingQuery(5, films)) == "v1"
    assert cache.known_version(TrendingQuery(5, books)) == ""  # the least recently used went
    assert cache.known_version(TrendingQuery(5, music)) == "v1"


def test_the_cache_holds_a_list_per_half_life() -> None:
    cache = TrendingCache()
    cache.answer(TrendingQuery(5, ANY, DAY), reply("v1", ("new", 1.0)))
    assert cache.known_version(TrendingQuery(5, ANY, 365 * DAY)) == ""
    assert cache.answer(TrendingQuery(5, ANY, 365 * DAY), reply("v1", ("old", 1.0))) == [
        Scored("old", 1.0)
    ]
    unchanged = features_pb2.GetTrendingResponse(version="v1", unchanged=True)
    assert cache.answer(TrendingQuery(5, ANY, DAY), unchanged) == [Scored("new", 1.0)]
