"""Retrieval replicas as separate processes on one port, as pods run: every write reaches
each one, and a replica that was down copies what it missed before it reports SERVING."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from shared.retrieval_client import ReplicatedRetrieval
from tests.conftest import ServiceProcess, wait_serving
from tests.integration.test_retrieval_service import similar, vectors

HOSTS = ("127.0.0.1", "127.0.0.2")


class Replica(ServiceProcess):
    def __init__(self, data_dir: Path, host: str, port: int, peers: str) -> None:
        super().__init__(
            "retrieval",
            data_dir,
            {"RECSYS_RETRIEVAL_HOST": host, "RECSYS_RETRIEVAL_PEERS": peers},
        )
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    port = ServiceProcess("retrieval", tmp_path).port
    peers = "ipv4:" + ",".join(f"{h}:{port}" for h in HOSTS)
    started = [Replica(tmp_path / f"r{n}", h, port, peers) for n, h in enumerate(HOSTS)]
    for replica in started:
        replica.start()
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


def peers_of(replicas: list[Replica]) -> str:
    return replicas[0].extra_env["RECSYS_RETRIEVAL_PEERS"]


def records(matrix: np.ndarray, start: int) -> list[retrieval_pb2.VectorRecord]:
    return [
        retrieval_pb2.VectorRecord(item_id=f"i{start + n}", vector=row.tolist(), categories=["c"])
        for n, row in enumerate(matrix)
    ]


async def write(peers: str, *requests: object) -> None:
    """Each request through one writer, as the gateway and the trainer send them."""
    writer = ReplicatedRetrieval(peers)
    try:
        for request in requests:
            if isinstance(request, retrieval_pb2.UpsertVectorsRequest):
                await writer.UpsertVectors(request, timeout=30)
            elif isinstance(request, retrieval_pb2.DeleteVectorsRequest):
                await writer.DeleteVectors(request, timeout=30)
            else:
                assert isinstance(request, retrieval_pb2.DropIndexRequest)
                await writer.DropIndex(request, timeout=30)
    finally:
        await writer.close()


def stub(replica: Replica) -> retrieval_pb2_grpc.RetrievalServiceStub:
    return retrieval_pb2_grpc.RetrievalServiceStub(replica.channel())


def size(replica: Replica, index: str) -> int | None:
    try:
        reply = stub(replica).GetIndexStats(
            retrieval_pb2.GetIndexStatsRequest(index=index), timeout=5
        )
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return None
    return reply.size


def test_every_write_reaches_each_replica(replicas: list[Replica]) -> None:
    matrix = vectors(300)
    asyncio.run(
        write(
            peers_of(replicas),
            retrieval_pb2.UpsertVectorsRequest(index="content", records=records(matrix, 0)),
            retrieval_pb2.DeleteVectorsRequest(index="content", item_ids=["i3", "i4"]),
        )
    )
    for probe in ("i0", "i7", "i150"):
        assert similar(stub(replicas[0]), probe, 20) == similar(stub(replicas[1]), probe, 20)
    for replica in replicas:
        assert size(replica, "content") == 298
        assert "i3" not in similar(stub(replica), "i0", 298)


def test_a_replica_that_was_down_catches_up_before_it_serves(replicas: list[Replica]) -> None:
    peers = peers_of(replicas)
    first = vectors(300)
    asyncio.run(
        write(
            peers,
            retrieval_pb2.UpsertVectorsRequest(index="content", records=records(first, 0)),
            retrieval_pb2.UpsertVectorsRequest(index="two-tower-1", records=records(first, 0)),
        )
    )
    down = replicas[1]
    down.kill()

    # While it is down: new items, a deleted one, a version's index dropped, a new one.
    added = vectors(40, seed=2)
    asyncio.run(
        write(
            peers,
            retrieval_pb2.UpsertVectorsRequest(index="content", records=records(added, 300)),
            retrieval_pb2.DeleteVectorsRequest(index="content", item_ids=["i5"]),
            retrieval_pb2.DropIndexRequest(index="two-tower-1"),
            retrieval_pb2.UpsertVectorsRequest(index="two-tower-2", records=records(added, 0)),
        )
    )
    down.start(wait=False)
    assert down.process is not None
    wait_serving(down.address, down.process)

    up = replicas[0]
    assert size(down, "content") == size(up, "content") == 339
    assert size(down, "two-tower-1") is None
    assert size(down, "two-tower-2") == 40
    for probe in ("i0", "i301", "i339"):
        assert similar(stub(down), probe, 30) == similar(stub(up), probe, 30)
    assert "i5" not in similar(stub(down), "i0", 339)
