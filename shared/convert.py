"""Conversions between the public protobuf messages and the domain types."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.gateway.v1 import gateway_pb2
from shared.errors import InvalidArgument
from shared.events import Event, EventType, Interaction, event_type
from shared.items import Item, ItemFilter


def item_from_proto(message: gateway_pb2.Item) -> Item:
    return Item(
        item_id=message.item_id,
        title=message.title,
        description=message.description,
        categories=tuple(message.categories),
        attributes=dict(message.attributes),
    )


def item_to_proto(item: Item) -> gateway_pb2.Item:
    return gateway_pb2.Item(
        item_id=item.item_id,
        title=item.title,
        description=item.description,
        categories=list(item.categories),
        attributes=dict(item.attributes),
    )


def items_from_proto(messages: Iterable[gateway_pb2.Item]) -> list[Item]:
    return [item_from_proto(m) for m in messages]


def filter_from_proto(message: gateway_pb2.Filter) -> ItemFilter:
    return ItemFilter.build(
        message.include_categories, message.exclude_categories, message.exclude_item_ids
    )


MAX_NANOS = 999_999_999


def timestamp_seconds(message: Timestamp) -> float:
    return message.seconds + message.nanos / 1e9


def validated_timestamp_seconds(message: Timestamp, field: str) -> float:
    """A Timestamp from a caller: nanos outside [0, 999999999] is not a time."""
    if not 0 <= message.nanos <= MAX_NANOS:
        raise InvalidArgument(f"{field}.nanos", f"must be from 0 to {MAX_NANOS}")
    return timestamp_seconds(message)


def timestamp_of(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    return Timestamp(seconds=whole, nanos=int(round((seconds - whole) * 1e9)) % 1_000_000_000)


def event_from_proto(message: gateway_pb2.Event, field: str, arrival: float) -> Event:
    """An event without a timestamp happened when it arrived."""
    has_time = message.HasField("timestamp")
    return Event(
        event_id=message.event_id,
        user_id=message.user_id,
        item_id=message.item_id,
        type=event_type(message.type, f"{field}.type"),
        value=message.value,
        timestamp=validated_timestamp_seconds(message.timestamp, f"{field}.timestamp")
        if has_time
        else arrival,
    )


def events_from_proto(
    messages: Iterable[gateway_pb2.Event], field: str = "events", first_index: int = 0
) -> list[Event]:
    arrival = time.time()
    return [
        event_from_proto(m, f"{field}[{first_index + i}]", arrival) for i, m in enumerate(messages)
    ]


def event_to_proto(event: Event) -> gateway_pb2.Event:
    return gateway_pb2.Event(
        event_id=event.event_id,
        user_id=event.user_id,
        item_id=event.item_id,
        type=int(event.type),
        value=event.value,
        timestamp=timestamp_of(event.timestamp),
    )


_EVENT_TYPES = {int(t): t for t in EventType}


def interaction_from_proto(message: Any) -> Interaction:
    """From recsys.features.v1.Interaction (typed loosely: this module serves every proto).
    Every Recommend reads a history of them, so the known types are looked up directly."""
    return Interaction(
        message.item_id,
        _EVENT_TYPES.get(message.type) or event_type(message.type, "type"),
        message.value,
        timestamp_seconds(message.timestamp),
    )
