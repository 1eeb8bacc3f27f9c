"""The features service: the catalogue, the text encoder, the event log, users' histories."""

# For the offline evaluation, which encodes the catalogue and ranks by trending in-process,
# and the benchmark's in-process yardstick, which reads a suite's histories and trending
# from a copy of its stores.
from services.features.behaviour import Behaviour
from services.features.catalog_store import CatalogStore
from services.features.co_occurrence import CoOccurrence
from services.features.config import FeaturesConfig
from services.features.encoder import TextEncoder
from services.features.event_log import SqliteEventLog
from services.features.trending import Trending

__all__ = [
    "Behaviour",
    "CatalogStore",
    "CoOccurrence",
    "FeaturesConfig",
    "SqliteEventLog",
    "TextEncoder",
    "Trending",
]
