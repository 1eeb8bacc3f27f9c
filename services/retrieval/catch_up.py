"""How a retrieval replica that starts catches up on what it missed while it was down.

Writers send every write to each replica that is up (shared/retrieval_client.py). A replica
that starts listens at once, so writes reach it from then on, but answers no search and
reports NOT_SERVING until it has copied every index from a replica that is SERVING: each
index page by page, what the peer no longer holds deleted, the indexes the peer dropped
dropped. What a write set here during the copy is never undone by the peer's copy,
whichever of the two is newer (IndexRegistry.begin_catch_up).

The peer's copy holds a write that went to it before the copy began. A write that tried
this replica just before it listened, and reached the peer only after the copy began,
would be missed: the replica waits `settle_s` after it listens before it copies, which
bounds that race by how long a write takes to travel. With no peer serving (the first
replica to start, or every one restarting together), it serves what it stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.retrieval.indexes import IndexRegistry, Record
from services.retrieval.servicer import SERVICE_NAME
from shared.clients import channel
from shared.targets import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatchUpSettings:
    peers: str  # a target naming every replica, this one included; "" when it runs alone
    settle_s: float = 0.5
    page: int = 2_000
    timeout_s: float = 30.0


@dataclass(frozen=True)
class CaughtUp:
    peer: str | None  # copied from; None when no peer was serving
    indexes: int = 0
    records: int = 0
    deleted: int = 0
    dropped: int = 0
    seconds: float = 0.0


async def catch_up(registry: IndexRegistry, settings: CatchUpSettings) -> CaughtUp:
    if not settings.peers or not Target.parse(settings.peers).replicated:
        return CaughtUp(None)
    started = time.monotonic()
    registry.begin_catch_up()
    try:
        await asyncio.sleep(settings.settle_s)
        try:
            endpoints = await asyncio.to_thread(Target.parse(settings.peers).endpoints)
        except OSError as error:
            log.warning("could not resolve the peers", extra={"why": str(error)})
            endpoints = []
        name = Target.parse(settings.peers).server_name
        for endpoint in endpoints:
            peer = channel(endpoint, server_name=name)
            try:
                # This replica is among the endpoints too: it is not SERVING yet.
                if not await _serving(peer, settings.timeout_s):
                    continue
                copied = await _copy(
                    registry, retrieval_pb2_grpc.RetrievalServiceStub(peer), settings
                )
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "catching up from a peer failed, trying the next",
                    extra={"peer": endpoint, "why": error.details()},
                )
                continue
            finally:
                await peer.close()
            done = CaughtUp(endpoint, *copied, seconds=time.monotonic() - started)
            log.info("caught up", extra=done.__dict__)
            return done
        log.warning("no peer is serving: serving what this replica stored")
        return CaughtUp(None, seconds=time.monotonic() - started)
    finally:
        registry.end_catch_up()


async def _serving(peer: grpc.aio.Channel, timeout_s: float) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(peer).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s
        )
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def _copy(
    registry: IndexRegistry,
    peer: retrieval_pb2_grpc.RetrievalServiceStub,
    settings: CatchUpSettings,
) -> tuple[int, int, int, int]:
    """(indexes, records merged, items deleted, indexes dropped)."""
    listing = await peer.ListIndexes(retrieval_pb2.ListIndexesRequest(), timeout=settings.timeout_s)
    kept: set[str] = set()
    merged = deleted = 0
    for info in listing.indexes:
        after = ""
        ids: set[str] = set()
        try:
            while True:
                page = await peer.ExportVectors(
                    retrieval_pb2.ExportVectorsRequest(
                        index=info.name, after_item_id=after, limit=settings.page
                    ),
                    timeout=settings.timeout_s,
                )
                records = [
                    Record(r.item_id, list(r.vector), list(r.categories)) for r in page.records
                ]
                ids.update(r.item_id for r in records)
                if records:
                    merged += await registry.merge_from_peer(info.name, info.dimension, records)
                if not page.next_after_item_id:
                    break
                after = page.next_after_item_id
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            continue  # dropped on the peer since it was listed: the drop reaches us too
        kept.add(info.name)
        deleted += await registry.keep_only(info.name, ids)
    dropped = await registry.drop_unless_listed(kept)
    return len(kept), merged, deleted, len(dropped)
