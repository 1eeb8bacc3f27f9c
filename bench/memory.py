"""The memory a running suite holds, and the CPU time it spends: every service process
with all its descendants (the trainer's in-process Ray: gcs_server, raylet, workers,
agents; the embedding service's Triton and its python-backend stubs), read from /proc.

A service's processes are its process's descendants by parent pid, together with every
process in the session it leads (the launcher starts each service in its own session), so
a child that a daemon re-parented to init still counts. RSS counts a page shared by several
processes once in each of them; PSS splits it between them, so PSS adds up to the memory
the suite really holds, and RSS summed is an upper bound.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    session: int
    name: str
    rss_bytes: int
    pss_bytes: int  # 0 where smaps_rollup could not be read


@dataclass(frozen=True)
class ServiceMemory:
    service: str
    processes: list[ProcessInfo]

    @property
    def rss_bytes(self) -> int:
        return sum(p.rss_bytes for p in self.processes)

    @property
    def pss_bytes(self) -> int:
        return sum(p.pss_bytes for p in self.processes)


@dataclass(frozen=True)
class SuiteMemory:
    services: list[ServiceMemory]

    @property
    def rss_bytes(self) -> int:
        return sum(s.rss_bytes for s in self.services)

    @property
    def pss_bytes(self) -> int:
        return sum(s.pss_bytes for s in self.services)

    @property
    def process_count(self) -> int:
        return sum(len(s.processes) for s in self.services)

    def service(self, name: str) -> ServiceMemory | None:
        return next((s for s in self.services if s.service == name), None)


def parse_stat(text: str) -> tuple[str, int, int]:
    """(name, ppid, session) from /proc/<pid>/stat; the name may hold spaces and ')'."""
    opening, closing = text.index("("), text.rindex(")")
    fields = text[closing + 2 :].split()  # state ppid pgrp session ...
    return text[opening + 1 : closing], int(fields[1]), int(fields[3])


def parse_cpu_seconds(text: str) -> float:
    """User plus system CPU time from /proc/<pid>/stat (all its threads), in seconds."""
    fields = text[text.rindex(")") + 2 :].split()  # state is field 3; utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def parse_pss_kib(text: str) -> int:
    """The Pss line of /proc/<pid>/smaps_rollup, in KiB (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def read_process(directory: Path) -> ProcessInfo | None:
    """None for a process that ended while it was read, or that cannot be read."""
    try:
        name, ppid, session = parse_stat((directory / "stat").read_text())
        resident_pages = int((directory / "statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    try:
        pss_kib = parse_pss_kib((directory / "smaps_rollup").read_text())
    except OSError:
        pss_kib = 0
    pid = int(directory.name)
    return ProcessInfo(pid, ppid, session, name, resident_pages * PAGE_BYTES, pss_kib * 1024)


def read_processes(proc: Path = PROC) -> dict[int, ProcessInfo]:
    found = (read_process(entry) for entry in proc.iterdir() if entry.name.isdigit())
    return {p.pid: p for p in found if p is not None}


def process_tree(root: int, processes: Mapping[int, ProcessInfo]) -> list[ProcessInfo]:
    """`root` and its descendants, plus the processes of the session `root` leads; by pid."""
    children: dict[int, list[int]] = defaultdict(list)
    for process in processes.values():
        children[process.ppid].append(process.pid)
    found: set[int] = set()
    pending = [root] + [p.pid for p in processes.values() if p.session == root]
    while pending:
        pid = pending.pop()
        if pid in found or pid not in processes:
            continue
        found.add(pid)
        pending.extend(children[pid])
    return [processes[pid] for pid in sorted(found)]


def suite_memory(roots: Mapping[str, int], proc: Path = PROC) -> SuiteMemory:
    """Each service's memory, from its process id (the launcher's Popen pid)."""
    processes = read_processes(proc)
    return SuiteMemory([ServiceMemory(s, process_tree(pid, processes)) for s, pid in roots.items()])


def largest(processes: Iterable[ProcessInfo], count: int) -> Sequence[ProcessInfo]:
    return sorted(processes, key=lambda p: p.rss_bytes, reverse=True)[:count]


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    try:
        return parse_cpu_seconds((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return 0.0  # it ended meanwhile


def suite_cpu_seconds(roots: Mapping[str, int], proc: Path = PROC) -> dict[str, float]:
    """The CPU time each service's processes have used so far (descendants included; one
    that ended since the last reading takes its time with it, so read over short spans)."""
    processes = read_processes(proc)
    return {
        service: sum(cpu_seconds(p.pid, proc) for p in process_tree(pid, processes))
        for service, pid in roots.items()
    }
