"""Recommend's reads over long-lived streams (shared/streamed.py) against a real retrieval
process: the answers and errors of the unary calls, one stream reused, and streams that
go stale (a restart) or hold a graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from recsys.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from shared.streamed import StreamedCalls
from tests.conftest import ServiceProcess, running
from tests.integration.test_retrieval_service import upsert, vectors

Searches = StreamedCalls[retrieval_pb2.StreamSearchRequest, retrieval_pb2.StreamSearchResponse]
Body = Callable[[retrieval_pb2_grpc.RetrievalServiceStub, Searches], Awaitable[None]]


def search(matrix: np.ndarray, row: int, k: int = 5) -> retrieval_pb2.StreamSearchRequest:
    return retrieval_pb2.StreamSearchRequest(
        search=retrieval_pb2.SearchRequest(index="content", vector=matrix[row].tolist(), k=k)
    )


def with_streams(address: str, body: Body) -> None:
    async def run() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            calls: Searches = StreamedCalls(stub.StreamSearch)
            try:
                await body(stub, calls)
            finally:
                calls.close()

    asyncio.run(run())


def test_streamed_searches_answer_as_unary_ones_over_one_stream(data_dir: Path) -> None:
    matrix = vectors(200)
    with running(ServiceProcess("retrieval", data_dir)) as service:
        upsert(retrieval_pb2_grpc.RetrievalServiceStub(service.channel()), matrix)

        async def body(stub: retrieval_pb2_grpc.RetrievalServiceStub, calls: Searches) -> None:
            for row in range(20):
                unary = await stub.Search(search(matrix, row).search, timeout=5)
                streamed = await calls(search(matrix, row), 5)
                assert streamed.search == unary
            assert calls.opened == 1
            by_profile = retrieval_pb2.SearchByProfileRequest(
                index="content", profile=[retrieval_pb2.WeightedItem(item_id="i3", weight=1)], k=4
            )
            request = retrieval_pb2.StreamSearchRequest(by_profile=by_profile)
            streamed_profile = (await calls(request, 5)).by_profile
            assert streamed_profile == await stub.SearchByProfile(by_profile, timeout=5)
            # Callers at once get a stream each, and give them back for the next ones.
            replies = await asyncio.gather(*(calls(search(matrix, r), 5) for r in range(8)))
            assert [r.search.hits[0].item_id for r in replies] == [f"i{r}" for r in range(8)]
            assert calls.opened == 8

        with_streams(service.address, body)


def test_errors_and_deadlines_are_the_unary_calls_and_the_next_call_works(
    data_dir: Path,
) -> None:
    matrix = vectors(50)
    with running(ServiceProcess("retrieval", data_dir)) as service:
        upsert(retrieval_pb2_grpc.RetrievalServiceStub(service.channel()), matrix)

        async def body(stub: retrieval_pb2_grpc.RetrievalServiceStub, calls: Searches) -> None:
            await calls(search(matrix, 0), 5)
            bad = search(matrix, 0, k=0)
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.Search(bad.search, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                await calls(bad, 5)
            assert streamed.value.code() == unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert streamed.value.details() == unary.value.details()
            assert (await calls(search(matrix, 3), 5)).search.hits[0].item_id == "i3"
            short = retrieval_pb2.StreamSearchRequest(
                search=retrieval_pb2.SearchRequest(index="content", vector=[1.0, 0.0], k=3)
            )
            with pytest.raises(grpc.aio.AioRpcError) as wrong_size:
                await calls(short, 5)
            assert wrong_size.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as neither:
                await calls(retrieval_pb2.StreamSearchRequest(), 5)
            assert neither.value.details() == "query: neither search nor by_profile is set"
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await calls(search(matrix, 1), 1e-6)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert (await calls(search(matrix, 2), 5)).search.hits[0].item_id == "i2"

        with_streams(service.address, body)


def test_a_stream_outliving_its_server_is_replaced_and_a_stop_is_not_held(
    data_dir: Path,
) -> None:
    matrix = vectors(50)
    service = ServiceProcess("retrieval", data_dir, {"RECSYS_RETRIEVAL_SHUTDOWN_GRACE_S": "20"})
    with running(service):
        upsert(retrieval_pb2_grpc.RetrievalServiceStub(service.channel()), matrix)

        async def body(stub: retrieval_pb2_grpc.RetrievalServiceStub, calls: Searches) -> None:
            await calls(search(matrix, 0), 5)  # an idle stream is held from here
            started = time.monotonic()
            assert await asyncio.to_thread(service.terminate) == 0
            # The idle stream ended at once instead of holding the stop for its 20 s grace.
            assert time.monotonic() - started < 10
            await asyncio.to_thread(service.start)
            for _ in range(3):  # whichever stream it takes, an answer from the new process
                assert (await calls(search(matrix, 4), 5)).search.hits[0].item_id == "i4"
            service.kill()
            await asyncio.to_thread(service.start)
            assert (await calls(search(matrix, 5), 5)).search.hits[0].item_id == "i5"

        with_streams(service.address, body)
