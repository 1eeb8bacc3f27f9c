"""The retrieval service: FAISS indexes with upsert, delete, filters and versions."""

# For in-process use (the benchmark's baseline): the index the service searches, rebuilt
# from what a service stored.
from services.retrieval.indexes import read_stored_index
from services.retrieval.vector_index import IndexSettings, VectorIndex

__all__ = ["IndexSettings", "VectorIndex", "read_stored_index"]
