"""A replica's catch-up from a peer never undoes a write that reached it meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from services.retrieval.indexes import IndexRegistry, Record
from services.retrieval.vector_index import IndexSettings
from services.retrieval.vector_store import VectorStore
from shared.items import ItemFilter


def record(item_id: str, seed: int) -> Record:
    vector = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return Record(item_id, (vector / np.linalg.norm(vector)).tolist(), ["c"])


def test_writes_during_a_catch_up_win_over_the_peers_copy(tmp_path: Path) -> None:
    async def scenario() -> IndexRegistry:
        registry = IndexRegistry(
            VectorStore(tmp_path / "v.sqlite3"), tmp_path / "snapshots", IndexSettings()
        )
        registry.restore()
        await registry.upsert("content", [record("stale", 1), record("kept", 2)])
        await registry.upsert("two-tower-1", [record("a", 3)])
        registry.begin_catch_up()
        assert registry.catching_up
        # Writes that reach this replica while it copies from the peer:
        await registry.delete("content", ["gone"])
        await registry.upsert("content", [record("changed", 4)])
        await registry.upsert("two-tower-3", [record("b", 5)])
        # The peer's copy, older for "gone" and "changed"; it no longer has "stale", nor
        # two-tower-1 (dropped while this replica was down).
        peer = [record("gone", 6), record("changed", 7), record("kept", 2), record("new", 8)]
        assert await registry.merge_from_peer("content", 8, peer) == 2
        await registry.keep_only("content", {r.item_id for r in peer})
        assert await registry.drop_unless_listed({"content"}) == ["two-tower-1"]
        registry.end_catch_up()
        return registry

    registry = asyncio.run(scenario())
    assert registry.stats("content").size == 3  # kept, changed, new
    found = registry.similar("content", "changed", 5, ItemFilter())
    assert {h.item_id for h in found} == {"kept", "new"}
    changed = registry.search("content", record("changed", 4).vector, 1, ItemFilter())
    assert changed[0].item_id == "changed" and changed[0].score > 0.99  # its write, not the peer's
    assert registry.stats("two-tower-3").size == 1
    assert [name for name, _, _ in registry.listing()] == ["content", "two-tower-3"]
