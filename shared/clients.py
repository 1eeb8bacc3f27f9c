"""Outbound gRPC: channels with sane options and deadlines on every call."""

from __future__ import annotations

import grpc

from shared.server import MAX_MESSAGE_BYTES
from shared.targets import channel_options

SIZES: list[tuple[str, str | int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]
OPTIONS: list[tuple[str, str | int]] = [*SIZES, *channel_options()]


def channel(address: str, health_checked: bool = False) -> grpc.aio.Channel:
    """A channel to a service's address: one instance, or replicas (shared/targets.py);
    `health_checked`: calls go only to endpoints whose health check says SERVING."""
    options = [*SIZES, *channel_options(health_checked)] if health_checked else OPTIONS
    return grpc.aio.insecure_channel(address, options=options)


def deadline(context: grpc.aio.ServicerContext | None, budget_s: float) -> float:
    """The timeout for a downstream call: our budget, never past the caller's own deadline."""
    if context is None:
        return budget_s
    remaining = context.time_remaining()
    if remaining is None:
        return budget_s
    return max(0.001, min(budget_s, remaining))
