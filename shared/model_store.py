"""The model store: one directory shared by trainer, Triton and gateway (a volume at scale).

    <root>/versions/<N>/          a trained version: weights, TorchScript towers, serving.json
    <root>/triton/                Triton's model repository (user_tower/, item_tower/)
    <root>/live.json              which version serves; the gateway switches when it changes

serving.json is what a gateway needs to call version N: the id -> row maps of its towers
(row = position + 1; row 0 is "unknown to this version"), the history length, the
highest log offset the version learned and the ranking weights chosen with it. A
forgotten user's id is replaced by a placeholder no real id can equal (`forgotten_id`), so
the rows after it keep their numbers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

LIVE_FILE = "live.json"
SERVING_FILE = "serving.json"
MODEL_FAMILY = "two-tower"


def model_name(version: int) -> str:
    """What Recommend reports, and the retrieval index holding the version's item vectors."""
    return f"{MODEL_FAMILY}-{version}"


# Marks, in a version's index, the items the version has no id row for: it knows them by
# their text alone (new items, mostly), so its scores rarely rank them high on their own.
UNLEARNED_CATEGORY = "recsys.unlearned"


def forgotten_id(row: int) -> str:
    """What a forgotten id's row holds instead: valid ids have no control characters."""
    return f"\x00forgotten:{row}"


def index_categories(categories: Sequence[str], row: int) -> list[str]:
    """An item's categories in a model version's index, given its id row there (0: none)."""
    return [*categories, UNLEARNED_CATEGORY] if row == 0 else list(categories)


def write_json_atomically(path: Path, value: object) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class LiveVersion:
    version: int
    published_at: float
    trained_through_offset: int
    previous: int | None = None
    # When the log acknowledged the newest event inside this version (0: unknown).
    newest_event_appended_at: float = 0.0
    # The version's figures on the gate's events when it was published.
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingInfo:
    version: int
    history_len: int
    dimension: int
    users: Mapping[str, int]
    items: Mapping[str, int]
    # The highest log offset inside the version: a user whose oldest event in the log is
    # newer (a forgotten user who came back, say) is not the user its row was learned for.
    trained_through_offset: int = 0
    # The ranking settings chosen with this version (RankingSettings field -> value); the
    # gateway serves them with it, so that a switch changes model and weights together.
    ranking: Mapping[str, float] = field(default_factory=dict)

    def user_row(self, user_id: str, first_offset: int) -> int:
        """The user's row, if this version learned from the user's events still in the log
        (`first_offset`: the oldest of them, 0 when there are none); else 0."""
        if not 0 < first_offset <= self.trained_through_offset:
            return 0
        return self.users.get(user_id, 0)

    @property
    def name(self) -> str:
        return model_name(self.version)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def repository(self) -> Path:
        return self.root / "triton"

    def version_dir(self, version: int) -> Path:
        return self.root / "versions" / str(version)

    def versions(self) -> list[int]:
        directory = self.root / "versions"
        if not directory.exists():
            return []
        return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())

    def next_version(self) -> int:
        return max(self.versions(), default=0) + 1

    def live(self) -> LiveVersion | None:
        try:
            raw = json.loads((self.root / LIVE_FILE).read_text())
        except FileNotFoundError:
            return None
        return LiveVersion(**raw)

    def set_live(self, live: LiveVersion) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.root / LIVE_FILE, asdict(live))

    def write_serving(
        self,
        version: int,
        history_len: int,
        dimension: int,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        trained_through_offset: int,
        ranking: Mapping[str, float] | None = None,
    ) -> None:
        directory = self.version_dir(version)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(
            directory / SERVING_FILE,
            {
                "version": version,
                "history_len": history_len,
                "dimension": dimension,
                "users": list(user_ids),
                "items": list(item_ids),
                "trained_through_offset": trained_through_offset,
                "ranking": dict(ranking or {}),
                "written_at": time.time(),
            },
        )

    def serving(self, version: int, trained_through_offset: int = 0) -> ServingInfo:
        """`trained_through_offset` stands in for versions written before serving.json
        recorded it."""
        raw = json.loads((self.version_dir(version) / SERVING_FILE).read_text())
        return ServingInfo(
            version=int(raw["version"]),
            history_len=int(raw["history_len"]),
            dimension=int(raw["dimension"]),
            users={user: row for row, user in enumerate(raw["users"], start=1)},
            items={item: row for row, item in enumerate(raw["items"], start=1)},
            trained_through_offset=int(raw.get("trained_through_offset", trained_through_offset)),
            ranking={name: float(value) for name, value in raw.get("ranking", {}).items()},
        )

    def is_complete(self, version: int) -> bool:
        """serving.json is the last file a publish writes into a version: a version without
        it is a publish stopped part way (a trainer killed while saving), which nothing
        ever served."""
        return (self.version_dir(version) / SERVING_FILE).exists()

    def forget_users(self, version: int, user_ids: Collection[str]) -> set[str]:
        """Rewrites the version's serving.json without these users; returns those it had."""
        path = self.version_dir(version) / SERVING_FILE
        raw = json.loads(path.read_text())
        users: list[str] = raw["users"]
        found = set()
        for row, user in enumerate(users, start=1):
            if user in user_ids:
                users[row - 1] = forgotten_id(row)
                found.add(user)
        if found:
            write_json_atomically(path, raw)
        return found
