"""A replayed data set split in time order into history and equal blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from suite.datasets import DatasetEvent


@dataclass(frozen=True)
class Split:
    history: list[DatasetEvent]
    blocks: list[list[DatasetEvent]]

    def before(self, block: int) -> list[DatasetEvent]:
        """Every interaction before the block starts."""
        earlier = [e for b in self.blocks[:block] for e in b]
        return self.history + earlier

    def first_block_of_items(self) -> dict[str, int]:
        """Item -> the block of its first interaction (-1 for the history)."""
        first: dict[str, int] = {}
        for event in self.history:
            first.setdefault(event.item_id, -1)
        for number, block in enumerate(self.blocks):
            for event in block:
                first.setdefault(event.item_id, number)
        return first


def split(interactions: Sequence[DatasetEvent], history_fraction: float, blocks: int) -> Split:
    if not 0 < history_fraction < 1 or blocks < 1:
        raise ValueError("history_fraction must be in (0, 1) and blocks at least 1")
    cut = int(len(interactions) * history_fraction)
    test = list(interactions[cut:])
    size = -(-len(test) // blocks)
    return Split(list(interactions[:cut]), [test[i : i + size] for i in range(0, len(test), size)])
