"""The durable event log. Behind the `EventLog` protocol so that a networked log can back
it at scale; the embedded one is SQLite (WAL, synchronous=FULL): a batch is on disk before
it is acknowledged, offsets only grow (AUTOINCREMENT never reuses one), and event_id is
unique, which makes appends idempotent. Each event keeps when it was appended (the server's
clock), for freshness figures; logs written before that column existed read it as 0."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.events import Event, EventType, Interaction, LoggedEvent
from shared.sqlite_store import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    type       INTEGER NOT NULL,
    value      REAL NOT NULL,
    ts         REAL NOT NULL,
    appended_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts);
"""
_COLUMNS = "log_offset, event_id, user_id, item_id, type, value, ts, appended_at"


@dataclass
class AppendResult:
    accepted: int = 0
    duplicates: int = 0
    last_offset: int = 0
    stored: list[LoggedEvent] = field(default_factory=list)


class EventLog(Protocol):
    def append(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        """Writes every batch in one durable commit; one result per batch."""
        ...

    def read(self, from_offset: int, limit: int) -> list[LoggedEvent]: ...

    def end_offset(self) -> int: ...

    def history(self, user_id: str, limit: int) -> list[Interaction]: ...

    def first_offset(self, user_id: str) -> int: ...

    def seen_items(self, user_id: str, limit: int) -> list[str]: ...

    def forget_user(self, user_id: str) -> list[Event]: ...

    def close(self) -> None: ...


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Logs written before appended_at existed gain it; their events read 0 (unknown)."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(events)")}
    if "appended_at" not in columns:
        db.execute("ALTER TABLE events ADD COLUMN appended_at REAL NOT NULL DEFAULT 0")


def _event(row: Sequence[object]) -> LoggedEvent:
    offset, event_id, user_id, item_id, kind, value, ts, appended_at = row
    event = Event(
        str(event_id),
        str(user_id),
        str(item_id),
        EventType(int(str(kind))),
        float(str(value)),
        float(str(ts)),
    )
    return LoggedEvent(int(str(offset)), event, float(str(appended_at)))


class SqliteEventLog(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)
        with self._lock:
            _add_missing_columns(self._db)
            # A forgotten user's rows are overwritten, not left readable in free pages.
            self._db.execute("PRAGMA secure_delete=ON")

    def append(self, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
        results = []
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            appended_at = time.time()
            for batch in batches:
                results.append(self._append_batch(batch, appended_at))
        return results

    def _append_batch(self, batch: Sequence[Event], appended_at: float) -> AppendResult:
        result = AppendResult()
        for e in batch:
            # Looked up first, not INSERT OR IGNORE: an ignored insert still uses up an offset.
            existing = self._offset_of(e.event_id)
            if existing is not None:
                result.duplicates += 1
                result.last_offset = existing
                continue
            cursor = self._db.execute(
                "INSERT INTO events (event_id, user_id, item_id, type, value, ts, appended_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (e.event_id, e.user_id, e.item_id, int(e.type), e.value, e.timestamp, appended_at),
            )
            result.last_offset = int(cursor.lastrowid or 0)
            result.accepted += 1
            result.stored.append(LoggedEvent(result.last_offset, e, appended_at))
        return result

    def _offset_of(self, event_id: str) -> int | None:
        row = self._db.execute(
            "SELECT log_offset FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def read(self, from_offset: int, limit: int) -> list[LoggedEvent]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE log_offset >= ? ORDER BY log_offset LIMIT ?",
                (from_offset, limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def scan(self, chunk: int = 10_000) -> Iterator[LoggedEvent]:
        offset = 1
        while batch := self.read(offset, chunk):
            yield from batch
            offset = batch[-1].offset + 1

    def end_offset(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
        return (int(row[0]) if row else 0) + 1

    def history(self, user_id: str, limit: int) -> list[Interaction]:
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id, type, value, ts FROM events WHERE user_id = ?"
                " ORDER BY ts DESC, log_offset DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [Interaction(r[0], EventType(r[1]), r[2], r[3]) for r in rows]

    def first_offset(self, user_id: str) -> int:
        """The offset of the user's oldest event in the log; 0 when it holds none."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(log_offset) FROM events WHERE user_id = ?", (user_id,)
            ).fetchone()
        return int(row[0] or 0)

    def seen_items(self, user_id: str, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT item_id FROM events WHERE user_id = ? LIMIT ?", (user_id, limit)
            ).fetchall()
        return [r[0] for r in rows]

    def forget_user(self, user_id: str) -> list[Event]:
        """Deletes the user's events (returned in log order); afterwards no file of the log
        holds them: the deleted cells are zeroed (secure_delete) and the WAL, whose frames
        may still hold the pages as they were, is written back and truncated."""
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE user_id = ? ORDER BY log_offset",
                    (user_id,),
                ).fetchall()
                self._db.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            if rows:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [_event(r).event for r in rows]
