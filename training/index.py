"""Encode texts with a bi-encoder (progress with rate and ETA) and keep a FAISS index of
the catalog beside a model (``index.faiss`` + ``index_items.json``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from relgrade.util import Progress

log = logging.getLogger("training.index")

INDEX_FILE = "index.faiss"
ITEMS_FILE = "index_items.json"


def encode(model, texts: list[str], batch_size: int = 128, max_seq_length: int = 32, precision: str = "auto",
           progress_every_s: float = 10.0, what: str = "encode") -> np.ndarray:
    """L2-normalized float32 embeddings; distinct texts only, longest first in chunks
    (little padding), bf16 autocast on CPU when asked."""
    import torch

    from relgrade.numerics import autocast, resolve_precision

    device = str(getattr(model, "device", "cpu"))
    precision = resolve_precision(precision, device)
    n = len(texts)
    dim = model.get_embedding_dimension()
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = np.argsort([-len(t) for t in uniq], kind="stable")
    enc = np.zeros((len(uniq), dim), dtype=np.float32)
    chunk = max(batch_size * 8, 512)
    prog = Progress(what, len(uniq), progress_every_s, log, unit="texts")
    old = model.max_seq_length
    model.max_seq_length = max_seq_length
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(order), chunk):
            idx = order[s:s + chunk]
            with torch.inference_mode(), autocast(device, precision):
                e = model.encode([uniq[i] for i in idx], batch_size=batch_size, convert_to_tensor=True,
                                 normalize_embeddings=False, show_progress_bar=False)
            enc[idx] = e.float().cpu().numpy()
            prog(min(s + chunk, len(order)))
    finally:
        model.max_seq_length = old
        if was_training:
            model.train()
    prog(len(order), force=True)
    enc /= np.maximum(np.linalg.norm(enc, axis=1, keepdims=True), 1e-12)
    return enc[inverse.ravel()]


def build_index(emb: np.ndarray, threads: int = 2):
    """Exact inner-product index (cosine on normalized embeddings)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index


def save_index(folder: str | Path, index, item_ids: list[str]) -> Path:
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX_FILE))
    (folder / ITEMS_FILE).write_text(json.dumps([str(i) for i in item_ids]))
    return folder / INDEX_FILE


def load_index(folder: str | Path):
    """(index, item_ids) or None when the folder has no index."""
    import faiss

    folder = Path(folder)
    if not (folder / INDEX_FILE).exists() or not (folder / ITEMS_FILE).exists():
        return None
    return faiss.read_index(str(folder / INDEX_FILE)), json.loads((folder / ITEMS_FILE).read_text())


def search(index, qemb: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, index.ntotal)
    D, I = [], []
    for s in range(0, len(qemb), batch):
        d, i = index.search(np.ascontiguousarray(qemb[s:s + batch], dtype=np.float32), k)
        D.append(d)
        I.append(i)
    if not D:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.vstack(D), np.vstack(I)
