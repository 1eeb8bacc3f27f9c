"""Concurrent requests served by one run of the work: while a run is under way, the
requests that arrive queue up and go together in the next (group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batched(Generic[T, R]):
    """`run` takes every queued request and returns one result per request, in order; an
    error it raises goes to every request of its run."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                results = await self._run([request for request, _ in group])
            except Exception as error:  # noqa: BLE001 - each caller gets the error
                for _, future in group:
                    future.set_exception(error)
            else:
                for (_, future), result in zip(group, results, strict=True):
                    future.set_result(result)

    async def flush(self) -> None:
        """Returns once every request queued so far has been run."""
        if self._worker is not None:
            await self._worker
