"""The embedding service is a real Triton Inference Server (the `tritonserver` bundled in
the nvidia-pytriton wheel) serving exported TorchScript towers through the Python backend.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from services.embedding.config import EmbeddingConfig
from services.embedding.runtime import prepare, server_command
from services.trainer.two_tower import TowerConfig, TwoTowerModel, export_towers, tower_io
from shared import tls
from shared.embedding_client import ITEM_TOWER, USER_TOWER, EmbeddingClient
from shared.triton_repository import TOWERS, Repository, model_config, read_config
from suite.certs import Authority, Issued
from tests.conftest import HOST, free_port
from tests.unit.test_k8s import TRITON_METRICS

TOWER = TowerConfig(dim=16, content_dim=12, content_hidden=16, history_len=6, feedforward=16)
USERS, ITEMS = 5, 9

if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
    # nvidia-pytriton ships tritonserver for Linux only; everywhere else this cannot run.
    pytest.skip("no tritonserver build for this platform", allow_module_level=True)


def _model(seed: int) -> TwoTowerModel:
    torch.manual_seed(seed)
    content = torch.randn(ITEMS, TOWER.content_dim)
    content[0] = 0
    model = TwoTowerModel(USERS, ITEMS, content, TOWER)
    model.eval()
    return model


# Triton restricts its model-control API to this key, as the Kubernetes manifests have it.
CONTROL_KEY = "test-control-key"


@dataclass
class Triton:
    address: str
    repository: Repository
    exports: dict[int, dict[str, Path]]
    process: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int


def _publish(triton: Triton, version: int, versions: list[int]) -> None:
    io = tower_io(TOWER)
    for tower in TOWERS:
        triton.repository.add_version(tower, version, triton.exports[version][tower])
        triton.repository.set_versions(tower, io[tower], versions)


async def _load_all(client: EmbeddingClient) -> None:
    for tower in TOWERS:
        await client.load(tower)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triton]:
    root = tmp_path_factory.mktemp("triton")
    exports = {v: export_towers(_model(v), root / f"export-{v}") for v in (1, 2)}
    repository = Repository(root / "repository")
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    key_file = root / "control-key"
    key_file.write_text(CONTROL_KEY + "\n")
    env = dict(
        os.environ,
        RECSYS_DATA_DIR=str(root),
        RECSYS_EMBEDDING_PORT=str(port),
        RECSYS_EMBEDDING_HTTP_PORT=str(http_port),
        RECSYS_EMBEDDING_METRICS_PORT=str(metrics_port),
        RECSYS_EMBEDDING_REPOSITORY=str(repository.root),
        RECSYS_TRITON_CONTROL_KEY_FILE=str(key_file),
    )
    command = server_command(EmbeddingConfig.from_env(env), env)
    process = subprocess.Popen(
        command.argv, env=command.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    triton = Triton(f"{HOST}:{port}", repository, exports, process, http_port, metrics_port)
    try:
        _publish(triton, 1, [1])
        asyncio.run(_with_client(triton.address, _wait_and_load))
        yield triton
    finally:
        process.terminate()
        process.wait(30)


def _stubs(triton: Triton, version: int) -> set[int]:
    """The Python-backend stub processes serving `version` of either tower."""
    paths = {str(triton.repository.version_dir(t, version) / "model.py") for t in TOWERS}
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(a.decode(errors="replace") in paths for a in arguments):
            found.add(int(entry.name))
    return found


async def _with_client(address: str, body: object, control_key: str = CONTROL_KEY) -> object:
    client = EmbeddingClient(address, timeout_s=10.0, control_key=control_key)
    try:
        return await body(client)  # type: ignore[operator]
    finally:
        await client.close()


async def _wait_and_load(client: EmbeddingClient) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await _load_all(client)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def _user_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, USERS, size=(batch, 1))
    history = rng.integers(0, ITEMS, size=(batch, TOWER.history_len))
    history[:, : TOWER.history_len // 2] = 0  # left padding
    weights = rng.random((batch, TOWER.history_len)).astype(np.float32)
    return users.astype(np.int64), history.astype(np.int64), weights


def _item_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, ITEMS, size=(batch, 1)).astype(np.int64)
    return rows, rng.standard_normal((batch, TOWER.content_dim)).astype(np.float32)


def _local(path: Path, *inputs: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return np.asarray(module(*(torch.from_numpy(x) for x in inputs)).numpy())


def test_triton_serves_the_exported_towers_exactly(triton: Triton) -> None:
    users, history, weights = _user_inputs(7)
    rows, content = _item_inputs(5)

    async def body(client: EmbeddingClient) -> tuple[np.ndarray, np.ndarray]:
        return (
            await client.user_vectors(1, users, history, weights),
            await client.item_vectors(1, rows, content),
        )

    served_users, served_items = asyncio.run(_with_client(triton.address, body))  # type: ignore[misc]
    np.testing.assert_allclose(
        served_users, _local(triton.exports[1]["user_tower"], users, history, weights), atol=1e-5
    )
    np.testing.assert_allclose(
        served_items, _local(triton.exports[1]["item_tower"], rows, content), atol=1e-5
    )
    assert served_users.shape == (7, TOWER.dim)
    np.testing.assert_allclose(np.linalg.norm(served_items, axis=1), 1.0, atol=1e-4)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(triton: Triton) -> None:
    users, history, weights = _user_inputs(64, seed=3)
    expected = _local(triton.exports[1]["user_tower"], users, history, weights)

    async def body(client: EmbeddingClient) -> list[np.ndarray]:
        calls = [
            client.user_vectors(1, users[i : i + 1], history[i : i + 1], weights[i : i + 1])
            for i in range(64)
        ]
        return list(await asyncio.gather(*calls))

    answers = asyncio.run(_with_client(triton.address, body))
    np.testing.assert_allclose(np.concatenate(answers), expected, atol=1e-5)  # type: ignore[arg-type]


def test_model_control_needs_the_key_and_health_answers_over_http(triton: Triton) -> None:
    async def load_without_key(client: EmbeddingClient) -> None:
        await client.load(USER_TOWER)

    with pytest.raises(Exception, match="(?i)restricted|unavailable"):
        asyncio.run(_with_client(triton.address, load_without_key, control_key=""))
    http = f"http://{HOST}:{triton.http_port}"
    with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=5) as ready:
        assert ready.status == 200
    refused = urllib.request.Request(f"{http}/v2/repository/models/{USER_TOWER}/load", b"{}")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(refused, timeout=5)
    # The same load with the key goes through.
    asyncio.run(_with_client(triton.address, load_without_key))


def test_triton_exports_the_queue_metrics_that_the_monitoring_uses(triton: Triton) -> None:
    users, history, weights = _user_inputs(1)

    async def body(client: EmbeddingClient) -> np.ndarray:
        return await client.user_vectors(1, users, history, weights)

    asyncio.run(_with_client(triton.address, body))
    url = f"http://{HOST}:{triton.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        exported = {
            line.split("{")[0].split(" ")[0]
            for line in answer.read().decode().splitlines()
            if line and not line.startswith("#")
        }
    assert set(TRITON_METRICS) <= exported


def test_readiness_is_per_model_version(triton: Triton) -> None:
    async def body(client: EmbeddingClient) -> tuple[bool, bool, bool]:
        return (
            await client.ready(USER_TOWER, 1),
            await client.ready(ITEM_TOWER, 1),
            await client.ready(USER_TOWER, 7),
        )

    assert asyncio.run(_with_client(triton.address, body)) == (True, True, False)


def test_adding_a_version_never_interrupts_the_live_one(triton: Triton) -> None:
    users, history, weights = _user_inputs(1, seed=5)
    v1 = _local(triton.exports[1]["user_tower"], users, history, weights)
    v2 = _local(triton.exports[2]["user_tower"], users, history, weights)
    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def keep_calling() -> None:
        nonlocal calls

        async def loop(client: EmbeddingClient) -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    answer = await client.user_vectors(1, users, history, weights)
                    if not np.allclose(answer, v1, atol=1e-5):
                        failures.append("version 1 answered with other weights")
                except Exception as error:
                    failures.append(repr(error))
                calls += 1

        asyncio.run(_with_client(triton.address, loop))

    serving_v1 = _stubs(triton, 1)
    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        _publish(triton, 2, [1, 2])
        asyncio.run(_with_client(triton.address, _load_all))

        async def on_v2(client: EmbeddingClient) -> np.ndarray:
            return await client.user_vectors(2, users, history, weights)

        answer_v2 = asyncio.run(_with_client(triton.address, on_v2))
    finally:
        stop.set()
        caller.join(30)
    assert not failures
    assert calls > 10
    np.testing.assert_allclose(answer_v2, v2, atol=1e-5)  # type: ignore[arg-type]
    # Version 1 was not reloaded beside version 2: the same processes still serve it.
    assert len(serving_v1) == len(TOWERS)
    assert _stubs(triton, 1) == serving_v1

    # Retiring version 1: it stops answering, version 2 keeps going.
    for tower in TOWERS:
        triton.repository.set_versions(tower, tower_io(TOWER)[tower], [2])
    asyncio.run(_with_client(triton.address, _load_all))

    async def after(client: EmbeddingClient) -> tuple[bool, bool]:
        return await client.ready(USER_TOWER, 1), await client.ready(USER_TOWER, 2)

    assert asyncio.run(_with_client(triton.address, after)) == (False, True)


def test_an_unknown_version_fails_fast_as_unavailable(triton: Triton) -> None:
    from shared.embedding_client import EmbeddingUnavailable

    users, history, weights = _user_inputs(1)

    async def body(client: EmbeddingClient) -> None:
        await client.user_vectors(99, users, history, weights, timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(EmbeddingUnavailable):
        asyncio.run(_with_client(triton.address, body))
    assert time.monotonic() - started < 2.0


def test_the_bundled_server_is_set_up_from_the_wheel(tmp_path: Path) -> None:
    tree = prepare(tmp_path)
    assert (tree / "bin" / "tritonserver").exists()
    assert (tree / "backends" / "python" / "triton_python_backend_stub").exists()
    assert (tree / "backends" / "python" / "libtriton_python.so").exists()
    assert prepare(tmp_path) == tree  # a second start reuses the prepared tree


@pytest.mark.parametrize("tower", TOWERS)
def test_production_libtorch_config_matches_the_exported_model(tower: str, tmp_path: Path) -> None:
    """The official Triton image's PyTorch backend runs the same model.pt: its config must
    name the module's forward arguments, in order, with the dtypes and shapes it takes."""
    exported = export_towers(_model(1), tmp_path)[tower]
    production = Repository(tmp_path / "production", variant="pytorch_libtorch")
    production.add_version(tower, 1, exported)
    production.set_versions(tower, tower_io(TOWER)[tower], [1])
    config = read_config(production.root / tower / "config.pbtxt")
    assert config.platform == "pytorch_libtorch" and not config.backend
    assert [g.kind for g in config.instance_group] == [model_config_kind_gpu()]
    assert (production.root / tower / "1" / "model.pt").exists()
    assert not (production.root / tower / "1" / "model.py").exists()

    module = torch.jit.load(str(exported))
    arguments = [a.name for a in module.forward.schema.arguments[1:]]  # type: ignore[attr-defined]
    assert [i.name for i in config.input] == arguments
    batch = 3
    dtypes = {"TYPE_INT64": torch.int64, "TYPE_FP32": torch.float32}
    from tritonclient.grpc import model_config_pb2 as mc

    inputs = [
        torch.zeros((batch, *i.dims), dtype=dtypes[mc.DataType.Name(i.data_type)])
        for i in config.input
    ]
    with torch.inference_mode():
        output = module(*inputs)
    (declared,) = config.output
    assert mc.DataType.Name(declared.data_type) == "TYPE_FP32" and output.dtype == torch.float32
    assert tuple(output.shape) == (batch, *declared.dims)
    assert config.max_batch_size >= 1 and config.dynamic_batching is not None


