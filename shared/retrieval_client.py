"""Retrieval as its writers see it: searches go to any replica, writes to every one.

A write (upsert, delete, drop) is sent to each endpoint the address names at that moment,
at once; a replica that is down (UNAVAILABLE) is left out and logged, and it copies what
it missed from a serving replica when it starts again (services/retrieval/catch_up.py).
Any other error fails the write, which its caller may repeat: every write sets a state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from shared.clients import channel
from shared.targets import Target

log = logging.getLogger(__name__)

Reply = TypeVar("Reply")
# The generated stubs are untyped.
Stub = Any


class ReplicatedRetrieval(retrieval_pb2_grpc.RetrievalServiceStub):
    """A retrieval stub over `address` (one instance or replicas) whose writes reach every
    replica. Reads are the plain stub's, spread by round robin over the replicas that are
    SERVING (one catching up is not, and would refuse them)."""

    def __init__(self, address: str) -> None:
        self._channel = channel(address, health_checked=True)
        super().__init__(self._channel)
        self._target = Target.parse(address)
        self._replicas: dict[str, tuple[grpc.aio.Channel, Stub]] = {}
        # The generated stub's writes, replaced by ones that reach every replica.
        self.UpsertVectors = self._upsert
        self.DeleteVectors = self._delete
        self.DropIndex = self._drop

    def _replica(self, endpoint: str) -> Stub:
        if endpoint not in self._replicas:
            opened = channel(endpoint, server_name=self._target.server_name)
            self._replicas[endpoint] = (opened, retrieval_pb2_grpc.RetrievalServiceStub(opened))
        return self._replicas[endpoint][1]

    async def endpoints(self) -> list[str]:
        return await asyncio.to_thread(self._target.endpoints)

    async def on_every_replica(
        self, what: str, call: Callable[[Stub], Awaitable[Reply]]
    ) -> list[Reply]:
        """`call` on each replica at once; those down are left out (logged). None up, or
        any other failure, raises that replica's error."""
        endpoints = await self.endpoints()
        outcomes = await asyncio.gather(
            *(call(self._replica(e)) for e in endpoints), return_exceptions=True
        )
        replies: list[Reply] = []
        down: list[str] = []
        unavailable: grpc.aio.AioRpcError | None = None
        for endpoint, outcome in zip(endpoints, outcomes, strict=True):
            if isinstance(outcome, grpc.aio.AioRpcError) and (
                outcome.code() == grpc.StatusCode.UNAVAILABLE
            ):
                down.append(endpoint)
                unavailable = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                replies.append(outcome)
        if down:
            log.warning("retrieval replicas down, left out", extra={"what": what, "down": down})
        if not replies:
            assert unavailable is not None
            raise unavailable
        return replies

    async def _upsert(
        self, request: retrieval_pb2.UpsertVectorsRequest, timeout: float | None = None
    ) -> retrieval_pb2.UpsertVectorsResponse:
        replies = await self.on_every_replica(
            f"upsert into {request.index}", lambda s: s.UpsertVectors(request, timeout=timeout)
        )
        return replies[0]

    async def _delete(
        self, request: retrieval_pb2.DeleteVectorsRequest, timeout: float | None = None
    ) -> retrieval_pb2.DeleteVectorsResponse:
        replies = await self.on_every_replica(
            f"delete from {request.index}", lambda s: s.DeleteVectors(request, timeout=timeout)
        )
        return retrieval_pb2.DeleteVectorsResponse(deleted=max(r.deleted for r in replies))

    async def _drop(
        self, request: retrieval_pb2.DropIndexRequest, timeout: float | None = None
    ) -> retrieval_pb2.DropIndexResponse:
        replies = await self.on_every_replica(
            f"drop {request.index}", lambda s: s.DropIndex(request, timeout=timeout)
        )
        return retrieval_pb2.DropIndexResponse(dropped=any(r.dropped for r in replies))

    async def size_on_every_replica(self, index: str, timeout: float) -> int:
        """The smallest size of `index` over the replicas that are up; 0 where one lacks it
        (a version is taken up only once every replica holds its index)."""
        try:
            replies = await self.on_every_replica(
                f"stats of {index}",
                lambda s: s.GetIndexStats(
                    retrieval_pb2.GetIndexStatsRequest(index=index), timeout=timeout
                ),
            )
        except grpc.aio.AioRpcError:
            return 0
        return min(r.size for r in replies)

    async def serving_somewhere(self, timeout: float) -> bool:
        """Whether some replica is SERVING (one catching up is not yet)."""

        async def serving(endpoint: str) -> bool:
            self._replica(endpoint)
            health = health_pb2_grpc.HealthStub(self._replicas[endpoint][0])
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        try:
            endpoints = await self.endpoints()
        except OSError:  # a DNS name with no pod behind it yet
            return False
        return any(await asyncio.gather(*(serving(e) for e in endpoints)))

    async def close(self) -> None:
        for opened, _ in self._replicas.values():
            await opened.close()
        self._replicas.clear()
        await self._channel.close()
