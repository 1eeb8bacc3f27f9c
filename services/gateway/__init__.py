"""The gateway: the public API that backend systems call."""

# Its ranking policy and settings, grpc-free: the trainer's tuner ranks with them over the
# other services' domain code (services/trainer/in_process_sources.py), as do the offline
# studies and the benchmark's in-process yardstick, which also times the user tower with
# the inputs the gateway sends it.
from services.gateway.config import GatewayConfig
from services.gateway.recommend import (
    CONTENT_MODEL,
    TUNED_SETTINGS,
    Hit,
    InputsQuery,
    ModelSearch,
    ProfileSearch,
    RankingInputs,
    RankingSettings,
    Recommendation,
    Recommender,
    RecommendQuery,
    Related,
    Scored,
    TrendingQuery,
    UserHistory,
    UserVectorCache,
    user_inputs,
)

__all__ = [
    "CONTENT_MODEL",
    "TUNED_SETTINGS",
    "GatewayConfig",
    "Hit",
    "InputsQuery",
    "ModelSearch",
    "ProfileSearch",
    "RankingInputs",
    "RankingSettings",
    "Recommendation",
    "RecommendQuery",
    "Recommender",
    "Related",
    "Scored",
    "TrendingQuery",
    "UserHistory",
    "UserVectorCache",
    "user_inputs",
]
