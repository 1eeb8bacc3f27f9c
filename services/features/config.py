from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.features.behaviour import HISTORY_CACHE_IDS
from services.features.co_occurrence import NEIGHBOURS, WINDOW
from services.features.trending import Trending
from shared.config import Env, data_root
from shared.server_config import ServerConfig

PREFIX = "RECSYS_FEATURES_"
DAY_S = 86_400.0
# A day to a year: no one decay fits every catalogue (news lives for days, films for
# years), so features keeps several and the trainer tunes which one the ranking uses.
TRENDING_HALF_LIVES_S = (DAY_S, 7 * DAY_S, 30 * DAY_S, 365 * DAY_S)


@dataclass(frozen=True)
class FeaturesConfig:
    server: ServerConfig
    data_dir: Path
    encode_batch_size: int
    torch_threads: int
    trending_half_life_s: float  # the popularity's half-life when a request names none
    trending_half_lives_s: tuple[float, ...]  # kept too, for the ranking to choose from
    history_cache_ids: int  # item ids of the histories kept in memory, in all; 0: none
    co_occurrence_window: int  # a user's latest distinct items a new one counts as with
    co_occurrence_neighbours: int  # the strongest pairs each item keeps

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FeaturesConfig:
        env = Env(PREFIX, environ)
        return cls(
            server=ServerConfig.from_env(env, "features"),
            data_dir=env.path("DATA_DIR", data_root(environ) / "features"),
            encode_batch_size=env.integer("ENCODE_BATCH_SIZE", 64, minimum=1, maximum=4096),
            torch_threads=env.integer("TORCH_THREADS", 0, minimum=0, maximum=256),
            trending_half_life_s=env.number("TRENDING_HALF_LIFE_S", 7 * DAY_S, minimum=1.0),
            trending_half_lives_s=env.numbers(
                "TRENDING_HALF_LIVES_S", TRENDING_HALF_LIVES_S, minimum=1.0
            ),
            history_cache_ids=env.integer("HISTORY_CACHE_IDS", HISTORY_CACHE_IDS, minimum=0),
            co_occurrence_window=env.integer("CO_OCCURRENCE_WINDOW", WINDOW, minimum=1),
            co_occurrence_neighbours=env.integer(
                "CO_OCCURRENCE_NEIGHBOURS", NEIGHBOURS, minimum=1, maximum=10_000
            ),
        )

    def trending(self) -> Trending:
        """The popularity these settings keep."""
        return Trending(self.trending_half_life_s, self.trending_half_lives_s)
