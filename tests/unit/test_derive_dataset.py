"""The second data set `recsys eval --ratings` is run on: made from a ratings file by
keeping heavy users or the latest years, written with its catalogue beside it."""

from __future__ import annotations

from pathlib import Path

from evaluation.derive import YEAR_S, derive, main
from suite.datasets import DatasetEvent, load_interactions, load_movies


def events() -> list[DatasetEvent]:
    heavy = [DatasetEvent("heavy", f"i{n}", n * YEAR_S / 2, 4.0) for n in range(10)]
    light = [DatasetEvent("light", "i1", 4.6 * YEAR_S, 3.0)]
    return heavy + light


def test_heavy_users_or_the_latest_years_are_kept_in_time_order() -> None:
    assert {e.user_id for e in derive(events(), min_user_events=5)} == {"heavy"}
    latest = derive(events(), latest_years=1.0)
    assert [e.timestamp for e in latest] == sorted(e.timestamp for e in latest)
    assert [e.item_id for e in latest] == ["i8", "i9", "i1"]  # within a year of the last
    both = derive(events(), min_user_events=2, latest_years=1.0)
    assert {e.user_id for e in both} == {"heavy"}


def test_the_file_written_reads_back_with_its_catalogue(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    rows = "\n".join(f"{e.user_id},{e.item_id},{e.rating:g},{e.timestamp:.0f}" for e in events())
    (source / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows + "\n")
    (source / "movies.csv").write_text("movieId,title,genres\ni1,One (1999),Drama\n")
    (source / "tags.csv").write_text("userId,movieId,tag,timestamp\nheavy,i1,calm,1\n")
    out = tmp_path / "derived"
    assert (
        main(
            ["--ratings", str(source / "ratings.csv"), "--min-user-events", "5", "--out", str(out)]
        )
        == 0
    )
    back = load_interactions(out / "ratings.csv")
    assert len(back) == 10 and {e.user_id for e in back} == {"heavy"}
    assert [m.item_id for m in load_movies(out)] == ["i1"]  # as recsys eval reads it
