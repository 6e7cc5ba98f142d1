"""Optional chunk embeddings, computed inside the plane with a model that needs no download.

The model is scikit-learn's ``HashingVectorizer`` (word uni- and bigrams hashed into 2**18 features,
l2-normalized) followed by a ``SparseRandomProjection`` to ``dimensions`` floats with a fixed seed, then
l2-normalized again. Both steps are stateless: nothing is fitted on the corpus, so a chunk's vector
depends only on its text, incremental runs never need to re-embed old chunks, and a rerun gives equal
vectors. Cosine similarity of two vectors approximates that of the chunks' hashed term counts (the
Johnson-Lindenstrauss property), which is enough for keyword-like retrieval; it is not a semantic model.
Off by default; needs the ``embeddings`` extra (scikit-learn). No model hub is ever contacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from hybrid_dagster.documents.errors import MissingDependency

_FEATURES = 2**18


class EmbeddingConfig(BaseModel):
    """Which local model embeds chunks (only ``hashing`` is built in).

    Example:
        >>> EmbeddingConfig(dimensions=256)
    """

    kind: Literal["hashing"] = "hashing"
    dimensions: int = Field(default=256, ge=8, le=4096, description="Length of each embedding vector.")
    seed: int = Field(default=0, description="Seed of the random projection (fixed: vectors stay stable).")

    @property
    def model_name(self) -> str:
        return f"sklearn-hashing-{_FEATURES}-srp-{self.dimensions}-seed{self.seed}"


class HashingEmbedder:
    """Embeds texts with :class:`EmbeddingConfig`'s stateless model.

    Example:
        >>> HashingEmbedder(EmbeddingConfig(dimensions=64)).embed(["chest pain", "discharge"]).shape
        (2, 64)
    """

    def __init__(self, config: EmbeddingConfig) -> None:
        try:
            from sklearn.feature_extraction.text import HashingVectorizer
            from sklearn.random_projection import SparseRandomProjection
        except ImportError as missing:  # optional heavy dependency, with an install hint
            raise MissingDependency(
                "chunk embeddings need scikit-learn: pip install 'hybrid-dagster[embeddings]'"
            ) from missing
        self.config = config
        self.vectorizer: Any = HashingVectorizer(
            n_features=_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2", dtype=np.float32
        )
        self.projection: Any = SparseRandomProjection(
            n_components=config.dimensions, random_state=config.seed, dense_output=True
        ).fit(np.zeros((1, _FEATURES), dtype=np.float32))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.config.dimensions), dtype=np.float32)
        projected = np.asarray(self.projection.transform(self.vectorizer.transform(list(texts))))
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        return (projected / np.where(norms == 0, 1, norms)).astype(np.float32)
