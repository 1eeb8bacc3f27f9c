"""The two-tower retrieval model, one definition for training and serving.

The item tower maps (item row, 384-d MiniLM content vector) to an L2-normalised vector; the
user tower maps (user row, recent history) to one. Serving ranks items by the inner product
of the two, so everything the model knows, popularity included, lives in the vectors.

Rows come from a `Vocabulary`. Row 0 means "not seen in training": an item on row 0 is
represented by its content alone (which is how brand-new items become recommendable), a
user on row 0 by their history alone, and a history slot on row 0 is padding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.model_store import forgotten_id

UNKNOWN_ROW = 0
USER_TOWER_FILE = "user_tower.pt"
ITEM_TOWER_FILE = "item_tower.pt"
# New embedding rows start this small, so an item or user the model has not trained on yet
# is represented almost entirely by its content or its history.
NEW_ROW_STD = 0.01


class Vocabulary:
    """Append-only string id -> row mapping; row 0 is reserved for unknown ids and padding.

    `ids[i]` is the id on row `i + 1`, so a vocabulary of n ids has `n + 1` rows.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self.add(ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids) + 1

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def row(self, item_id: str) -> int:
        return self._rows.get(item_id, UNKNOWN_ROW)

    def rows(self, ids: Iterable[str]) -> npt.NDArray[np.int64]:
        get = self._rows.get
        return np.fromiter((get(i, UNKNOWN_ROW) for i in ids), dtype=np.int64)

    def add(self, ids: Iterable[str]) -> int:
        """Appends the ids not present yet, in order of first appearance; returns how many."""
        before = len(self._ids)
        for item_id in ids:
            if item_id not in self._rows:
                self._ids.append(item_id)
                self._rows[item_id] = len(self._ids)
        return len(self._ids) - before

    def forget(self, item_id: str) -> int:
        """Takes the id out, leaving its row unused; returns the row (0: it was not here)."""
        row = self._rows.pop(item_id, UNKNOWN_ROW)
        if row:
            placeholder = forgotten_id(row)
            self._ids[row - 1] = placeholder
            self._rows[placeholder] = row
        return row

    def to_json(self) -> str:
        return json.dumps({"ids": self._ids})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("a vocabulary is a JSON object with an 'ids' list of strings")
        if len(set(ids)) != len(ids):
            raise ValueError("a vocabulary must not repeat an id")
        return cls(ids)


@dataclass(frozen=True)
class TowerConfig:
    dim: int = 64
    content_dim: int = 384
    content_hidden: int = 128
    history_len: int = 50
    heads: int = 2
    layers: int = 2
    feedforward: int = 128
    dropout: float = 0.0
    temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if min(self.dim, self.content_dim, self.history_len, self.heads, self.layers) < 1:
            raise ValueError("dim, content_dim, history_len, heads and layers must be positive")
        if not 0.0 <= self.dropout < 1.0 or self.temperature <= 0.0:
            raise ValueError("dropout must be in [0, 1) and temperature positive")


