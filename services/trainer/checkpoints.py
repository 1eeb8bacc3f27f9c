"""The learner's checkpoints and the commit record (`state.json`) that names them.

Exactly once: the learner's checkpoint holds its weights, optimizer, replay reservoir and
the accounting of the offsets it learned, and is written whole before `state.json` names it
(both by atomic renames). A version is published only from a committed checkpoint, and
`state.json` maps each published version to its checkpoint. A trainer killed at any moment
restarts from the newest committed checkpoint and reads the log from the offset after it:
the work done since is redone from the same state, so no event is skipped or learned twice.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.trainer.continual_learner import (
    ContinualConfig,
    ContinualLearner,
    checkpoint_users,
    forget_in_checkpoint,
)
from services.trainer.model_training import TrainConfig
from shared.model_store import ModelStore, write_json_atomically

STATE_FILE = "state.json"


@dataclass
class Commit:
    """What `state.json` records; written after the checkpoint it names is complete."""

    # The committed checkpoint's directory name ("<offset>-<sequence>"); "": none yet.
    # Names are never reused, so a checkpoint is never rewritten in place.
    checkpoint: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # version -> checkpoint
    last_gate_decision: str = ""
    last_publish: float = 0.0
    last_full_retrain_reason: str = ""
    last_full_retrain_at: float = 0.0
    baseline_hit_rate: float = 0.0  # the last full retrain's, for the drift signal
    paused: bool = False  # after a rollback, until TriggerRetrain


class Checkpoints:
    """`<state_dir>/checkpoints/<name>` and `<state_dir>/state.json`."""

    def __init__(self, state_dir: Path, keep: int, store: ModelStore) -> None:
        self.state_dir = state_dir
        self.directory = state_dir / "checkpoints"
        self.keep = keep
        self.store = store
        self.commit = Commit()
        self.pinned: set[str] = set()  # checkpoints of publishes under way

    def restore(self) -> Commit:
        """Reads the commit record and drops the half-written checkpoints of a trainer that
        was killed."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATE_FILE
        self.commit = Commit(**json.loads(path.read_text())) if path.exists() else Commit()
        if self.directory.exists():
            for partial in self.directory.glob(".*.tmp"):
                shutil.rmtree(partial, ignore_errors=True)
        return self.commit

    def write_commit(self) -> None:
        write_json_atomically(self.state_dir / STATE_FILE, asdict(self.commit))

    def path(self, name: str) -> Path:
        return self.directory / name

    def of_version(self, version: int) -> str | None:
        """The checkpoint a published version was made from, while it is kept."""
        name = self.commit.versions.get(str(version))
        return name if name is not None and self.path(name).exists() else None

    async def save(self, learner: ContinualLearner, map_version: int | None = None) -> str:
        """Commits the learner's state: the checkpoint directory whole, then state.json
        (which maps `map_version` to it, when given); then prunes the old ones."""
        name = f"{learner.offset:012d}-{time.time_ns()}"
        await asyncio.to_thread(learner.save, self.path(name))
        self.commit.checkpoint = name
        if map_version is not None:
            self.commit.versions[str(map_version)] = name
        self.write_commit()
        await asyncio.to_thread(self._prune, self._needed())
        return name

    def _needed(self) -> set[str]:
        """The committed one, those of publishes under way, and those of the live and the
        previous version (a rollback restarts the learner from it)."""
        live = self.store.live()
        needed = {self.commit.checkpoint, *self.pinned}
        for version in (live.version, live.previous) if live else ():
            if version is not None and str(version) in self.commit.versions:
                needed.add(self.commit.versions[str(version)])
        return needed

    def _prune(self, needed: set[str]) -> None:
        if not self.directory.exists():
            return
        kept = sorted(
            (p.name for p in self.directory.iterdir() if not p.name.startswith(".")),
            reverse=True,
        )
        for name in kept[self.keep :]:
            if name not in needed:
                shutil.rmtree(self.path(name), ignore_errors=True)

    def forget_users(
        self, user_ids: set[str], continual: ContinualConfig, train: TrainConfig
    ) -> dict[str, int]:
        """Every checkpoint but the committed one, written again without the users; how many
        each user was in."""
        counts: dict[str, int] = {}
        if not self.directory.exists():
            return counts
        for directory in sorted(self.directory.iterdir()):
            if directory.name.startswith(".") or directory.name == self.commit.checkpoint:
                continue
            if not user_ids & set(checkpoint_users(directory)):
                continue
            for user in forget_in_checkpoint(directory, user_ids, continual, train):
                counts[user] = counts.get(user, 0) + 1
        return counts
