"""The retrieval service: FAISS indexes with upsert, delete, filters and versions."""

# For in-process use (the benchmark's baselines): the indexes the service searches, rebuilt
# from what a service stored, and the registry that answers its searches.
from services.retrieval.indexes import (
    IndexRegistry,
    ProfileTerm,
    Record,
    ReservedSlots,
    read_stored_index,
)
from services.retrieval.vector_index import IndexSettings, VectorIndex
from services.retrieval.vector_store import VectorStore

__all__ = [
    "IndexRegistry",
    "IndexSettings",
    "ProfileTerm",
    "Record",
    "ReservedSlots",
    "VectorIndex",
    "VectorStore",
    "read_stored_index",
]
