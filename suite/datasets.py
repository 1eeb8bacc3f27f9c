"""MovieLens ml-latest-small as catalogue items (the project carries its own copy).

F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and
Context. ACM Transactions on Interactive Intelligent Systems 5, 4: 19:1-19:19.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from shared.catalog import Item

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
