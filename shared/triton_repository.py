"""The Triton model repository of the two towers: `<tower>/config.pbtxt` and
`<tower>/<version>/model.pt` (TorchScript), one numbered directory per model version.

Two variants of the same layout and the same `model.pt`:
- "python": what runs here, on the bundled server that has only the Python backend; each
  version directory also holds `model.py` (triton_python_model.py) which loads the TorchScript;
- "pytorch_libtorch": for the official Triton image's PyTorch backend on GPU nodes.

Which versions Triton serves is the config's version policy: publishing a version adds it
to the list and reloads the model, retiring one removes it (explicit model control).
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

TOWERS = ("user_tower", "item_tower")
MODEL_FILE = "model.pt"
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
Variant = Literal["python", "pytorch_libtorch"]
VARIANTS: tuple[Variant, ...] = ("python", "pytorch_libtorch")


class TensorLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def data_type(self) -> str: ...
    @property
    def dims(self) -> tuple[int, ...]: ...


class TowerIOLike(Protocol):
    @property
    def inputs(self) -> Sequence[TensorLike]: ...
    @property
    def outputs(self) -> Sequence[TensorLike]: ...


@dataclass(frozen=True)
class Serving:
    """How a tower is served: batch limit, how long a request may wait for others to batch
    with, and instances per device."""

    max_batch_size: int = 256
    queue_delay_us: int = 200
    instances: int = 1


# A GPU takes bigger batches than the CPU here, and waits less for them to form.
GPU_SERVING = Serving(max_batch_size=1024, queue_delay_us=100, instances=1)


def _data_type(spec: TensorLike) -> int:
    return int(mc.DataType.Value(spec.data_type))


def model_config(
    tower: str,
    io: TowerIOLike,
    versions: Iterable[int],
    variant: Variant = "python",
    serving: Serving = Serving(),
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=tower, max_batch_size=serving.max_batch_size)
    if variant == "python":
        config.backend = "python"
        kind = mc.ModelInstanceGroup.KIND_CPU
    else:
        config.platform = "pytorch_libtorch"
        config.default_model_filename = MODEL_FILE
        kind = mc.ModelInstanceGroup.KIND_GPU
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    for spec in io.inputs:
        config.input.add(name=spec.name, data_type=_data_type(spec), dims=spec.dims)
    for spec in io.outputs:
        config.output.add(name=spec.name, data_type=_data_type(spec), dims=spec.dims)
    config.dynamic_batching.max_queue_delay_microseconds = serving.queue_delay_us
    config.instance_group.add(count=serving.instances, kind=kind)
    return config


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@dataclass(frozen=True)
class Repository:
    root: Path
    variant: Variant = "python"
    serving: Serving = Serving()

    def version_dir(self, tower: str, version: int) -> Path:
        return self.root / tower / str(version)

    def add_version(self, tower: str, version: int, torchscript: Path) -> None:
        """Puts a version's files in place; Triton serves it once it is listed and loaded."""
        target = self.version_dir(tower, version)
        staging = target.with_name(f".{version}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(torchscript, staging / MODEL_FILE)
        if self.variant == "python":
            source = staging / "model.py"
            shutil.copyfile(PYTHON_MODEL, source)
            # The stub would otherwise write model.py's bytecode into the version directory
            # once it runs, and Triton takes a version directory changed since its load for
            # a new model: every later load_model restarted the stubs of the versions kept.
            py_compile.compile(
                str(source),
                cfile=importlib.util.cache_from_source(str(source)),
                dfile=str(target / "model.py"),
                doraise=True,
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)

    def versions_on_disk(self, tower: str) -> list[int]:
        directory = self.root / tower
        if not directory.exists():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def listed_versions(self, tower: str) -> list[int]:
        path = self.root / tower / "config.pbtxt"
        if not path.exists():
            return []
        return list(read_config(path).version_policy.specific.versions)

    def set_versions(self, tower: str, io: TowerIOLike, versions: Iterable[int]) -> None:
        """Lists the versions Triton should serve; takes effect at the next load_model."""
        config = model_config(tower, io, versions, self.variant, self.serving)
        (self.root / tower).mkdir(parents=True, exist_ok=True)
        _write_atomically(self.root / tower / "config.pbtxt", config_text(config))

    def remove_version(self, tower: str, version: int) -> None:
        shutil.rmtree(self.version_dir(tower, version), ignore_errors=True)
