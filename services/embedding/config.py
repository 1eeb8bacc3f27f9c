from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.config import (
    DEFAULT_HOST,
    DEFAULT_METRICS_PORTS,
    DEFAULT_PORTS,
    Env,
    data_root,
    model_dir,
    triton_control_key,
)
from shared.tls import TlsFiles, tls_files

PREFIX = "RECSYS_EMBEDDING_"


@dataclass(frozen=True)
class EmbeddingConfig:
    host: str
    port: int
    metrics_port: int  # Triton's own Prometheus endpoint; 0 turns it off
    # Triton's HTTP endpoint, for Kubernetes probes of /v2/health/ready and /live; 0: off.
    http_port: int
    runtime_dir: Path  # where the bundled server is prepared to run
    repository: Path
    grace_s: float
    torch_threads: int
    log_verbose: int
    control_key: str  # "": Triton's model-control API is open (shared/config.triton_control_key)
    tls: TlsFiles | None = None  # Triton's gRPC endpoint with mutual TLS (shared/tls.py)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmbeddingConfig:
        env = Env(PREFIX, environ)
        return cls(
            host=env.string("HOST", DEFAULT_HOST),
            port=env.integer("PORT", DEFAULT_PORTS["embedding"], minimum=1, maximum=65535),
            metrics_port=env.integer(
                "METRICS_PORT", DEFAULT_METRICS_PORTS["embedding"], minimum=0, maximum=65535
            ),
            http_port=env.integer("HTTP_PORT", 0, minimum=0, maximum=65535),
            runtime_dir=env.path("DATA_DIR", data_root(environ) / "embedding"),
            repository=env.path("REPOSITORY", model_dir(environ) / "triton"),
            grace_s=env.number("SHUTDOWN_GRACE_S", 10.0),
            # Threads per tower instance; the suite shares few cores between its services.
            torch_threads=env.integer("TORCH_THREADS", 1, minimum=1, maximum=256),
            log_verbose=env.integer("LOG_VERBOSE", 0, minimum=0, maximum=3),
            control_key=triton_control_key(environ),
            tls=tls_files("embedding", environ),
        )
