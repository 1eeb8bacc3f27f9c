from __future__ import annotations

import asyncio

from shared.batching import Batched


def test_batched_serves_concurrent_requests_in_fewer_runs_each_with_its_own_result() -> None:
    runs: list[list[int]] = []

    async def run(requests: list[int]) -> list[int]:
        runs.append(requests)
        await asyncio.sleep(0.01)
        return [2 * r for r in requests]

    async def scenario() -> list[int]:
        batched = Batched(run)
        return await asyncio.gather(*(batched.submit(n) for n in range(20)))

    assert asyncio.run(scenario()) == [2 * n for n in range(20)]
    assert sorted(n for run_ in runs for n in run_) == list(range(20)) and len(runs) < 20


def test_batched_gives_every_request_of_a_failed_run_its_error() -> None:
    async def run(requests: list[int]) -> list[int]:
        raise ValueError("disk full")

    async def scenario() -> list[BaseException | int]:
        batched = Batched(run)
        return await asyncio.gather(*(batched.submit(n) for n in range(3)), return_exceptions=True)

    assert all(isinstance(r, ValueError) for r in asyncio.run(scenario()))


def test_batched_flush_waits_for_what_was_queued() -> None:
    done: list[int] = []

    async def run(requests: list[int]) -> list[None]:
        await asyncio.sleep(0.01)
        done.extend(requests)
        return [None] * len(requests)

    async def scenario() -> None:
        batched: Batched[int, None] = Batched(run)
        task = asyncio.ensure_future(batched.submit(1))
        await asyncio.sleep(0)
        await batched.flush()
        assert done == [1]
        await task

    asyncio.run(scenario())
