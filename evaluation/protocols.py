"""The two replay protocols, run the same way for the suite and for every baseline.

prequential: in time order, recommend for the event's user (k=10), count a hit if the
event's item is in the list, then reveal the event.
blocks: before each block, score every user of the block against their new items in it
(k=10 and 20, seen items left out, full ranking over every item that exists by then), then
reveal the block. An item exists from the block of its first interaction, so new items are
cold-start candidates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evaluation.dataset import Split
from evaluation.metrics import BlockScores
from suite.datasets import DatasetEvent

Progress = Callable[[int], None]


class Subject(Protocol):
    """What is evaluated: the suite through its public API, or an in-process baseline."""

    name: str

    def start_block(self, history: Sequence[DatasetEvent], new_items: set[str]) -> None: ...

    def recommend(self, user_id: str, k: int, seen: set[str], existing: set[str]) -> list[str]: ...

    def reveal(self, events: Sequence[DatasetEvent]) -> None: ...


def _seen_by_user(events: Sequence[DatasetEvent]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for event in events:
        seen[event.user_id].add(event.item_id)
    return seen


def _items_new_in(split: Split) -> list[set[str]]:
    new: list[set[str]] = [set() for _ in split.blocks]
    for item, block in split.first_block_of_items().items():
        if block >= 0:
            new[block].add(item)
    return new


@dataclass
class Replay:
    """Where a replay stands: who has seen what, and which items exist."""

    seen: dict[str, set[str]]
    existing: set[str]


def _blocks(
    subject: Subject, split: Split
) -> Iterator[tuple[list[DatasetEvent], set[str], Replay]]:
    """Each block with its new items, after the subject was told the block starts."""
    state = Replay(_seen_by_user(split.history), {e.item_id for e in split.history})
    for number, (block, new_items) in enumerate(
        zip(split.blocks, _items_new_in(split), strict=True)
    ):
        state.existing |= new_items
        subject.start_block(split.before(number), new_items)
        yield block, new_items, state


def run_blocks(subject: Subject, split: Split, progress: Progress) -> list[dict[str, float]]:
    results = []
    for block, new_items, state in _blocks(subject, split):
        truth: dict[str, set[str]] = defaultdict(set)
        for event in block:
            if event.item_id not in state.seen[event.user_id]:
                truth[event.user_id].add(event.item_id)
        scores = BlockScores(len(state.existing))
        for user, items in truth.items():
            ranked = subject.recommend(user, 20, state.seen[user], state.existing)
            scores.add(ranked, items, new_items)
        subject.reveal(block)
        for event in block:
            state.seen[event.user_id].add(event.item_id)
        results.append(scores.summary())
        progress(len(block))
    return results


def run_prequential(subject: Subject, split: Split, progress: Progress) -> list[dict[str, float]]:
    results = []
    for block, _, state in _blocks(subject, split):
        hits = 0
        for event in block:
            seen = state.seen[event.user_id]
            hits += event.item_id in subject.recommend(event.user_id, 10, seen, state.existing)[:10]
            subject.reveal([event])
            seen.add(event.item_id)
            progress(1)
        results.append({"events": float(len(block)), "hr@10": hits / max(1, len(block))})
    return results


def overall(blocks: list[dict[str, float]], weight_key: str) -> dict[str, Any]:
    """Block figures combined, each block weighted by its users or events."""
    total = sum(b[weight_key] for b in blocks) or 1.0
    keys = [k for k in blocks[0] if k != weight_key] if blocks else []
    combined: dict[str, Any] = {k: sum(b[k] * b[weight_key] for b in blocks) / total for k in keys}
    combined[weight_key] = sum(b[weight_key] for b in blocks)
    return combined
