"""A second data set made from the shipped one, of another character, for `recsys eval
--ratings`: a suite that tuned itself to one data set must hold its place on another.

    python -m evaluation.derive --min-user-events 50 --out reports/heavy-users
    python -m evaluation.derive --latest-years 3 --out reports/latest-years

`--min-user-events` keeps only the users with at least that many interactions (long
histories, where item-kNN is strong); `--latest-years` keeps only the interactions of the
last years of the file (a different era, with fewer, newer items). The directory gets
`ratings.csv` and the catalogue's `movies.csv` and `tags.csv` beside it, so that the items
keep their titles, genres and tags.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from suite.datasets import DatasetEvent, dataset_dir, load_interactions

YEAR_S = 365.25 * 24 * 3600


def derive(
    events: Sequence[DatasetEvent], min_user_events: int = 0, latest_years: float = 0.0
) -> list[DatasetEvent]:
    """The events kept, in time order; both conditions apply when both are given (the user
    count after the years' cut)."""
    kept = list(events)
    if latest_years > 0 and kept:
        since = max(e.timestamp for e in kept) - latest_years * YEAR_S
        kept = [e for e in kept if e.timestamp >= since]
    if min_user_events > 0:
        counts = Counter(e.user_id for e in kept)
        kept = [e for e in kept if counts[e.user_id] >= min_user_events]
    return sorted(kept, key=lambda e: e.timestamp)


CATALOGUE_FILES = ("movies.csv", "tags.csv")  # what `load_movies` reads beside the ratings


def write(events: Sequence[DatasetEvent], out_dir: Path, source_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ratings.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for e in events:
            writer.writerow([e.user_id, e.item_id, f"{e.rating:g}", f"{e.timestamp:.0f}"])
    for name in CATALOGUE_FILES:
        if (source_dir / name).exists():
            shutil.copyfile(source_dir / name, out_dir / name)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=Path, default=None, help="default: the shipped data")
    parser.add_argument("--min-user-events", type=int, default=0)
    parser.add_argument("--latest-years", type=float, default=0.0)
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    args = parser.parse_args(argv)
    if args.min_user_events <= 0 and args.latest_years <= 0:
        parser.error("give --min-user-events, --latest-years or both")
    source = args.ratings or dataset_dir() / "ratings.csv"
    events = load_interactions(source)
    kept = derive(events, args.min_user_events, args.latest_years)
    path = write(kept, args.out, source.parent)
    users, items = len({e.user_id for e in kept}), len({e.item_id for e in kept})
    print(
        f"wrote {path}: {len(kept):,} of {len(events):,} events, {users:,} users, {items:,} items"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
