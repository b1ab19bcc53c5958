"""Embedding: a region's tiles read, run through a model and written to the store.

Only what is missing is computed; every run is recorded with its outcome.
"""

from backend.embedding.pipeline import EmbedResult, embed_region

__all__ = ["EmbedResult", "embed_region"]
