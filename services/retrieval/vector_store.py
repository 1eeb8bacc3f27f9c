"""Durable home of every index's vectors (SQLite, WAL, synchronous=FULL).

The FAISS structures are derived from it: a snapshot on disk is used on restart only when
its generation matches the store's, otherwise the index is rebuilt from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.sqlite_store import SqliteStore, chunks

_SCHEMA = """
CREATE TABLE IF NOT EXISTS indexes (
    name       TEXT PRIMARY KEY,
    dimension  INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    index_name TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    categories TEXT NOT NULL,
    vector     BLOB NOT NULL,
    PRIMARY KEY (index_name, item_id)
) WITHOUT ROWID;
"""


class VectorStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def indexes(self) -> dict[str, tuple[int, int]]:
        """Index name -> (dimension, generation)."""
        with self._lock:
            rows = self._db.execute("SELECT name, dimension, generation FROM indexes")
            return {name: (dim, gen) for name, dim, gen in rows}

    def upsert(
        self,
        index: str,
        dimension: int,
        ids: Sequence[str],
        vectors: np.ndarray,
        categories: Sequence[Sequence[str]],
    ) -> int:
        """Writes the records and bumps the index's generation in one transaction."""
        rows = [
            (index, item_id, json.dumps(list(cats)), vectors[i].astype(np.float32).tobytes())
            for i, (item_id, cats) in enumerate(zip(ids, categories, strict=True))
        ]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?,?)", rows)
            return self._bump(index, dimension)

    def delete(self, index: str, ids: Sequence[str]) -> tuple[int, int]:
        deleted = 0
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for chunk in chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                deleted += self._db.execute(
                    f"DELETE FROM vectors WHERE index_name = ? AND item_id IN ({marks})",
                    [index, *chunk],
                ).rowcount
            generation = self._bump(index, None) if deleted else self._generation(index)
        return deleted, generation

    def drop(self, index: str) -> bool:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM vectors WHERE index_name = ?", (index,))
            return self._db.execute("DELETE FROM indexes WHERE name = ?", (index,)).rowcount > 0

    def load(self, index: str) -> tuple[list[str], np.ndarray, list[list[str]]]:
        with self._lock:
            dimension = self._db.execute(
                "SELECT dimension FROM indexes WHERE name = ?", (index,)
            ).fetchone()[0]
            rows = self._db.execute(
                "SELECT item_id, categories, vector FROM vectors WHERE index_name = ?"
                " ORDER BY item_id",
                (index,),
            ).fetchall()
        ids = [r[0] for r in rows]
        categories = [json.loads(r[1]) for r in rows]
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        return ids, vectors.reshape(len(ids), dimension), categories

    def page(
        self, index: str, after_item_id: str, limit: int
    ) -> tuple[list[str], np.ndarray, list[list[str]]]:
        """Up to `limit` records after `after_item_id`, in item_id order."""
        with self._lock:
            found = self._db.execute(
                "SELECT dimension FROM indexes WHERE name = ?", (index,)
            ).fetchone()
            if found is None:
                return [], np.zeros((0, 0), dtype=np.float32), []
            rows = self._db.execute(
                "SELECT item_id, categories, vector FROM vectors"
                " WHERE index_name = ? AND item_id > ? ORDER BY item_id LIMIT ?",
                (index, after_item_id, limit),
            ).fetchall()
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        return (
            [r[0] for r in rows],
            vectors.reshape(len(rows), found[0]),
            [json.loads(r[1]) for r in rows],
        )

    def item_ids(self, index: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM vectors WHERE index_name = ?", (index,))
            return {r[0] for r in rows}

    def _generation(self, index: str) -> int:
        row = self._db.execute("SELECT generation FROM indexes WHERE name = ?", (index,)).fetchone()
        return 0 if row is None else int(row[0])

    def _bump(self, index: str, dimension: int | None) -> int:
        generation = self._generation(index) + 1
        if dimension is None:
            self._db.execute(
                "UPDATE indexes SET generation = ? WHERE name = ?", (generation, index)
            )
        else:
            self._db.execute(
                "INSERT INTO indexes VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE"
                " SET generation = excluded.generation",
                (index, dimension, generation),
            )
        return generation
