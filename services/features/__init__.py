"""The features service: the catalogue, the text encoder, the event log, users' histories."""

# For the offline evaluation, which encodes the catalogue and ranks by trending in-process.
from services.features.encoder import TextEncoder
from services.features.trending import Trending

__all__ = ["TextEncoder", "Trending"]
