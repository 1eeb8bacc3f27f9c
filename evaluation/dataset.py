"""Timestamped interaction files, split in time order into history and equal blocks."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.interactions import Interaction

_USER_COLUMNS = ("user_id", "userId", "user")
_ITEM_COLUMNS = ("item_id", "movieId", "itemId", "item")
_RATING_COLUMNS = ("rating", "value")


def _column(header: Sequence[str], names: Sequence[str], required: bool = True) -> str | None:
    for name in names:
        if name in header:
            return name
    if required:
        raise ValueError(f"the file needs one of the columns {', '.join(names)}")
    return None


def load_interactions(path: Path) -> list[Interaction]:
    """A CSV with a header: user and item ids, a timestamp in seconds and an optional rating;
    returned in time order (ties keep the file's order)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        user, item = _column(header, _USER_COLUMNS), _column(header, _ITEM_COLUMNS)
        rating = _column(header, _RATING_COLUMNS, required=False)
        rows = [
            Interaction(
                row[str(user)],
                row[str(item)],
                float(row["timestamp"]),
                float(row[rating]) if rating else 1.0,
            )
            for row in reader
        ]
    return sorted(rows, key=lambda r: r.timestamp)


@dataclass(frozen=True)
class Split:
    history: list[Interaction]
    blocks: list[list[Interaction]]

    def before(self, block: int) -> list[Interaction]:
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


def split(interactions: Sequence[Interaction], history_fraction: float, blocks: int) -> Split:
    if not 0 < history_fraction < 1 or blocks < 1:
        raise ValueError("history_fraction must be in (0, 1) and blocks at least 1")
    cut = int(len(interactions) * history_fraction)
    test = list(interactions[cut:])
    size = -(-len(test) // blocks)
    return Split(list(interactions[:cut]), [test[i : i + size] for i in range(0, len(test), size)])
