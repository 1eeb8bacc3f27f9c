"""The trainer benchmark's pure figures: a suite's memory summed over process trees read
from a fake /proc, freshness from acks and status samples, Recommend calls split by
publish windows, and the trainer's "published" log lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bench.memory import (
    CLOCK_TICKS,
    PAGE_BYTES,
    parse_cpu_seconds,
    parse_stat,
    read_processes,
    suite_cpu_seconds,
    suite_memory,
)
from bench.trainer import (
    LoggedBatch,
    StatusSample,
    TimedCall,
    TrainerSample,
    catching_up,
    freshness_s,
    overlap_s,
    parse_published,
    split_by_windows,
    wall_time,
)


def fake_process(
    proc: Path, pid: int, ppid: int, session: int, name: str, pages: int, pss_kib: int | None
) -> None:
    directory = proc / str(pid)
    directory.mkdir()
    (directory / "stat").write_text(f"{pid} ({name}) S {ppid} {session} {session} 0 -1 4194560\n")
    (directory / "statm").write_text(f"{pages * 3} {pages} 10 1 0 50 0\n")
    if pss_kib is not None:
        (directory / "smaps_rollup").write_text(f"Rss: 1 kB\nPss: {pss_kib} kB\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """Two services (100, 200): 100 has a child with a grandchild and a daemon re-parented
    to init in its session; 999 is nobody's."""
    fake_process(tmp_path, 1, 0, 1, "init", 1, 4)
    fake_process(tmp_path, 100, 1, 100, "python", 10, 30)
    fake_process(tmp_path, 101, 100, 100, "raylet", 20, 50)
    fake_process(tmp_path, 102, 101, 100, "ray::Trainer", 30, None)
    fake_process(tmp_path, 103, 1, 100, "gcs_server", 5, 12)
    fake_process(tmp_path, 200, 1, 200, "tritonserver", 7, 20)
    fake_process(tmp_path, 201, 200, 200, "triton_python_backend_stub (x)", 3, 8)
    fake_process(tmp_path, 999, 1, 999, "other", 1000, 4000)
    (tmp_path / "self").mkdir()  # not a pid: ignored
    return tmp_path


def test_suite_memory_sums_each_service_tree_when_children_nest_and_daemons_detach(
    proc: Path,
) -> None:
    memory = suite_memory({"trainer": 100, "embedding": 200}, proc)
    trainer, embedding = memory.services
    assert [p.pid for p in trainer.processes] == [100, 101, 102, 103]
    assert trainer.rss_bytes == (10 + 20 + 30 + 5) * PAGE_BYTES
    assert trainer.pss_bytes == (30 + 50 + 0 + 12) * 1024  # unreadable PSS counts 0
    assert [p.name for p in embedding.processes] == [
        "tritonserver",
        "triton_python_backend_stub (x)",
    ]
    assert memory.rss_bytes == (65 + 10) * PAGE_BYTES
    assert memory.process_count == 6


def test_suite_memory_is_empty_for_a_service_when_its_process_is_gone(proc: Path) -> None:
    memory = suite_memory({"gateway": 4242}, proc)
    assert memory.rss_bytes == 0 and memory.services[0].processes == []


def test_parse_stat_reads_names_holding_spaces_and_parentheses() -> None:
    assert parse_stat("7 (a (b) c) S 3 7 9 0") == ("a (b) c", 3, 9)


def test_parse_cpu_seconds_adds_user_and_system_time() -> None:
    stat = "7 (a (b) c) S 3 7 9 0 -1 4194560 10 0 0 0 150 50 0 0 20 0 4 0"
    assert parse_cpu_seconds(stat) == pytest.approx(200 / CLOCK_TICKS)


def test_suite_cpu_seconds_reads_each_service_and_nothing_for_one_that_is_gone() -> None:
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    spent = suite_cpu_seconds({"me": os.getpid(), "gone": 424242424})
    assert spent["me"] >= 0.05 - 2 / CLOCK_TICKS and spent["gone"] == 0.0


def test_read_processes_finds_this_process_when_reading_the_real_proc() -> None:
    me = read_processes()[os.getpid()]
    assert me.rss_bytes > 0 and me.ppid == os.getppid()


def test_freshness_is_ack_to_first_sample_serving_the_batch_when_versions_switch() -> None:
    batches = [LoggedBatch(10.0, 100, 20), LoggedBatch(11.0, 120, 20), LoggedBatch(12.0, 999, 20)]
    samples = [
        StatusSample(10.5, "two-tower-1", "two-tower-2", 120),  # not served yet: ignored
        StatusSample(13.0, "two-tower-2", "two-tower-2", 120),
        StatusSample(9.0, "two-tower-9", "two-tower-9", 5000),  # before every ack
    ]
    assert freshness_s(batches, samples) == [3.0, 2.0, None]


def test_split_by_windows_puts_calls_that_overlap_a_publish_inside() -> None:
    calls = [TimedCall(0.0, 0.5), TimedCall(0.9, 0.2), TimedCall(2.5, 0.1), TimedCall(5.0, 1.0)]
    inside, outside = split_by_windows(calls, [(1.0, 2.0), (5.5, 6.0)])
    assert inside == [0.2, 1.0]
    assert outside == [0.5, 0.1]


def test_parse_published_reads_the_trainers_lines_when_ray_prefixes_them() -> None:
    entry = {
        "ts": "2026-01-02T03:04:05.250Z",
        "msg": "published",
        "version": 3,
        "trained_through": 1234,
        "publish_s": 4.5,
        "save_s": 0.1,
        "load_s": 3.0,
        "embed_s": 1.2,
        "total_s": 6.0,
    }
    publisher = {"ts": entry["ts"], "msg": "published", "version": 3, "switch_s": 4.5}
    lines = [f"(Trainer pid=42) {json.dumps(entry)}", json.dumps(publisher), "not json {"]
    (record,) = parse_published(lines)
    assert (record.version, record.trained_through, record.load_s) == (3, 1234, 3.0)
    assert record.ended_at == wall_time("2026-01-02T03:04:05.250Z")
    assert record.started_at == pytest.approx(record.ended_at - 6.0)


def test_catching_up_counts_only_the_time_the_learner_was_behind_the_log() -> None:
    samples = [
        TrainerSample(0.0, 100, 0, 300, "learning"),  # behind: 0 -> 2 s counts
        TrainerSample(2.0, 200, 0, 300, "publishing"),  # behind: 2 -> 6 s counts
        TrainerSample(6.0, 299, 0, 300, "idle"),  # caught up (end 300 = next offset)
        TrainerSample(9.0, 299, 0, 300, "idle"),
    ]
    catching = catching_up(samples)
    assert (catching.events, catching.seconds) == (199, 6.0)
    assert catching.events_per_s == pytest.approx(199 / 6)
    assert catching.states == pytest.approx({"learning": 2 / 6, "publishing": 4 / 6})


def test_overlap_counts_only_the_part_of_each_window_inside_the_period() -> None:
    assert overlap_s([(0.0, 2.0), (5.0, 20.0), (30.0, 40.0)], 1.0, 10.0) == 6.0
