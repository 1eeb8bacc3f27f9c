"""One server interceptor for every service: structured logs, Prometheus metrics and the
mapping of errors to status codes, so no handler ever answers UNKNOWN.

It also decodes the requests: gRPC decodes a request before any handler or interceptor
runs and answers UNKNOWN, with the decoder's exception in the details, when the bytes are
not the message (random bytes, a truncated message, invalid UTF-8 in a string field). The
wrapped decoder hands the handler a marker instead, which becomes INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from shared.errors import ResourceExhausted, ServiceError, StreamIdle, Undecodable
from shared.metrics import RPC_HANDLED, RPC_LATENCY, RPC_STARTED

if TYPE_CHECKING:
    from shared.access import Access

log = logging.getLogger("shared.rpc")
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Codes from a downstream service that the caller should see as they are; anything else
# from downstream (deadline, unavailable) means this service cannot answer now.
_PASSTHROUGH_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
# Successful calls are counted in metrics; a log line each would cost more than the search.
_LOG_LEVELS = {
    grpc.StatusCode.OK: logging.DEBUG,
    grpc.StatusCode.CANCELLED: logging.DEBUG,
    grpc.StatusCode.INVALID_ARGUMENT: logging.INFO,
    grpc.StatusCode.NOT_FOUND: logging.INFO,
    grpc.StatusCode.UNAUTHENTICATED: logging.INFO,
    grpc.StatusCode.PERMISSION_DENIED: logging.INFO,
    grpc.StatusCode.INTERNAL: logging.ERROR,
}
_QUIET_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


def status_of(error: ServiceError) -> grpc.StatusCode:
    return grpc.StatusCode[error.status_name]


class _Undecoded:
    """What the handler receives in place of a request that could not be decoded."""


UNDECODED = _Undecoded()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001 - DecodeError and whatever else a parser raises
            return UNDECODED

    return deserialize


def _with_notes(message: str, error: BaseException) -> str:
    """A handler adds what the caller needs to know of a failure (e.g. how much of a stream
    was written before it) as exception notes."""
    return "; ".join([message, *getattr(error, "__notes__", ())])


async def _decoded(requests: AsyncIterator[Any], idle_s: float) -> AsyncIterator[Any]:
    """The requests of a stream, decoded; a stream that sends nothing for `idle_s` (0: no
    limit) is ended, so an abandoned client does not hold a call slot for ever."""
    iterator = aiter(requests)
    while True:
        try:
            if idle_s > 0:
                async with asyncio.timeout(idle_s):  # no task per message, as wait_for makes
                    request = await anext(iterator)
            else:
                request = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise StreamIdle(f"no message for {idle_s:g} s: the stream is closed") from None
        if request is UNDECODED:
            raise Undecodable()
        yield request


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class _Call:
    """Bookkeeping for one RPC: the code it ends with, its log line and metrics."""

    def __init__(self, method: str) -> None:
        self.service, self.method = _split(method)
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        RPC_STARTED.labels(self.service, self.method).inc()

    async def fail(self, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        """Records the error's status and aborts the call with it (abort raises)."""
        if isinstance(error, ResourceExhausted) and error.retry_after_s > 0:
            self.code = status_of(error)
            await context.abort(
                self.code, error.message, _retry_info(self.code, error.message, error)
            )
        if isinstance(error, ServiceError):
            self.code, message = status_of(error), error.message
        elif isinstance(error, grpc.aio.AioRpcError):
            self.code, message = self._downstream(error)
        elif isinstance(error, NotImplementedError):
            self.code, message = grpc.StatusCode.UNIMPLEMENTED, "not implemented by this server"
        else:
            log.error("unhandled error", extra={"method": self.method}, exc_info=error)
            self.code, message = grpc.StatusCode.INTERNAL, "internal error"
        await context.abort(self.code, _with_notes(message, error))

    @staticmethod
    def _downstream(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
        if error.code() in _PASSTHROUGH_CODES:
            return error.code(), error.details() or ""
        return grpc.StatusCode.UNAVAILABLE, f"a dependency failed: {error.code().name}"

    def finish(self, context: grpc.aio.ServicerContext) -> None:
        elapsed = time.perf_counter() - self.started
        if self.code == grpc.StatusCode.OK:
            self.code = context.code() or grpc.StatusCode.OK  # set by a handler's own abort
        RPC_HANDLED.labels(self.service, self.method, self.code.name).inc()
        RPC_LATENCY.labels(self.service, self.method, self.code.name).observe(elapsed)
        level = _LOG_LEVELS.get(self.code, logging.WARNING)
        if self.service in _QUIET_SERVICES:
            level = logging.DEBUG
        if log.isEnabledFor(level):
            fields = {"method": self.method, "code": self.code.name, "ms": round(elapsed * 1e3, 3)}
            log.log(level, "rpc", extra=fields)


def _retry_info(
    code: grpc.StatusCode, message: str, error: ResourceExhausted
) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.Status with a RetryInfo, as trailing metadata: how long to wait."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1, round(error.retry_after_s * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


@dataclass(frozen=True)
class Guard:
    """What every call passes before its handler: who may call (None: anyone), and how
    long a request stream may be silent (0: for ever)."""

    access: Access | None = None
    stream_idle_s: float = 0.0


def _wrap_single(
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    method: str,
    streamed_requests: bool,
    guard: Guard,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method)
        try:
            if guard.access is not None:
                guard.access.check(method, context)
            if streamed_requests:
                request = _decoded(request, guard.stream_idle_s)
            elif request is UNDECODED:
                raise Undecodable()
            return await behavior(request, context)
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - mapped to a status, never UNKNOWN
            await call.fail(context, error)
        finally:
            call.finish(context)

    return wrapped


def _wrap_stream(
    behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
    method: str,
    streamed_requests: bool,
    guard: Guard,
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method)
        try:
            if guard.access is not None:
                guard.access.check(method, context)
            if streamed_requests:
                request = _decoded(request, guard.stream_idle_s)
            elif request is UNDECODED:
                raise Undecodable()
            responses = behavior(request, context)
            if inspect.isasyncgen(responses):
                async for response in responses:
                    yield response
            else:  # a handler that streams with context.write(), like health's Watch
                await cast(Awaitable[None], responses)
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await call.fail(context, error)
        finally:
            call.finish(context)

    return wrapped


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, guard: Guard | None = None) -> None:
        # One wrapped handler per method, made once: this runs on every call's hot path.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._guard = guard or Guard()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            wrapped = self._wrapped[method] = _wrap(handler, method, self._guard)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str, guard: Guard) -> grpc.RpcMethodHandler:
    codec = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_single(handler.unary_unary, method, False, guard), **codec
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_single(handler.stream_unary, method, True, guard), **codec
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method, False, guard), **codec
        )
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream(handler.stream_stream, method, True, guard), **codec
    )
