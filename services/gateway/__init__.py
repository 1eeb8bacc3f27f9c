"""The gateway: the public API that backend systems call."""

# Its ranking policy and settings, grpc-free: the benchmark's in-process yardstick runs
# them over the services' domain code (suite/in_process.py) and times the user tower with
# the inputs the gateway sends it.
from services.gateway.config import GatewayConfig
from services.gateway.recommend import (
    CONTENT_MODEL,
    Hit,
    InputsQuery,
    ModelSearch,
    ProfileSearch,
    RankingInputs,
    Recommendation,
    Recommender,
    RecommendQuery,
    Related,
    Scored,
    UserHistory,
    UserVectorCache,
    user_inputs,
)

__all__ = [
    "CONTENT_MODEL",
    "GatewayConfig",
    "Hit",
    "InputsQuery",
    "ModelSearch",
    "ProfileSearch",
    "RankingInputs",
    "Recommendation",
    "RecommendQuery",
    "Recommender",
    "Related",
    "Scored",
    "UserHistory",
    "UserVectorCache",
    "user_inputs",
]
