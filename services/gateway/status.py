"""How fresh what serves is: the figures GetStatus reports, from the model store's live
pointer and the event log's end, worked out here so the servicer only fetches them."""

from __future__ import annotations

from dataclasses import dataclass

from shared.model_store import LiveVersion, model_name


@dataclass(frozen=True)
class Status:
    serving_version: str
    live_version: str  # "" before the first publish
    previous_version: str
    published_at: float  # 0 before the first publish
    trained_offset: int
    log_end_offset: int
    events_behind: int
    newest_event_age_s: float
    oldest_missing_event_age_s: float


def _age(now: float, then: float) -> float:
    """Seconds since `then`; 0 where it is unknown (0), never negative across clock skew."""
    return max(0.0, now - then) if then > 0 else 0.0


def freshness(
    serving_version: str,
    live: LiveVersion | None,
    log_end_offset: int,
    oldest_missing_appended_at: float,
    now: float,
) -> Status:
    """`oldest_missing_appended_at` is when the first event after the trained offset was
    appended (0 when there is none). With no live version nothing is trained: the whole
    log is behind."""
    trained = live.trained_through_offset if live else 0
    previous = live.previous if live else None
    return Status(
        serving_version=serving_version,
        live_version=model_name(live.version) if live else "",
        previous_version=model_name(previous) if previous is not None else "",
        published_at=live.published_at if live else 0.0,
        trained_offset=trained,
        log_end_offset=log_end_offset,
        events_behind=max(0, log_end_offset - 1 - trained),
        newest_event_age_s=_age(now, live.newest_event_appended_at) if live else 0.0,
        oldest_missing_event_age_s=_age(now, oldest_missing_appended_at),
    )
