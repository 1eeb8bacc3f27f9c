"""Client of the embedding service (Triton): the towers' vectors for a given model version.

Every call has a deadline; a call that finds Triton UNAVAILABLE (restarting, overloaded,
the version still loading) is retried with backoff while the deadline allows. Readiness is
asked per model and version, never with the server-wide ready flag, which says nothing
about the version a caller needs. A call with more rows than the tower's configured batch
limit goes to Triton in batches of that many (the limit is read from Triton once per
tower), so callers never need to know it.

The address may name several Triton replicas (shared/targets.py): inference is spread over
them, while loading, unloading and asking whether a version is ready go to every replica
the address names at that moment. A replica that is down is left out (a publish does not
wait for it): it loads the versions the shared model repository lists when it starts, before
it listens, so it never takes a call for a version it lacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from shared import tls
from shared.clients import OPTIONS, tls_name
from shared.config import CONTROL_KEY_HEADER
from shared.targets import Target

log = logging.getLogger(__name__)

USER_TOWER = "user_tower"
ITEM_TOWER = "item_tower"
OUTPUT = "embedding"
_RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED")

T = TypeVar("T")


class EmbeddingUnavailable(RuntimeError):
    """No vectors from Triton (down, past the deadline, or the version is not loaded);
    callers fall back or report UNAVAILABLE."""


def _is_retryable(error: InferenceServerException) -> bool:
    return str(error.status()) in _RETRYABLE


def _input(name: str, values: np.ndarray, datatype: str) -> InferInput:
    tensor = InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


def _down(error: BaseException) -> bool:
    """Whether a replica's error means it is down. Triton also answers UNAVAILABLE when a
    call lacks the model-control key (`This protocol is restricted ...`): a refusal."""
    return (
        isinstance(error, InferenceServerException)
        and str(error.status()) == "StatusCode.UNAVAILABLE"
        and "restricted" not in (error.message() or "")
    )


class EmbeddingClient:
    """Build it inside the running event loop (it owns a grpc.aio channel). `control_key`:
    what loads and unloads send when Triton restricts its model-control API
    (shared/config.triton_control_key)."""

    def __init__(
        self,
        address: str,
        timeout_s: float = 1.0,
        attempts: int = 3,
        backoff_s: float = 0.01,
        control_key: str = "",
    ) -> None:
        self.address = address
        self._control = (
            {f"triton-grpc-protocol-{CONTROL_KEY_HEADER}": control_key} if control_key else None
        )
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._max_batch: dict[str, int] = {}
        self._target = Target.parse(address)
        # Mutual TLS with this process's identity when it has one, followed through rotation.
        files = tls.files_for_calls()
        self._reloading = tls.Reloading(files) if files else None
        self._checked = time.monotonic()
        self._retired: list[InferenceServerClient] = []
        # A list of replicas or a DNS name too: calls are spread over them (shared/targets.py).
        self._spread = self._open(address)
        self._replicas: dict[str, InferenceServerClient] = {}  # by endpoint, for control

    def _open(self, address: str) -> InferenceServerClient:
        if self._reloading is None:
            return InferenceServerClient(address, channel_args=OPTIONS)
        credentials = tls.channel_credentials(self._reloading.identity)
        # A replica's endpoint is an IP; its certificate carries the service's name.
        named = tls_name(self._target.server_name)
        return InferenceServerClient(address, creds=credentials, channel_args=OPTIONS + named)

    @property
    def _client(self) -> InferenceServerClient:
        """The client of the whole address; after a certificate rotation, new clients (the
        old ones are closed with this one)."""
        now = time.monotonic()
        if self._reloading is not None and now - self._checked >= tls.RELOAD_CHECK_S:
            self._checked = now
            if self._reloading.changed() is not None:
                self._retired += [self._spread, *self._replicas.values()]
                self._spread, self._replicas = self._open(self.address), {}
        return self._spread

    async def close(self) -> None:
        for client in [self._spread, *self._replicas.values(), *self._retired]:
            await client.close()

    def _replica(self, endpoint: str) -> InferenceServerClient:
        spread = self._client
        if not self._target.replicated:
            return spread
        client = self._replicas.get(endpoint)
        if client is None:
            client = self._replicas[endpoint] = self._open(endpoint)
        return client

    async def _on_every_replica(
        self, what: str, call: Callable[[InferenceServerClient], Awaitable[T]]
    ) -> list[T]:
        """`call` on each replica the address names now, all at once; those that are down
        are left out (logged), and none reachable is EmbeddingUnavailable."""
        endpoints = await asyncio.to_thread(self._target.endpoints)
        outcomes = await asyncio.gather(
            *(call(self._replica(e)) for e in endpoints), return_exceptions=True
        )
        answers: list[T] = []
        down: list[str] = []
        for endpoint, outcome in zip(endpoints, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                answers.append(outcome)
            elif _down(outcome):
                down.append(endpoint)
            else:
                raise outcome
        if down:
            log.warning("Triton replicas down, left out", extra={"what": what, "down": down})
        if not answers:
            raise EmbeddingUnavailable(f"{what}: no Triton replica answered ({', '.join(down)})")
        return answers

    async def _call(
        self, what: str, call: Callable[[float], Awaitable[T]], timeout_s: float | None
    ) -> T:
        budget = self.timeout_s if timeout_s is None else timeout_s
        give_up = time.monotonic() + budget
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await call(remaining)
            except InferenceServerException as error:
                # Not retryable (a retired version is NOT_FOUND): the caller falls back now.
                last_try = attempt == self.attempts or time.monotonic() + delay >= give_up
                if not _is_retryable(error) or last_try:
                    raise EmbeddingUnavailable(f"{what}: {error.message()}") from error
            await asyncio.sleep(delay)
            delay *= 2
        raise EmbeddingUnavailable(f"{what}: no answer within {budget:.3f}s")

    async def ready(self, model: str, version: int, timeout_s: float | None = None) -> bool:
        """Whether every replica that is up has the version ready (one that is down takes
        no calls, and loads it when it starts)."""
        if not self._target.replicated:
            return await self._ready_on(self._client, model, version, timeout_s)
        budget = self.timeout_s if timeout_s is None else timeout_s

        async def ask(client: InferenceServerClient) -> bool:
            return bool(await client.is_model_ready(model, str(version), client_timeout=budget))

        try:
            return all(await self._on_every_replica(f"{model} v{version} ready", ask))
        except (EmbeddingUnavailable, InferenceServerException):
            return False

    async def _ready_on(
        self, client: InferenceServerClient, model: str, version: int, timeout_s: float | None
    ) -> bool:
        try:
            return bool(
                await self._call(
                    f"{model} v{version} ready",
                    lambda t: client.is_model_ready(model, str(version), client_timeout=t),
                    timeout_s,
                )
            )
        except (EmbeddingUnavailable, InferenceServerException):
            return False

    async def load(self, model: str, timeout_s: float = 300.0) -> None:
        """(Re)loads a model with the versions its config lists now, on every replica."""
        await self._on_every_replica(
            f"load {model}",
            lambda client: client.load_model(
                model, headers=self._control, client_timeout=timeout_s
            ),
        )

    async def unload(self, model: str, timeout_s: float = 60.0) -> None:
        await self._on_every_replica(
            f"unload {model}",
            lambda client: client.unload_model(
                model, headers=self._control, client_timeout=timeout_s
            ),
        )

    async def max_batch(self, model: str, timeout_s: float | None = None) -> int:
        """The most rows Triton takes in one request to `model` (its max_batch_size)."""
        known = self._max_batch.get(model)
        if known is None:
            reply = await self._call(
                f"{model} config",
                lambda t: self._client.get_model_config(model, client_timeout=t),
                timeout_s,
            )
            known = self._max_batch[model] = max(1, int(reply.config.max_batch_size))
        return known

    async def _infer(
        self,
        model: str,
        version: int,
        tensors: list[tuple[str, np.ndarray, str]],
        timeout_s: float | None,
    ) -> np.ndarray:
        """One output row per input row; (name, rows, datatype) tensors split into batches
        the tower accepts, all within one deadline."""
        give_up = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        rows = len(tensors[0][1])
        batch = await self.max_batch(model, give_up - time.monotonic()) if rows > 1 else 1
        parts = []
        for start in range(0, max(rows, 1), batch):
            inputs = [
                _input(name, rows_[start : start + batch], kind) for name, rows_, kind in tensors
            ]
            parts.append(await self._infer_batch(model, version, inputs, give_up))
        return np.concatenate(parts)

    async def _infer_batch(
        self, model: str, version: int, inputs: list[InferInput], give_up: float
    ) -> np.ndarray:
        async def attempt(remaining: float) -> np.ndarray:
            result = await self._client.infer(
                model, inputs, model_version=str(version), client_timeout=remaining
            )
            output = result.as_numpy(OUTPUT)
            if output is None:
                raise EmbeddingUnavailable(f"{model} v{version} returned no {OUTPUT!r}")
            return np.asarray(output, dtype=np.float32)

        return await self._call(f"{model} v{version}", attempt, give_up - time.monotonic())

    async def user_vectors(
        self,
        version: int,
        user_rows: np.ndarray,
        history_rows: np.ndarray,
        history_weights: np.ndarray,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """One vector per user: user_rows [B,1] int64, history [B,L] (left-padded with 0)."""
        tensors: list[tuple[str, np.ndarray, str]] = [
            ("user_row", np.ascontiguousarray(user_rows, dtype=np.int64), "INT64"),
            ("history_rows", np.ascontiguousarray(history_rows, dtype=np.int64), "INT64"),
            ("history_weights", np.ascontiguousarray(history_weights, dtype=np.float32), "FP32"),
        ]
        return await self._infer(USER_TOWER, version, tensors, timeout_s)

    async def item_vectors(
        self,
        version: int,
        item_rows: np.ndarray,
        content: np.ndarray,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """One vector per item: item_rows [B,1] int64 (0 = unknown to the model), content [B,D]."""
        tensors: list[tuple[str, np.ndarray, str]] = [
            ("item_row", np.ascontiguousarray(item_rows, dtype=np.int64), "INT64"),
            ("content", np.ascontiguousarray(content, dtype=np.float32), "FP32"),
        ]
        return await self._infer(ITEM_TOWER, version, tensors, timeout_s)
