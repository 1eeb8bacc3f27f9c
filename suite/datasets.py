"""Data sets replayed by the demo, the benchmark and the evaluation: timestamped rating
files, and MovieLens ml-latest-small's movies as catalogue items (the project carries its
own copy).

F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and
Context. ACM Transactions on Interactive Intelligent Systems 5, 4: 19:1-19:19.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.gateway.v1 import gateway_pb2 as api
from shared.events import Event, EventType
from shared.items import Item

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NO_GENRES = "(no genres listed)"
MAX_TAGS = 20
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def dataset_dir() -> Path:
    default = PROJECT_ROOT / "datasets" / "ml-latest-small"
    return Path(os.environ.get("RECSYS_MOVIELENS_DIR", default))


def _tags_by_movie(path: Path) -> dict[str, list[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts[row["movieId"]][row["tag"].strip().lower()] += 1
    return {movie: [t for t, _ in c.most_common(MAX_TAGS) if t] for movie, c in counts.items()}


def load_movies(directory: Path | None = None) -> list[Item]:
    """Every movie: title, genres as categories, its users' most frequent tags as text."""
    directory = directory or dataset_dir()
    tags = _tags_by_movie(directory / "tags.csv")
    items = []
    with (directory / "movies.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movie_id = row["movieId"]
            genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRES)
            year = _YEAR.search(row["title"])
            movie_tags = tags.get(movie_id, [])
            items.append(
                Item(
                    item_id=movie_id,
                    title=row["title"].strip(),
                    description=("Tags: " + ", ".join(movie_tags)) if movie_tags else "",
                    categories=genres,
                    attributes={"year": year.group(1)} if year else {},
                )
            )
    return items


@dataclass(frozen=True)
class DatasetEvent:
    """One row of a replayed data set (a ratings CSV): who did what when, and the rating
    (1.0 where the file has none). The gateway's `Event` and the trainer's `Event` are built
    from it here, and only here."""

    user_id: str
    item_id: str
    timestamp: float  # seconds since the epoch (event time)
    rating: float

    @property
    def event_id(self) -> str:
        return f"{self.user_id}:{self.item_id}:{self.timestamp}"

    def to_api(self, event_id: str | None = None, now: bool = False) -> api.Event:
        """The event to log through the gateway: at its own time, or `now` (with a fresh
        `event_id`, so that replaying it again is not a duplicate)."""
        if now:
            at = Timestamp()
            at.GetCurrentTime()
        else:
            seconds = int(self.timestamp)
            at = Timestamp(seconds=seconds, nanos=int((self.timestamp - seconds) * 1e9))
        return api.Event(
            event_id=event_id or self.event_id,
            user_id=self.user_id,
            item_id=self.item_id,
            type=api.EVENT_TYPE_RATE,
            value=self.rating,
            timestamp=at,
        )

    def to_event(self) -> Event:
        """The event as the trainer reads it from the log, for training in-process."""
        return Event(
            self.event_id, self.user_id, self.item_id, EventType.RATE, self.rating, self.timestamp
        )


_USER_COLUMNS = ("user_id", "userId", "user")
_ITEM_COLUMNS = ("item_id", "movieId", "itemId", "item")
_RATING_COLUMNS = ("rating", "value")


def _column(header: Sequence[str], names: Sequence[str], required: bool = True) -> str | None:
    for name in names:
        if name in header:
            return name
    if required:
        raise ValueError(f"the file needs one of the columns {', '.join(names)}")
    return None


def load_interactions(path: Path) -> list[DatasetEvent]:
    """A CSV with a header: user and item ids, a timestamp in seconds and an optional rating;
    returned in time order (ties keep the file's order)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        user, item = _column(header, _USER_COLUMNS), _column(header, _ITEM_COLUMNS)
        rating = _column(header, _RATING_COLUMNS, required=False)
        rows = [
            DatasetEvent(
                row[str(user)],
                row[str(item)],
                float(row["timestamp"]),
                float(row[rating]) if rating else 1.0,
            )
            for row in reader
        ]
    return sorted(rows, key=lambda r: r.timestamp)
