"""What the trainer learns from, read from the features service: the event log (by
offset) and the catalogue's content vectors. Every read of either goes through here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from recsys.features.v1 import features_pb2, features_pb2_grpc
from shared.convert import event_from_proto
from shared.events import LoggedEvent

PAGE = 1_000  # the features service's largest page
EVENT_PAGE = 10_000


async def catalogue_pages(
    features: features_pb2_grpc.FeaturesServiceStub, timeout_s: float = 30.0
) -> AsyncIterator[list[features_pb2.ItemVector]]:
    after = ""
    while True:
        reply = await features.ListItemVectors(
            features_pb2.ListItemVectorsRequest(after_item_id=after, limit=PAGE),
            timeout=timeout_s,
        )
        if reply.vectors:
            yield list(reply.vectors)
        if not reply.next_after_item_id:
            return
        after = reply.next_after_item_id


async def read_content(
    features: features_pb2_grpc.FeaturesServiceStub, timeout_s: float = 30.0
) -> dict[str, np.ndarray]:
    """Every catalogue item's content vector."""
    content: dict[str, np.ndarray] = {}
    async for page in catalogue_pages(features, timeout_s):
        for vector in page:
            content[vector.item_id] = np.asarray(vector.vector, dtype=np.float32)
    return content


def logged_event(message: features_pb2.LoggedEvent) -> LoggedEvent:
    return LoggedEvent(
        message.offset,
        event_from_proto(message.event, "events", 0.0),
        message.appended_at.ToNanoseconds() / 1e9,  # 0.0 when unset
    )


async def read_page(
    features: features_pb2_grpc.FeaturesServiceStub,
    from_offset: int,
    limit: int = EVENT_PAGE,
    timeout_s: float = 30.0,
) -> tuple[list[LoggedEvent], int]:
    """Up to `limit` events from `from_offset`, and the log's end offset (the next offset to
    be written)."""
    reply = await features.ReadEvents(
        features_pb2.ReadEventsRequest(from_offset=from_offset, limit=limit), timeout=timeout_s
    )
    return [logged_event(e) for e in reply.events], reply.end_offset


async def log_end(features: features_pb2_grpc.FeaturesServiceStub, timeout_s: float = 30.0) -> int:
    """The next offset the log will write: 1 while it is empty."""
    _, end = await read_page(features, 1, 1, timeout_s)
    return end


async def read_events(
    features: features_pb2_grpc.FeaturesServiceStub,
    from_offset: int = 0,
    until_offset: int | None = None,
    timeout_s: float = 30.0,
) -> list[LoggedEvent]:
    """The log from `from_offset` up to its end as it was when reading started (or up to
    `until_offset`, inclusive), in log order."""
    events: list[LoggedEvent] = []
    offset = from_offset
    last: int | None = until_offset
    while True:
        page, end_offset = await read_page(features, offset, EVENT_PAGE, timeout_s)
        if last is None:
            last = end_offset - 1
        wanted = [e for e in page if e.offset <= last]
        events.extend(wanted)
        if not page or len(wanted) < len(page) or page[-1].offset >= last:
            return events
        offset = page[-1].offset + 1


async def read_training_data(
    features: features_pb2_grpc.FeaturesServiceStub, from_offset: int = 0
) -> tuple[list[LoggedEvent], dict[str, np.ndarray]]:
    """The log from `from_offset` and every catalogue item's content vector, read at once."""
    events, content = await asyncio.gather(
        read_events(features, from_offset), read_content(features)
    )
    return events, content
