"""Unary calls carried over long-lived bidirectional streams, for the hot path's reads.

A unary gRPC call in Python costs about as much CPU in set-up (a new HTTP/2 stream, its
metadata and deadline, the completion-queue round trips on both sides) as a message on an
open stream costs in all, and the gateway makes two such reads per Recommend. So its reads
of features and retrieval go over streams kept open and used one request at a time each,
as HTTP/1.1 keep-alive connections are: a request takes an idle stream (or opens one),
writes, reads its answer and gives the stream back. No request ids are needed since a
stream carries one request at a time, and a server answers a stream's messages in order.

What a unary call gives is kept: every request has its deadline (the stream is cancelled
when it passes, since its answer can no longer be matched); a server's error ends the
stream with the status the unary method would have answered and the caller gets that
error; a stream that went stale (its server restarted, a replica went away, the server's
idle limit closed it) is replaced and the read tried again on a new one, which is safe for
the reads this carries. Streams are retired after `max_age_s` so that new ones spread over
the replicas a round-robin channel knows by then, and are not reused after `max_idle_s`
idle, well inside the servers' idle limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from shared.errors import ServiceError
from shared.metrics import RPC_HANDLED, RPC_LATENCY, RPC_STARTED

Request = TypeVar("Request")
Reply = TypeVar("Reply")

MAX_AGE_S = 30.0
MAX_IDLE_S = 60.0
MAX_IDLE_STREAMS = 256
# The first try and this many more, each on a new stream after a pause that doubles (as the
# channels' own retry policy, shared/targets.py), where a stream turns out stale: a replica
# just killed may still be picked once or twice before the channel sees it gone.
STALE_RETRIES = 3
FIRST_BACKOFF_S = 0.01


@dataclass
class _Stream:
    call: Any  # grpc.aio.StreamStreamCall (untyped in grpc's stubs)
    opened: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    answered: int = 0


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    empty = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, empty, empty, details)


class StreamedCalls(Generic[Request, Reply]):
    """Unary-like calls of one streaming method: `await calls(request, timeout)` answers
    the server's reply to `request` or raises grpc.aio.AioRpcError as a unary call would.
    `open_stream` opens a new stream of the method (a multi-callable of a channel)."""

    def __init__(
        self,
        open_stream: Callable[[], Any],
        max_age_s: float = MAX_AGE_S,
        max_idle_s: float = MAX_IDLE_S,
        max_idle_streams: int = MAX_IDLE_STREAMS,
    ) -> None:
        self._open_stream = open_stream
        self.max_age_s = max_age_s
        self.max_idle_s = max_idle_s
        self.max_idle_streams = max_idle_streams
        self._idle: list[_Stream] = []
        self.opened = 0  # streams opened so far, for tests and benchmarks

    async def __call__(self, request: Request, timeout: float) -> Reply:
        try:
            async with asyncio.timeout(timeout):
                return await self._call(request)
        except TimeoutError:
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    async def _call(self, request: Request) -> Reply:
        for attempt in range(STALE_RETRIES + 1):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF_S * 2 ** (attempt - 1))
            # A retry opens a stream: the idle ones may be to the replica that went away.
            stream = self._take() if attempt == 0 else self._open()
            try:
                reply = await self._exchange(stream, request)
            except grpc.aio.AioRpcError as error:
                # A stream that had answered before may have gone stale since (its server
                # went away); UNAVAILABLE is tried again on a new stream as a channel
                # retries a unary call, which goes to another replica where there is one.
                stale = error.code() == grpc.StatusCode.UNAVAILABLE or (
                    error.code() == grpc.StatusCode.CANCELLED and stream.answered > 0
                )
                if stale and attempt < STALE_RETRIES:
                    continue
                raise
            except BaseException:
                stream.call.cancel()  # a deadline or the caller's cancellation mid-exchange
                raise
            self._give_back(stream)
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _take(self) -> _Stream:
        now = time.monotonic()
        while self._idle:
            stream = self._idle.pop()
            if now - stream.used < self.max_idle_s and not stream.call.done():
                return stream
            stream.call.cancel()
        return self._open()

    def _open(self) -> _Stream:
        self.opened += 1
        return _Stream(self._open_stream())

    async def _exchange(self, stream: _Stream, request: Request) -> Reply:
        try:
            await stream.call.write(request)
        except asyncio.InvalidStateError:  # the server ended the stream with OK before
            raise _error(grpc.StatusCode.UNAVAILABLE, "the stream was closed") from None
        except grpc.aio.AioRpcError as error:
            # grpc.aio reports a send on a stream whose connection just broke as INTERNAL
            # ("Internal error from Core"), not as the UNAVAILABLE its status will say: the
            # request did not go out, so it is as safe to send again as a refused call.
            if error.code() != grpc.StatusCode.INTERNAL:
                raise
            raise _error(
                grpc.StatusCode.UNAVAILABLE, f"the stream broke: {error.details()}"
            ) from error
        reply = await stream.call.read()
        if reply is grpc.aio.EOF:
            code = await stream.call.code()
            if code != grpc.StatusCode.OK:
                raise _error(code, await stream.call.details() or "")
            raise _error(grpc.StatusCode.UNAVAILABLE, "the server closed the stream")
        stream.answered += 1
        return reply

    def _give_back(self, stream: _Stream) -> None:
        stream.used = time.monotonic()
        young = stream.used - stream.opened < self.max_age_s
        if young and len(self._idle) < self.max_idle_streams:
            self._idle.append(stream)
        else:
            stream.call.cancel()

    def close(self) -> None:
        """Ends the idle streams (a call in flight ends with its channel)."""
        for stream in self._idle:
            stream.call.cancel()
        self._idle.clear()


@dataclass(eq=False)
class _Answering:
    task: asyncio.Task[Any] | None
    busy: bool = False
    ending: bool = False


# The streams this process's servers are answering (one server a process, but tests may
# run several in one).
_ANSWERING: set[_Answering] = set()


def end_streams() -> None:
    """For a server about to stop: the streams waiting for their next request end now
    (their callers open new ones, elsewhere where there are replicas), those answering one
    end once it is answered, so that callers' idle streams do not hold a graceful stop
    for its whole grace."""
    for answering in list(_ANSWERING):
        answering.ending = True
        if not answering.busy and answering.task is not None:
            answering.task.cancel()  # out of its wait for a request: answer_each ends it


async def answer_each(
    requests: AsyncIterator[Request],
    context: grpc.aio.ServicerContext,
    service: str,
    method_of: Callable[[Request], str],
    answer: Callable[[Request, grpc.aio.ServicerContext], Awaitable[Reply]],
) -> AsyncIterator[Reply]:
    """The server's side: each request of the stream answered in turn by `answer`, and
    counted in the RPC metrics of `service` as a call of the unary method it stands for
    (`method_of` it), so dashboards read the same whichever way the caller asked. An
    error ends the stream (the interceptor turns it into the call's status)."""
    answering = _Answering(asyncio.current_task())
    _ANSWERING.add(answering)
    incoming = aiter(requests)
    try:
        while True:
            try:
                request = await anext(incoming)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not answering.ending or answering.task is None:
                    raise
                # end_streams: ended with OK (gRPC's server sends no status for a handler
                # that is cancelled, so the stream would stay open for the whole grace).
                answering.task.uncancel()
                return
            answering.busy = True
            name = method_of(request)
            started = time.perf_counter()
            RPC_STARTED.labels(service, name).inc()
            try:
                reply = await answer(request, context)
            except BaseException as error:
                _handled(service, name, _code_name(error), started)
                raise
            _handled(service, name, "OK", started)
            answering.busy = False
            yield reply
            if answering.ending:
                return
    finally:
        _ANSWERING.discard(answering)


def _code_name(error: BaseException) -> str:
    if isinstance(error, ServiceError):
        return error.status_name
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def _handled(service: str, method: str, code: str, started: float) -> None:
    RPC_HANDLED.labels(service, method, code).inc()
    RPC_LATENCY.labels(service, method, code).observe(time.perf_counter() - started)
