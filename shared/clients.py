"""Outbound gRPC: channels with sane options and deadlines on every call, and mutual TLS
with this process's identity when it has one (shared/tls.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from shared import tls
from shared.targets import Target, channel_options

# What a client takes and sends: each server's own limit (shared/config.py) is the bound.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SIZES: list[tuple[str, str | int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]
OPTIONS: list[tuple[str, str | int]] = [*SIZES, *channel_options()]
RETIRED_GRACE_S = 30.0  # calls on a channel replaced by a reload get this long to finish


def channel(
    address: str, health_checked: bool = False, server_name: str | None = None
) -> grpc.aio.Channel:
    """A channel to a service's address: one instance, or replicas (shared/targets.py);
    `health_checked`: calls go only to endpoints whose health check says SERVING;
    `server_name`: the name the peer's certificate carries, where `address` is one
    endpoint (an IP) of a named service (Target.server_name)."""
    options = [*SIZES, *channel_options(health_checked)] if health_checked else OPTIONS
    files = tls.files_for_calls()
    if files is None:
        return grpc.aio.insecure_channel(address, options=options)
    name = server_name or Target.parse(address).server_name
    return ReloadingChannel(address, [*options, *tls_name(name)], files)


def tls_name(server_name: str | None) -> list[tuple[str, str | int]]:
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


class ReloadingChannel(grpc.aio.Channel):
    """A mutual-TLS channel that follows its certificate files: after they change (and
    make a valid pair) the next call goes over a new channel with the new identity, while
    calls already on the old one finish there. Stubs hold this object, never the inner
    channel, so a rotation needs no new stub."""

    def __init__(self, address: str, options: list[tuple[str, Any]], files: tls.TlsFiles) -> None:
        self._address = address
        self._options = options
        self._reloading = tls.Reloading(files)
        self._current = self._open(self._reloading.identity)
        self._checked = time.monotonic()
        self._retiring: set[asyncio.Task[None]] = set()

    def _open(self, identity: tls.Identity) -> grpc.aio.Channel:
        credentials = tls.channel_credentials(identity)
        return grpc.aio.secure_channel(self._address, credentials, options=self._options)

    def current(self) -> grpc.aio.Channel:
        now = time.monotonic()
        if now - self._checked >= tls.RELOAD_CHECK_S:
            self._checked = now
            identity = self._reloading.changed()
            if identity is not None:
                retired, self._current = self._current, self._open(identity)
                task = asyncio.get_running_loop().create_task(retired.close(RETIRED_GRACE_S))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        return self._current

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_stream", method, args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self._current.close(grace)
        for task in list(self._retiring):
            task.cancel()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


class _Following:
    """A stub's multi-callable that calls through the channel's current inner channel."""

    def __init__(
        self,
        owner: ReloadingChannel,
        kind: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._owner, self._kind, self._method = owner, kind, method
        self._args, self._kwargs = args, kwargs
        self._inner: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inner = self._owner.current()
        if inner is not self._inner:
            make = getattr(inner, self._kind)
            self._callable = make(self._method, *self._args, **self._kwargs)
            self._inner = inner
        return self._callable(*args, **kwargs)


def deadline(context: grpc.aio.ServicerContext | None, budget_s: float) -> float:
    """The timeout for a downstream call: our budget, never past the caller's own deadline."""
    if context is None:
        return budget_s
    remaining = context.time_remaining()
    if remaining is None:
        return budget_s
    return max(0.001, min(budget_s, remaining))
