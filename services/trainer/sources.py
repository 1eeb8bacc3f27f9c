"""What the trainer learns from, read from the features service: the event log (by
offset) and the catalogue's content vectors."""

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
        reply = await features.ReadEvents(
            features_pb2.ReadEventsRequest(from_offset=offset, limit=EVENT_PAGE),
            timeout=timeout_s,
        )
        if last is None:
            last = reply.end_offset - 1  # end_offset is the next offset to be written
        end = last
        page = [logged_event(e) for e in reply.events if e.offset <= end]
        events.extend(page)
        if not reply.events or len(page) < len(reply.events) or reply.events[-1].offset >= end:
            return events
        offset = reply.events[-1].offset + 1


async def read_training_data(
    features: features_pb2_grpc.FeaturesServiceStub, from_offset: int = 0
) -> tuple[list[LoggedEvent], dict[str, np.ndarray]]:
    """The log from `from_offset` and every catalogue item's content vector, read at once."""
    events, content = await asyncio.gather(
        read_events(features, from_offset), read_content(features)
    )
    return events, content
