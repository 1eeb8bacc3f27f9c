"""Prometheus metrics shared by every service, served on an HTTP metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def serve_metrics(host: str, port: int) -> None:
    """Starts the /metrics HTTP endpoint in a daemon thread; port 0 means no endpoint."""
    if port:
        start_http_server(port, addr=host)
