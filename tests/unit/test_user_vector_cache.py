"""The gateway keeps a user's last user-tower vector only for the very same inputs."""

from __future__ import annotations

import numpy as np

from services.gateway import UserVectorCache
from shared.model_store import ServingInfo


def model(version: int) -> ServingInfo:
    return ServingInfo(version, history_len=3, dimension=2, users={"u": 1}, items={"a": 1})


def inputs(*rows: int) -> bytes:
    return UserVectorCache.inputs(
        np.array([[1]], dtype=np.int64),
        np.array([rows], dtype=np.int64),
        np.ones((1, len(rows)), dtype=np.float32),
    )


def test_the_same_inputs_to_the_same_version_are_answered_from_memory() -> None:
    cache, served = UserVectorCache(10), model(1)
    vector = np.array([[0.5, 0.5]], dtype=np.float32)
    assert cache.get(served, "u", inputs(0, 1, 2)) is None
    cache.put(served, "u", inputs(0, 1, 2), vector)
    assert cache.get(served, "u", inputs(0, 1, 2)) is vector
    assert (cache.hits, cache.misses) == (1, 1)
    assert not vector.flags.writeable  # one array shared by every request that hits it


def test_a_new_event_or_a_new_version_asks_the_tower_again() -> None:
    cache, served = UserVectorCache(10), model(1)
    cache.put(served, "u", inputs(0, 1, 2), np.zeros((1, 2), dtype=np.float32))
    assert cache.get(served, "u", inputs(1, 2, 1)) is None  # the history moved on
    assert cache.get(model(1), "u", inputs(0, 1, 2)) is None  # the version loaded anew
    assert cache.get(model(2), "u", inputs(0, 1, 2)) is None


def test_forgetting_a_user_drops_the_vector_and_the_cache_is_bounded() -> None:
    cache, served = UserVectorCache(2), model(1)
    for user in ("u", "v", "w"):
        cache.put(served, user, inputs(1), np.zeros((1, 2), dtype=np.float32))
    assert cache.get(served, "u", inputs(1)) is None  # the least recently used went
    cache.forget("v")
    assert cache.get(served, "v", inputs(1)) is None
    assert cache.get(served, "w", inputs(1)) is not None
    off = UserVectorCache(0)
    off.put(served, "u", inputs(1), np.zeros((1, 2), dtype=np.float32))
    assert off.get(served, "u", inputs(1)) is None
