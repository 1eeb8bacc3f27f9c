"""User behaviour as the domain sees it: events, their validation and their weights."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from shared.errors import InvalidArgument
from shared.items import validate_id

MAX_EVENTS_PER_REQUEST = 10_000
MAX_FUTURE_S = 24 * 3600.0


class EventType(IntEnum):
    """Numbered as recsys.gateway.v1.EventType."""

    VIEW = 1
    CLICK = 2
    ADD_TO_CART = 3
    PURCHASE = 4
    RATE = 5


# How much an interaction says about what a user wants, relative to a view.
TYPE_WEIGHTS = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 1.5,
    EventType.ADD_TO_CART: 3.0,
    EventType.PURCHASE: 4.0,
    EventType.RATE: 2.0,
}
PAST_TENSE = {
    EventType.VIEW: "viewed",
    EventType.CLICK: "clicked",
    EventType.ADD_TO_CART: "added to your cart",
    EventType.PURCHASE: "bought",
    EventType.RATE: "rated",
}


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    value: float
    timestamp: float  # event time, seconds since the epoch


@dataclass(frozen=True)
class LoggedEvent:
    offset: int
    event: Event
    appended_at: float = 0.0  # when the log acknowledged it (server clock); 0 when unknown


@dataclass(frozen=True)
class Interaction:
    item_id: str
    type: EventType
    value: float
    timestamp: float


def interaction_weight(event_type: EventType, value: float) -> float:
    """A rating counts by how much it was liked: a 5 twice a 2.5, a 0.5 barely at all."""
    weight = TYPE_WEIGHTS[event_type]
    if event_type == EventType.RATE:
        weight *= max(0.1, min(value, 5.0) / 5.0)
    return weight


def validate_event(event: Event, field: str, now: float) -> None:
    validate_id(event.event_id, f"{field}.event_id")
    validate_id(event.user_id, f"{field}.user_id")
    validate_id(event.item_id, f"{field}.item_id")
    if not math.isfinite(event.value):
        raise InvalidArgument(f"{field}.value", "must be a finite number")
    if not math.isfinite(event.timestamp) or event.timestamp < 0:
        raise InvalidArgument(f"{field}.timestamp", "must be a time after 1970")
    if event.timestamp > now + MAX_FUTURE_S:
        raise InvalidArgument(f"{field}.timestamp", "is more than 24 hours in the future")


def validate_events(events: Sequence[Event], field: str = "events", first_index: int = 0) -> None:
    if not events:
        raise InvalidArgument(field, "must not be empty")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise InvalidArgument(
            field, f"has {len(events)} entries; at most {MAX_EVENTS_PER_REQUEST} per request"
        )
    now = time.time()
    for i, event in enumerate(events):
        validate_event(event, f"{field}[{first_index + i}]", now)


def event_type(number: int, field: str) -> EventType:
    try:
        return EventType(number)
    except ValueError:
        raise InvalidArgument(field, f"unknown event type {number}") from None
