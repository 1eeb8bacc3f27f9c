"""The features domain: validate items, encode their text (reusing stored encodings whose
text did not change) and keep them in the catalogue store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.features.catalog_store import CatalogStore, StoredItem
from services.features.encoder import TextEncoder
from shared.errors import InvalidArgument, NotFound
from shared.items import MAX_BATCH, Item, validate_ids, validate_items


@dataclass(frozen=True)
class UpsertResult:
    items: list[StoredItem]
    reused_encodings: int


@dataclass(frozen=True)
class LookupResult:
    items: list[Item]
    missing: list[str]


class Catalog:
    def __init__(self, store: CatalogStore, encoder: TextEncoder) -> None:
        self.store = store
        self.encoder = encoder
        # Which items exist and their categories, for ranking trending items without a
        # store read per request; kept in step with every write below.
        self.categories: dict[str, tuple[str, ...]] = {}
        self.revision = 0  # grows with every write to `categories`

    def restore(self) -> None:
        self.categories.update(self.store.all_categories())
        self.revision += 1

    def upsert(self, items: Sequence[Item]) -> UpsertResult:
        distinct = validate_items(items)
        digests = [item.text_digest() for item in distinct]
        existing = self.store.get([item.item_id for item in distinct])
        vectors: list[np.ndarray | None] = []
        for item, digest in zip(distinct, digests, strict=True):
            old = existing.get(item.item_id)
            reusable = old and old.text_digest == digest and old.encoder == self.encoder.name
            vectors.append(old.vector if old and reusable else None)
        to_encode = [i for i, vector in enumerate(vectors) if vector is None]
        encoded = self.encoder.encode([distinct[i].text() for i in to_encode])
        for row, i in enumerate(to_encode):
            vectors[i] = encoded[row]
        entries = [
            StoredItem(item, digest, self.encoder.name, vector)
            for item, digest, vector in zip(distinct, digests, vectors, strict=True)
            if vector is not None
        ]
        self.store.upsert(entries)
        self.categories.update({e.item.item_id: e.item.categories for e in entries})
        self.revision += 1
        return UpsertResult(entries, reused_encodings=len(distinct) - len(to_encode))

    def delete(self, item_ids: Sequence[str]) -> int:
        ids = validate_ids(item_ids)
        deleted = self.store.delete(ids)
        for item_id in ids:
            self.categories.pop(item_id, None)
        self.revision += 1
        return deleted

    def get(self, item_ids: Sequence[str], allow_missing: bool) -> LookupResult:
        wanted = validate_ids(item_ids)
        found = self.store.get(wanted)
        missing = [item_id for item_id in wanted if item_id not in found]
        if missing and not allow_missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            raise NotFound(f"unknown item_ids: {shown}" + (" ..." if len(missing) > 10 else ""))
        return LookupResult([found[i].item for i in wanted if i in found], missing)

    def page(self, after_item_id: str, limit: int) -> tuple[list[StoredItem], str]:
        """A page of the catalogue in id order, and the id to continue after ("" at the end)."""
        if limit <= 0 or limit > MAX_BATCH:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_BATCH}")
        entries = self.store.page(after_item_id, limit)
        return entries, entries[-1].item.item_id if len(entries) == limit else ""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > 1_000:
            raise InvalidArgument("texts", "at most 1000 texts per request")
        for i, text in enumerate(texts):
            if len(text) > 10_000:
                raise InvalidArgument(f"texts[{i}]", "is longer than 10000 characters")
        return self.encoder.encode(texts)
