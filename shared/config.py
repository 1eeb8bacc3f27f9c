"""Config from prefixed environment variables, with defaults that run on one machine.

Every service reads a frozen dataclass at start; a bad value stops the service with a
message naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from shared.targets import BadTarget, Target

DEFAULT_HOST = "127.0.0.1"
DEFAULT_DATA_DIR = "var"
NO_ADDRESS = "none"  # a dependency's address when it is not deployed
# The one table of default ports: each service's gRPC port and its Prometheus endpoint's.
DEFAULT_PORTS = {
    "gateway": 50051,
    "features": 50052,
    "retrieval": 50053,
    "trainer": 50054,
    "embedding": 50055,
}
DEFAULT_METRICS_PORTS = {
    "gateway": 9151,
    "features": 9152,
    "retrieval": 9153,
    "trainer": 9154,
    "embedding": 9155,
}


def default_address(service: str) -> str:
    """Where `service` listens when nothing is configured: this machine, its default port."""
    return f"{DEFAULT_HOST}:{DEFAULT_PORTS[service]}"


class ConfigError(ValueError):
    pass


class Env:
    """Reads `<PREFIX><NAME>` variables, e.g. Env("RECSYS_GATEWAY_").integer("PORT", 50051)."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(self.prefix + name)
        return None if value is None or value.strip() == "" else value.strip()

    @property
    def environ(self) -> Mapping[str, str]:
        return self._environ

    def is_set(self, name: str) -> bool:
        return self._raw(name) is not None

    def string(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name}={value!r} is not an integer") from None
        if not minimum <= parsed <= maximum:
            raise ConfigError(f"{self.prefix}{name}={parsed} is outside [{minimum}, {maximum}]")
        return parsed

    def number(
        self, name: str, default: float, minimum: float = 0.0, maximum: float = math.inf
    ) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name}={value!r} is not a number") from None
        if not parsed >= minimum:
            raise ConfigError(f"{self.prefix}{name}={parsed} is below {minimum}")
        if parsed > maximum:
            raise ConfigError(f"{self.prefix}{name}={parsed} is above {maximum}")
        return parsed

    def numbers(
        self, name: str, default: tuple[float, ...], minimum: float = 0.0
    ) -> tuple[float, ...]:
        """A comma-separated list of numbers, each at least `minimum`."""
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = tuple(float(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"{self.prefix}{name}={value!r} is not a list of numbers") from None
        if not all(number >= minimum for number in parsed):
            raise ConfigError(f"{self.prefix}{name}={value!r} has a number below {minimum}")
        return parsed

    def path(self, name: str, default: Path) -> Path:
        return Path(self.string(name, str(default))).expanduser()

    def address(self, name: str, default: str) -> str:
        """A dependency's gRPC target: host:port, or its replicas (shared/targets.py)."""
        value = self.string(name, default)
        try:
            return Target.parse(value).text
        except BadTarget as error:
            raise ConfigError(f"{self.prefix}{name}: {error}") from None

    def optional_address(self, name: str, default: str) -> str:
        """A dependency's address, or "" when the variable says `none` (not deployed)."""
        if self.string(name, default).lower() == NO_ADDRESS:
            return ""
        return self.address(name, default)


# The key name of Triton's restricted model-control API (--grpc-restricted-protocol); a
# gRPC client sends it as the metadata `triton-grpc-protocol-<name>`.
CONTROL_KEY_HEADER = "recsys-model-control-key"


def triton_control_key(environ: Mapping[str, str] | None = None) -> str:
    """The key that Triton's model-control API asks for (RECSYS_TRITON_CONTROL_KEY_FILE, a
    file such as a mounted Secret, read at start): the embedding service makes Triton
    refuse loads and unloads without it, and the trainer sends it. "" (no file named):
    the API is open, as on loopback by default."""
    path = Env("RECSYS_", environ).string("TRITON_CONTROL_KEY_FILE", "")
    if not path:
        return ""
    try:
        key = Path(path).read_text().strip()
    except OSError as error:
        raise ConfigError(f"RECSYS_TRITON_CONTROL_KEY_FILE={path!r}: {error.strerror}") from None
    if not key or not all(c.isalnum() or c in "-_." for c in key):
        raise ConfigError(
            f"RECSYS_TRITON_CONTROL_KEY_FILE={path!r}: the key must be letters, digits, - _ ."
        )
    return key


def data_root(environ: Mapping[str, str] | None = None) -> Path:
    """The suite-wide data directory (RECSYS_DATA_DIR), under which each service has a folder."""
    return Env("RECSYS_", environ).path("DATA_DIR", Path(DEFAULT_DATA_DIR))


def model_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The model store shared by trainer, Triton and gateway (RECSYS_MODEL_DIR): trained
    versions, the Triton model repository and the pointer to the live version."""
    return Env("RECSYS_", environ).path("MODEL_DIR", data_root(environ) / "models")
