"""A gRPC server's settings, read by every service under its own prefix: where it listens,
TLS (shared/tls.py), who may call (shared/access.py) and the limits on what one caller
may ask."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.access import AccessConfig
from shared.config import DEFAULT_HOST, DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ConfigError, Env
from shared.tls import TlsFiles, tls_files

# The largest message each service takes or sends (RECSYS_<SERVICE>_MAX_MESSAGE_BYTES).
# The gateway's must hold a full batch: 1,000 items or 10,000 events of ordinary size; the
# internal services' a page of 10,000 vectors of 384 dimensions (retrieval's export).
DEFAULT_MAX_MESSAGE_BYTES = {
    "gateway": 16 * 1024 * 1024,
    "features": 32 * 1024 * 1024,
    "retrieval": 32 * 1024 * 1024,
    "trainer": 4 * 1024 * 1024,
    "embedding": 32 * 1024 * 1024,
}
# Calls and streams a server runs at once before it answers RESOURCE_EXHAUSTED.
DEFAULT_MAX_CONCURRENT_RPCS = 1_000
DEFAULT_STREAM_IDLE_S = 300.0
CLIENT_CERT_MODES = ("required", "none")


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    metrics_port: int  # 0 turns the metrics endpoint off
    grace_s: float
    tls: TlsFiles | None = None  # None: plaintext
    # With TLS: whether a caller must present a certificate the CA signed. Always for the
    # internal services; the gateway's public port may leave callers to their tokens.
    client_cert_required: bool = True
    # With TLS, a plaintext port that serves only grpc.health (for Kubernetes probes, which
    # cannot present a client certificate); 0: none.
    health_port: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    stream_idle_s: float = 0.0  # a request stream silent this long is closed; 0: never
    access: AccessConfig = field(default_factory=AccessConfig)

    @classmethod
    def from_env(cls, env: Env, service: str) -> ServerConfig:
        port, metrics_port = DEFAULT_PORTS[service], DEFAULT_METRICS_PORTS[service]
        files = tls_files(service, env.environ)
        mode = env.string("TLS_CLIENT_CERT", "none" if service == "gateway" else "required")
        if mode not in CLIENT_CERT_MODES:
            raise ConfigError(f"{env.prefix}TLS_CLIENT_CERT={mode!r}: one of {CLIENT_CERT_MODES}")
        if mode == "none" and service != "gateway":
            raise ConfigError(
                f"{env.prefix}TLS_CLIENT_CERT=none: only the gateway's public port may take"
                " callers without a client certificate"
            )
        return cls(
            host=env.string("HOST", DEFAULT_HOST),
            port=env.integer("PORT", port, minimum=0, maximum=65535),
            metrics_port=env.integer("METRICS_PORT", metrics_port, minimum=0, maximum=65535),
            grace_s=env.number("SHUTDOWN_GRACE_S", 10.0),
            tls=files,
            client_cert_required=mode == "required",
            health_port=env.integer("HEALTH_PORT", 0, minimum=0, maximum=65535),
            max_message_bytes=env.integer(
                "MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES[service], minimum=1024
            ),
            max_concurrent_rpcs=env.integer(
                "MAX_CONCURRENT_RPCS", DEFAULT_MAX_CONCURRENT_RPCS, minimum=1
            ),
            stream_idle_s=env.number("STREAM_IDLE_S", DEFAULT_STREAM_IDLE_S),
            access=AccessConfig.from_env(env),
        )
