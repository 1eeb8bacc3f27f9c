"""shared/streamed.py's choice of what to send again: a stream that broke under a request
before it went out is replaced, an error the server answered is the caller's."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from shared.streamed import StreamedCalls


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class Stream:
    """A stream call's surface that StreamedCalls uses, answering from a script: each
    request is written, then answered with the next reply, or it fails as scripted."""

    def __init__(self, write_error: grpc.aio.AioRpcError | None = None, status: Any = None):
        self.write_error = write_error
        self.status = status  # the stream's status once it ended (its read then gives EOF)
        self.written: list[str] = []
        self.cancelled = False

    async def write(self, request: str) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.written.append(request)

    async def read(self) -> Any:
        if self.status is not None:
            return grpc.aio.EOF
        return f"answer to {self.written[-1]}"

    async def code(self) -> grpc.StatusCode:
        return self.status

    async def details(self) -> str:
        return "answered by the server"

    def done(self) -> bool:
        return self.status is not None

    def cancel(self) -> None:
        self.cancelled = True


def calls_over(*streams: Stream) -> StreamedCalls[str, str]:
    opened = iter(streams)
    return StreamedCalls(lambda: next(opened))


def test_a_send_on_a_stream_whose_connection_broke_goes_out_on_a_new_stream() -> None:
    # What grpc.aio raises for a send on a stream whose connection just went away.
    broken = Stream(write_error=_error(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    healthy = Stream()
    calls = calls_over(broken, healthy)
    assert asyncio.run(calls("q", timeout=5)) == "answer to q"
    assert calls.opened == 2 and healthy.written == ["q"]


def test_an_error_the_server_answered_is_raised_and_not_sent_again() -> None:
    answered = Stream(status=grpc.StatusCode.INTERNAL)
    calls = calls_over(answered, Stream())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(calls("q", timeout=5))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert calls.opened == 1


def test_a_stream_that_keeps_breaking_fails_unavailable_after_its_retries() -> None:
    def broken() -> Stream:
        return Stream(write_error=_error(grpc.StatusCode.INTERNAL, "Internal error from Core"))

    calls: StreamedCalls[str, str] = StreamedCalls(broken)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(calls("q", timeout=5))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert calls.opened == 4  # the first try and three more
