"""The trainer's Prometheus gauges, for alerts on a model that falls behind the event log or
a gate that keeps rejecting (k8s/components/monitoring). The trainer runs in a Ray actor;
the service process reads the actor's status every few seconds and sets them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger(__name__)
Status = Mapping[str, Any]
FOLLOW_EVERY_S = 5.0


def _events_behind_live(status: Status) -> float:
    """Events in the log that the served version does not hold (log_end_offset is one past
    the highest offset written)."""
    if not status["log_end_offset"]:
        return 0.0
    return float(max(0, status["log_end_offset"] - 1 - status["live_trained_offset"]))


GAUGES: dict[str, tuple[str, Callable[[Status], float]]] = {
    "recsys_trainer_log_end_offset": (
        "One past the highest offset in the event log, as the trainer last read it.",
        lambda s: float(s["log_end_offset"]),
    ),
    "recsys_trainer_learned_offset": (
        "The highest log offset the continual model has learned.",
        lambda s: float(s["trained_offset"]),
    ),
    "recsys_trainer_live_trained_offset": (
        "The highest log offset inside the served version.",
        lambda s: float(s["live_trained_offset"]),
    ),
    "recsys_trainer_events_behind_live": (
        "Events in the log that the served version does not hold.",
        _events_behind_live,
    ),
    "recsys_trainer_last_publish_timestamp_seconds": (
        "When the last version was published (Unix time; 0: none since the state began).",
        lambda s: float(s["last_publish"] or 0.0),
    ),
    "recsys_trainer_live_newest_event_timestamp_seconds": (
        "When the log acknowledged the newest event inside the served version (Unix time; 0:"
        " none).",
        lambda s: float(s["live_newest_event_appended_at"]),
    ),
    "recsys_trainer_oldest_unserved_event_timestamp_seconds": (
        "When the log acknowledged the oldest event the served version does not hold (Unix"
        " time; 0: it holds them all).",
        lambda s: float(s["oldest_unserved_appended_at"]),
    ),
    "recsys_trainer_gate_rejections_in_a_row": (
        "Candidates the gate rejected since the last one it passed.",
        lambda s: float(s["gate_rejections_in_a_row"]),
    ),
    "recsys_trainer_full_retrain_running": (
        "1 while a full retrain runs.",
        lambda s: float(bool(s["full_retrain_running"])),
    ),
}
_GAUGES = {name: Gauge(name, text) for name, (text, _) in GAUGES.items()}


def update(status: Status) -> None:
    for name, (_, value) in GAUGES.items():
        _GAUGES[name].set(value(status))


async def follow(read_status: Callable[[], Any], every_s: float = FOLLOW_EVERY_S) -> None:
    """Sets the gauges from `read_status()` (awaited) every `every_s` until cancelled; a
    failed read (the actor restarting) keeps the last values."""
    while True:
        try:
            update(await read_status())
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the next read may succeed
            log.warning("trainer status unread for metrics", extra={"why": str(error)})
        await asyncio.sleep(every_s)


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
