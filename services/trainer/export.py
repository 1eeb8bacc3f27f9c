"""A stored model version as a Triton model repository for the official Triton image:
the PyTorch backend (`platform: "pytorch_libtorch"`) on GPU instances, the same TorchScript
`model.pt` that the Python backend serves locally."""

from __future__ import annotations

import tempfile
from pathlib import Path

from services.trainer.model_training import load_trained
from services.trainer.two_tower import export_towers, tower_io
from shared.model_store import ModelStore
from shared.triton_repository import GPU_SERVING, TOWERS, Repository, Serving


def export_repository(
    store: ModelStore,
    out: Path,
    version: int | None = None,
    serving: Serving = GPU_SERVING,
) -> int:
    """Writes `<out>/<tower>/config.pbtxt` and `<out>/<tower>/<version>/model.pt`; returns
    the version written (the live one unless given)."""
    if version is None:
        live = store.live()
        if live is None:
            raise ValueError("no live version to export; pass a version")
        version = live.version
    trained = load_trained(store.version_dir(version) / "weights")
    repository = Repository(out, variant="pytorch_libtorch", serving=serving)
    io = tower_io(trained.tower)
    with tempfile.TemporaryDirectory() as scratch:
        paths = export_towers(trained.model, Path(scratch))
        for tower in TOWERS:
            repository.add_version(tower, version, paths[tower])
            repository.set_versions(tower, io[tower], [version])
    return version
