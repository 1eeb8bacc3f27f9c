from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from services.trainer import metrics

STATUS = {
    "log_end_offset": 1_001,  # one past offset 1000
    "trained_offset": 990,
    "live_trained_offset": 900,
    "last_publish": 1_700_000_000.5,
    "gate_rejections_in_a_row": 2,
    "full_retrain_running": True,
    "live_newest_event_appended_at": 1_700_000_100.25,
    "oldest_unserved_appended_at": 1_700_000_200.5,
}


def _value(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_the_gauges_say_how_far_the_served_version_is_behind_the_log() -> None:
    metrics.update(STATUS)
    assert _value("recsys_trainer_events_behind_live") == 100
    assert _value("recsys_trainer_learned_offset") == 990
    assert _value("recsys_trainer_last_publish_timestamp_seconds") == 1_700_000_000.5
    assert _value("recsys_trainer_gate_rejections_in_a_row") == 2
    assert _value("recsys_trainer_full_retrain_running") == 1
    assert _value("recsys_trainer_live_newest_event_timestamp_seconds") == 1_700_000_100.25
    assert _value("recsys_trainer_oldest_unserved_event_timestamp_seconds") == 1_700_000_200.5
    metrics.update({**STATUS, "log_end_offset": 0, "live_trained_offset": 0})
    assert _value("recsys_trainer_events_behind_live") == 0


def test_following_keeps_the_last_values_when_a_read_fails() -> None:
    reads: list[object] = [
        STATUS,
        RuntimeError("the actor restarts"),
        {**STATUS, "trained_offset": 995},
    ]

    async def run() -> None:
        done = asyncio.Event()

        async def read() -> object:
            answer = reads.pop(0)
            if not reads:
                done.set()
            if isinstance(answer, Exception):
                raise answer
            return answer

        task = asyncio.create_task(metrics.follow(read, every_s=0.0))
        await done.wait()
        await asyncio.sleep(0)
        await metrics.stop(task)

    asyncio.run(run())
    assert _value("recsys_trainer_learned_offset") == 995
