"""The item catalogue on SQLite (WAL, synchronous=FULL): a write is on disk before it is
acknowledged. Each item is stored with its encoding, so a restart re-encodes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.items import Item
from shared.sqlite_store import SqliteStore, chunks

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id     TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    categories  TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    text_digest TEXT NOT NULL,
    encoder     TEXT NOT NULL,
    vector      BLOB NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class StoredItem:
    item: Item
    text_digest: str
    encoder: str
    vector: np.ndarray


class CatalogStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def all_categories(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            rows = self._db.execute("SELECT item_id, categories FROM items").fetchall()
        return {item_id: tuple(json.loads(categories)) for item_id, categories in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def get(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        found: dict[str, StoredItem] = {}
        with self._lock:
            for chunk in chunks(item_ids):
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT item_id, title, description, categories, attributes, text_digest,"
                    f" encoder, vector FROM items WHERE item_id IN ({marks})",
                    list(chunk),
                )
                for row in rows:
                    found[row[0]] = _stored_from_row(row)
        return found

    def page(self, after_item_id: str, limit: int) -> list[StoredItem]:
        """Up to `limit` items with ids after `after_item_id`, in id order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id, title, description, categories, attributes, text_digest,"
                " encoder, vector FROM items WHERE item_id > ? ORDER BY item_id LIMIT ?",
                (after_item_id, limit),
            ).fetchall()
        return [_stored_from_row(row) for row in rows]

    def upsert(self, entries: Sequence[StoredItem]) -> None:
        """Writes every entry in one transaction: all of the batch or none of it."""
        now = time.time()
        rows = [
            (
                e.item.item_id,
                e.item.title,
                e.item.description,
                json.dumps(list(e.item.categories)),
                json.dumps(dict(e.item.attributes), sort_keys=True),
                e.text_digest,
                e.encoder,
                np.asarray(e.vector, dtype=np.float32).tobytes(),
                now,
            )
            for e in entries
        ]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def delete(self, item_ids: Sequence[str]) -> int:
        deleted = 0
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for chunk in chunks(item_ids):
                marks = ",".join("?" * len(chunk))
                cursor = self._db.execute(f"DELETE FROM items WHERE item_id IN ({marks})", chunk)
                deleted += cursor.rowcount
        return deleted


def _stored_from_row(row: tuple[object, ...]) -> StoredItem:
    item_id, title, description, categories, attributes, digest, encoder, vector = row
    item = Item(
        item_id=str(item_id),
        title=str(title),
        description=str(description),
        categories=tuple(json.loads(str(categories))),
        attributes=json.loads(str(attributes)),
    )
    assert isinstance(vector, bytes)
    return StoredItem(item, str(digest), str(encoder), np.frombuffer(vector, dtype=np.float32))