@dataclass(frozen=True)
class TensorSpec:
    """One Triton tensor; dims leave out the batch dimension."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TowerIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def tower_io(config: TowerConfig) -> dict[str, TowerIO]:
    """The Triton inputs and output of each exported tower, named as their forward arguments."""
    embedding = (TensorSpec("embedding", "TYPE_FP32", (config.dim,)),)
    return {
        "user_tower": TowerIO(
            inputs=(
                TensorSpec("user_row", "TYPE_INT64", (1,)),
                TensorSpec("history_rows", "TYPE_INT64", (config.history_len,)),
                TensorSpec("history_weights", "TYPE_FP32", (config.history_len,)),
            ),
            outputs=embedding,
        ),
        "item_tower": TowerIO(
            inputs=(
                TensorSpec("item_row", "TYPE_INT64", (1,)),
                TensorSpec("content", "TYPE_FP32", (config.content_dim,)),
            ),
            outputs=embedding,
        ),
    }


TOWER_IO = tower_io(TowerConfig())


def _known_rows(rows: Tensor, table_size: int) -> Tensor:
    """Rows past the end of a table (ids newer than the model) read as row 0."""
    return torch.where(rows < table_size, rows, torch.zeros_like(rows))


class ItemEncoder(nn.Module):
    """An item's unnormalised representation: id embedding plus projected content.

    Shared by both towers, so history tokens and candidate items live in one space.
    """

    def __init__(self, n_items: int, config: TowerConfig) -> None:
        super().__init__()
        self.id_embedding = nn.Embedding(max(n_items, 1), config.dim, padding_idx=UNKNOWN_ROW)
        nn.init.normal_(self.id_embedding.weight, std=0.1)
        with torch.no_grad():
            self.id_embedding.weight[UNKNOWN_ROW].zero_()
        self.content_projection = nn.Sequential(
            nn.Linear(config.content_dim, config.content_hidden),
            nn.GELU(),
            nn.Linear(config.content_hidden, config.dim),
        )

    def forward(self, rows: Tensor, content: Tensor) -> Tensor:
        rows = _known_rows(rows, self.id_embedding.num_embeddings)
        return self.id_embedding(rows) + self.content_projection(content)


class EncoderLayer(nn.Module):
    """A pre-norm Transformer encoder layer (batch first).

    With `first_token_only`, only the first token's output is computed: the user tower reads
    nothing else from its last layer, and skipping the rest makes training several times
    faster without changing the result.
    """

    def __init__(self, config: TowerConfig, first_token_only: bool) -> None:
        super().__init__()
        self.heads = config.heads
        self.first_token_only = first_token_only
        self.attention_norm = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.attention_out = nn.Linear(config.dim, config.dim)
        self.feedforward_norm = nn.LayerNorm(config.dim)
        self.feedforward = nn.Sequential(
            nn.Linear(config.dim, config.feedforward),
            nn.GELU(),
            nn.Linear(config.feedforward, config.dim),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, attention_bias: Tensor) -> Tensor:
        """tokens [B, T, dim]; attention_bias [B, 1, 1, T], -inf on masked keys."""
        batch, length, dim = tokens.shape
        qkv = self.qkv(self.attention_norm(tokens)).view(batch, length, 3, self.heads, -1)
        # unbind and the fused attention: indexing a permuted qkv made the backward pass zero
        # and add three full-size gradients, and cost twice the time of this.
        query, key, value = qkv.unbind(2)
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        if self.first_token_only:
            query = query[:, :, :1]
            tokens = tokens[:, :1]
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_bias)
        attended = attended.transpose(1, 2).reshape(batch, -1, dim)
        tokens = tokens + self.dropout(self.attention_out(attended))
        return tokens + self.dropout(self.feedforward(self.feedforward_norm(tokens)))


class ItemTower(nn.Module):
    def __init__(self, encoder: ItemEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, item_row: Tensor, content: Tensor) -> Tensor:
        """item_row [B, 1] int64, content [B, content_dim] float32 -> [B, dim], unit norm."""
        return F.normalize(self.encoder(item_row[:, 0], content), dim=-1)


class UserTower(nn.Module):
    """A Transformer over [user token, history...]; the user token's output is the vector.

    The user token (a learned start vector plus the user's embedding, none for row 0) is
    never masked, so an empty history still gives a finite vector. History tokens are the
    items' representations plus a position (the last slot is the most recent) and the
    event's strength; the known items' content rides along as a buffer so a request only
    needs rows and weights.
    """

    if TYPE_CHECKING:  # a registered buffer; TorchScript must not see a class annotation
        item_content: Tensor

    def __init__(
        self, encoder: ItemEncoder, n_users: int, item_content: Tensor, config: TowerConfig
    ) -> None:
        super().__init__()
        self.item_encoder = encoder
        self.register_buffer("item_content", _content_buffer(item_content, config))
        self.user_embedding = nn.Embedding(max(n_users, 1), config.dim, padding_idx=UNKNOWN_ROW)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        with torch.no_grad():
            self.user_embedding.weight[UNKNOWN_ROW].zero_()
        self.user_token = nn.Parameter(torch.randn(config.dim) * 0.1)
        self.positions = nn.Parameter(torch.randn(config.history_len, config.dim) * 0.1)
        self.strength = nn.Linear(1, config.dim)
        self.layers = nn.ModuleList(
            [EncoderLayer(config, i == config.layers - 1) for i in range(config.layers)]
        )
        self.output_norm = nn.LayerNorm(config.dim)
        self.output = nn.Linear(config.dim, config.dim)

    def forward(self, user_row: Tensor, history_rows: Tensor, history_weights: Tensor) -> Tensor:
        """user_row [B, 1], history_rows [B, L] (left-padded with 0), history_weights [B, L]."""
        n_items = int(self.item_content.shape[0])
        history_rows = _known_rows(history_rows, n_items)
        users = _known_rows(user_row[:, 0], int(self.user_embedding.num_embeddings))
        first = (self.user_token + self.user_embedding(users)).unsqueeze(1)
        # A batch repeats popular items many times: project each distinct one once.
        distinct, where = torch.unique(history_rows, return_inverse=True)
        items = self.item_encoder(distinct, self.item_content[distinct])[where]
        strength = self.strength(history_weights.unsqueeze(-1))
        tokens = torch.cat([first, items + self.positions + strength], dim=1)
        padding = history_rows == 0
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding], dim=1)
        bias = torch.zeros_like(padding, dtype=tokens.dtype).masked_fill(padding, -math.inf)
        bias = bias[:, None, None, :]
        for layer in self.layers:
            tokens = layer(tokens, bias)
        return F.normalize(self.output(self.output_norm(tokens[:, 0])), dim=-1)


def _content_buffer(item_content: Tensor, config: TowerConfig) -> Tensor:
    if item_content.dim() != 2 or item_content.shape[1] != config.content_dim:
        raise ValueError(f"item content must be [n_items, {config.content_dim}]")
    content = item_content.detach().to(torch.float32).clone()
    if content.shape[0] == 0:
        content = torch.zeros(1, config.content_dim)
    content[UNKNOWN_ROW] = 0.0
    return content


class TwoTowerModel(nn.Module):
    def __init__(
        self, n_users: int, n_items: int, item_content: Tensor, config: TowerConfig
    ) -> None:
        super().__init__()
        if item_content.shape[0] != n_items:
            raise ValueError(f"item content has {item_content.shape[0]} rows, expected {n_items}")
        self.config = config
        self.item_encoder = ItemEncoder(n_items, config)
        self.item_tower = ItemTower(self.item_encoder)
        self.user_tower = UserTower(self.item_encoder, n_users, item_content, config)

    @property
    def n_users(self) -> int:
        return int(self.user_tower.user_embedding.num_embeddings)

    @property
    def n_items(self) -> int:
        return int(self.item_encoder.id_embedding.num_embeddings)

    @property
    def item_content(self) -> Tensor:
        return self.user_tower.item_content

    @torch.no_grad()
    def clear_user_rows(self, rows: Sequence[int]) -> None:
        """What the model learned for these users goes: their rows read as zeros."""
        table = self.user_tower.user_embedding.weight
        known = [row for row in rows if 0 < row < table.shape[0]]
        if known:
            table[known] = 0.0

    def grow(self, n_users: int, n_items: int, item_content: Tensor) -> None:
        """Tables grow to the given row counts, keeping every trained row; the content buffer
        becomes `item_content` ([n_items, content_dim], row 0 is zeroed)."""
        if n_users < self.n_users or n_items < self.n_items:
            raise ValueError("a model only grows: its tables never lose rows")
        if item_content.shape[0] != n_items:
            raise ValueError(f"item content has {item_content.shape[0]} rows, expected {n_items}")
        self.user_tower.user_embedding = _grown(self.user_tower.user_embedding, n_users)
        self.item_encoder.id_embedding = _grown(self.item_encoder.id_embedding, n_items)
        device = self.user_tower.item_content.device
        self.user_tower.item_content = _content_buffer(item_content, self.config).to(device)


def _grown(table: nn.Embedding, rows: int) -> nn.Embedding:
    if rows == table.num_embeddings:
        return table
    weight = table.weight
    grown = nn.Embedding(rows, table.embedding_dim, padding_idx=UNKNOWN_ROW)
    grown = grown.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        nn.init.normal_(grown.weight, std=NEW_ROW_STD)
        grown.weight[: table.num_embeddings] = weight
        grown.weight[UNKNOWN_ROW].zero_()
    return grown


def export_towers(model: TwoTowerModel, directory: Path) -> dict[str, Path]:
    """Writes `user_tower.pt` and `item_tower.pt` (TorchScript, eval mode, on the CPU)."""
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    paths = {"user_tower": directory / USER_TOWER_FILE, "item_tower": directory / ITEM_TOWER_FILE}
    try:
        for name, tower in (("user_tower", model.user_tower), ("item_tower", model.item_tower)):
            scripted = torch.jit.script(tower)
            torch.jit.save(scripted, str(paths[name]))
    finally:
        model.train(was_training)
    return paths


def left_padded(
    rows: Sequence[int], weights: Sequence[float], length: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The last `length` entries, most recent last, padded on the left with row 0."""
    out_rows = np.zeros(length, dtype=np.int64)
    out_weights = np.zeros(length, dtype=np.float32)
    kept = min(len(rows), length)
    if kept:
        out_rows[length - kept :] = rows[len(rows) - kept :]
        out_weights[length - kept :] = weights[len(weights) - kept :]
    return out_rows, out_weights