def model_config_kind_gpu() -> int:
    from tritonclient.grpc import model_config_pb2 as mc

    return int(mc.ModelInstanceGroup.KIND_GPU)


def test_local_config_uses_the_python_backend_on_cpu() -> None:
    config = model_config(USER_TOWER, tower_io(TOWER)[USER_TOWER], [3, 1])
    assert config.backend == "python"
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0


def test_with_tls_triton_takes_only_the_suites_certificates_and_http_only_probes(
    tmp_path: Path,
) -> None:
    suite, stranger = Authority.new("recsys CA"), Authority.new("someone else's CA")
    server = suite.issue(tmp_path / "embedding", "embedding")
    caller, outsider = (
        suite.issue(tmp_path / "gateway", "gateway"),
        stranger.issue(tmp_path / "outsider", "gateway"),
    )
    outsider.ca.write_bytes(suite.pem())  # it trusts Triton; Triton does not trust it
    repository = Repository(tmp_path / "repository")
    exports = {1: export_towers(_model(1), tmp_path / "export-1")}
    port, http_port = free_port(), free_port()
    env = dict(
        os.environ,
        RECSYS_DATA_DIR=str(tmp_path),
        RECSYS_EMBEDDING_PORT=str(port),
        RECSYS_EMBEDDING_HTTP_PORT=str(http_port),
        RECSYS_EMBEDDING_METRICS_PORT="0",
        RECSYS_EMBEDDING_REPOSITORY=str(repository.root),
        **server.env("RECSYS_EMBEDDING_TLS_"),
    )
    command = server_command(EmbeddingConfig.from_env(env), env)
    process = subprocess.Popen(
        command.argv, env=command.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    triton = Triton(f"{HOST}:{port}", repository, exports, process, http_port, 0)
    users, history, weights = _user_inputs(2)

    async def infer(client: EmbeddingClient) -> np.ndarray:
        return await client.user_vectors(1, users, history, weights)

    def as_caller(issued: Issued | None, body: object) -> object:
        tls.use_for_calls(tls.TlsFiles(issued.cert, issued.key, issued.ca) if issued else None)
        try:
            return asyncio.run(_with_client(triton.address, body, control_key=""))
        finally:
            tls.use_for_calls(None)

    try:
        _publish(triton, 1, [1])
        as_caller(caller, _wait_and_load)
        vectors = as_caller(caller, infer)
        assert np.asarray(vectors).shape == (2, TOWER.dim)
        for who in (None, outsider):
            with pytest.raises(Exception):  # noqa: B017 - refused at the handshake, however named
                as_caller(who, infer)
        http = f"http://{HOST}:{http_port}"
        with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=5) as ready:
            assert ready.status == 200
        for path in (f"/v2/models/{USER_TOWER}", "/v2/repository/index"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(urllib.request.Request(f"{http}{path}", b"{}"), timeout=5)
    finally:
        process.terminate()
        process.wait(30)
