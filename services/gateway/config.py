from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.gateway.recommend import TUNED_SETTINGS, RankingSettings
from shared.config import Env, default_address, model_dir
from shared.server_config import ServerConfig

PREFIX = "RECSYS_GATEWAY_"


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    features_address: str
    retrieval_address: str
    call_timeout_s: float  # reads and searches
    write_timeout_s: float  # upserts: encoding a full batch of text takes seconds on a CPU
    recent_history: int  # interactions that make a user's profile
    profile_half_life_s: float
    popularity_weight: float  # trending popularity added to profile similarity, at most this
    trending_candidates: int
    embedding_address: str
    model_dir: Path
    model_poll_s: float  # how often the live model version is checked
    embedding_timeout_s: float  # one user-tower call, retries included
    model_popularity_weight: float  # as popularity_weight, for the trained model's scores
    model_content_weight: float  # content-profile similarity added to the model's scores
    new_item_share: float  # of k, places kept for items the serving version has not learned
    co_occurrence_weight: float  # co-occurrence added to profile similarity, at most this
    model_co_occurrence_weight: float  # the same, added to the trained model's scores
    co_occurrence_candidates: int  # related items asked of features per Recommend
    trending_half_life_s: float  # the popularity features ranks by; 0: features' default
    newcomer_half_life_s: float  # the same, for users with no history; 0: the above
    trainer_address: str  # the continual trainer, told of forgotten users; "": none deployed
    user_vector_cache: int  # users whose last user-tower vector is kept; 0: none
    history_cache_ids: int  # item ids, in all, of the users' histories kept; 0: none
    streamed_reads: bool  # Recommend's reads over long-lived streams (shared/streamed.py)
    # The tuned settings set here (RECSYS_GATEWAY_<NAME>): fixed, whatever the trainer
    # chooses from the data; the others are the defaults until a version brings its own.
    pinned: frozenset[str]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        env = Env(PREFIX, environ)
        return cls(
            server=ServerConfig.from_env(env, "gateway"),
            features_address=env.address("FEATURES_ADDRESS", default_address("features")),
            retrieval_address=env.address("RETRIEVAL_ADDRESS", default_address("retrieval")),
            call_timeout_s=env.number("CALL_TIMEOUT_S", 2.0, minimum=0.01),
            write_timeout_s=env.number("WRITE_TIMEOUT_S", 120.0, minimum=0.1),
            recent_history=env.integer("RECENT_HISTORY", 50, minimum=1, maximum=1000),
            profile_half_life_s=env.number("PROFILE_HALF_LIFE_S", 7 * 24 * 3600.0, minimum=1.0),
            popularity_weight=env.number("POPULARITY_WEIGHT", 1.0, minimum=0.0),
            trending_candidates=env.integer("TRENDING_CANDIDATES", 200, minimum=1, maximum=1000),
            embedding_address=env.address("EMBEDDING_ADDRESS", default_address("embedding")),
            model_dir=model_dir(environ),
            model_poll_s=env.number("MODEL_POLL_S", 0.5, minimum=0.01),
            embedding_timeout_s=env.number("EMBEDDING_TIMEOUT_S", 0.5, minimum=0.001),
            model_popularity_weight=env.number("MODEL_POPULARITY_WEIGHT", 1.0, minimum=0.0),
            model_content_weight=env.number("MODEL_CONTENT_WEIGHT", 1.0, minimum=0.0),
            new_item_share=env.number("NEW_ITEM_SHARE", 0.1, minimum=0.0, maximum=1.0),
            # Off until the trainer finds it helps on the data (ranking_tuner.py): at 1.0
            # on MovieLens it lifts the prequential figures and lowers the blocks' ones.
            co_occurrence_weight=env.number("CO_OCCURRENCE_WEIGHT", 0.0, minimum=0.0),
            model_co_occurrence_weight=env.number("MODEL_CO_OCCURRENCE_WEIGHT", 0.0, minimum=0.0),
            co_occurrence_candidates=env.integer(
                "CO_OCCURRENCE_CANDIDATES", 100, minimum=1, maximum=1000
            ),
            trending_half_life_s=env.number("TRENDING_HALF_LIFE_S", 0.0),
            newcomer_half_life_s=env.number("NEWCOMER_HALF_LIFE_S", 0.0),
            trainer_address=env.optional_address("TRAINER_ADDRESS", default_address("trainer")),
            user_vector_cache=env.integer("USER_VECTOR_CACHE", 10_000, minimum=0),
            history_cache_ids=env.integer("HISTORY_CACHE_IDS", 500_000, minimum=0),
            streamed_reads=env.integer("STREAMED_READS", 1, maximum=1) == 1,
            pinned=frozenset(name for name in TUNED_SETTINGS if env.is_set(name.upper())),
        )

    def ranking(self) -> RankingSettings:
        return RankingSettings(
            recent_history=self.recent_history,
            profile_half_life_s=self.profile_half_life_s,
            popularity_weight=self.popularity_weight,
            trending_candidates=self.trending_candidates,
            model_popularity_weight=self.model_popularity_weight,
            model_content_weight=self.model_content_weight,
            new_item_share=self.new_item_share,
            co_occurrence_weight=self.co_occurrence_weight,
            model_co_occurrence_weight=self.model_co_occurrence_weight,
            co_occurrence_candidates=self.co_occurrence_candidates,
            trending_half_life_s=self.trending_half_life_s,
            newcomer_half_life_s=self.newcomer_half_life_s,
            pinned=self.pinned,
        )
