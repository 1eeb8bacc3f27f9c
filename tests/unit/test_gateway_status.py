from __future__ import annotations

from services.gateway.status import freshness
from shared.model_store import LiveVersion

NOW = 1_700_000_000.0


def test_status_counts_events_after_the_trained_offset_when_a_version_is_live() -> None:
    live = LiveVersion(
        version=3,
        published_at=NOW - 50,
        trained_through_offset=40,
        previous=2,
        newest_event_appended_at=NOW - 120,
    )
    status = freshness("two-tower-3", live, 46, NOW - 30, NOW)
    assert (status.live_version, status.previous_version) == ("two-tower-3", "two-tower-2")
    assert (status.trained_offset, status.log_end_offset, status.events_behind) == (40, 46, 5)
    assert (status.newest_event_age_s, status.oldest_missing_event_age_s) == (120.0, 30.0)
    assert status.published_at == NOW - 50


def test_status_puts_the_whole_log_behind_when_no_version_is_live() -> None:
    status = freshness("content-profile", None, 8, NOW - 9, NOW)
    assert (status.live_version, status.previous_version, status.published_at) == ("", "", 0.0)
    assert (status.trained_offset, status.events_behind) == (0, 7)
    assert (status.newest_event_age_s, status.oldest_missing_event_age_s) == (0.0, 9.0)


def test_status_reports_no_age_when_append_times_are_unknown_or_nothing_is_missing() -> None:
    live = LiveVersion(version=1, published_at=NOW, trained_through_offset=10)
    status = freshness("two-tower-1", live, 11, 0.0, NOW)
    assert status.events_behind == 0
    assert (status.newest_event_age_s, status.oldest_missing_event_age_s) == (0.0, 0.0)
    assert status.previous_version == ""
