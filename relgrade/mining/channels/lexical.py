"""BM25 (bm25s) over product-tokenized titles (:mod:`relgrade.mining.tokenize`)."""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from relgrade.mining.tokenize import tokenize_many
from relgrade.mining.channels.base import Channel, ProgressFn, catalog_frame, item_texts, query_frame, result_frame

log = logging.getLogger("relgrade.mining")


class LexicalChannel(Channel):
    """BM25 (bm25s, Lucene variant) over product-tokenized item texts."""

    name, letter = "lexical", "L"

    # bm25s variants whose score is zero for absent terms: search multiplies a sparse
    # term-document matrix; bm25l / bm25+ score absent terms too and would need a dense pass
    METHODS = ("lucene", "robertson", "atire")

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", batch_size: int = 1000):
        super().__init__()
        if method not in self.METHODS:
            raise ValueError(f"LexicalChannel method must be one of {self.METHODS}, got {method!r}")
        self.k1, self.b, self.method, self.batch_size = k1, b, method, batch_size
        self.item_ids: np.ndarray | None = None
        self.retriever = None
        self.engine = None  # a RelgradeConfig with engine: ray shards the queries over Ray tasks

    def fit(self, catalog: pd.DataFrame) -> "LexicalChannel":
        import bm25s

        t0 = time.perf_counter()
        cat = catalog_frame(catalog)
        self.item_ids = cat["item_id"].to_numpy(dtype=object)
        tokens = tokenize_many(item_texts(cat))
        t_tok = time.perf_counter() - t0
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self.retriever.index(tokens, show_progress=False)
        self.vocab = self.retriever.vocab_dict
        self.stats.update(items=len(cat), vocab=len(self.vocab), tokenize_s=round(t_tok, 3),
                          fit_s=round(time.perf_counter() - t0, 3))
        return self

    def query_tokens(self, texts: list[str]) -> list[list[str]]:
        return [[t for t in toks if t in self.vocab] for toks in tokenize_many(texts)]

    def _term_doc_matrix(self) -> sp.csr_matrix:
        """bm25s' precomputed per-(token, document) BM25 weights as a (vocab x docs) CSR
        matrix, so a batch of queries is scored with one sparse product instead of
        bm25s' per-query ``np.add.at`` loop (same numbers, about 20x faster here)."""
        sc = self.retriever.scores
        n_tok = len(sc["indptr"]) - 1
        return sp.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(n_tok, sc["num_docs"]))

    def search(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        if self.retriever is None:
            raise RuntimeError("LexicalChannel.search before fit")
        t0 = time.perf_counter()
        q = query_frame(queries)
        if self.engine is not None:  # the same search, sharded by query over Ray workers
            from relgrade import engine

            out, info = engine.search_sharded(self.engine, self, q, k, progress=progress)
            self.stats["search_ray_worker_peak_rss_mb"], self.stats["search_ray_start_s"] = (info["peak_rss_mb"],
                                                                                             info["start_s"])
        else:
            out = self.search_local(q, k, progress)
        n = len(q)
        self.stats.update(queries=n, search_s=round(time.perf_counter() - t0, 3),
                          queries_without_hits=int(n - out["query_id"].nunique()) if n else 0)
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["engine"] = None  # a search worker searches in-process
        return state

    def search_local(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        """Top-``k`` of ``queries`` in this process, one query batch after another."""
        q = query_frame(queries)
        M = self._term_doc_matrix()
        qids, iids, ranks, scores = [], [], [], []
        n = len(q)
        qid_all = q["query_id"].to_numpy(dtype=object)
        for start in range(0, n, self.batch_size):
            toks = self.query_tokens(q["text"].iloc[start:start + self.batch_size].tolist())
            rows = [r for r, tl in enumerate(toks) for _ in tl]
            cols = [self.vocab[t] for tl in toks for t in tl]
            Q = sp.csr_matrix((np.ones(len(rows), dtype=M.dtype), (rows, cols)), shape=(len(toks), M.shape[0]))
            S = (Q @ M).tocsr()  # repeated query tokens count twice, as in bm25s
            S.sort_indices()
            for r in range(S.shape[0]):
                a, b = S.indptr[r], S.indptr[r + 1]
                d, v = S.indices[a:b], S.data[a:b]
                ok = v > 0
                d, v = d[ok], v[ok]
                if len(d) == 0:
                    continue
                if len(d) > k:
                    part = np.argpartition(-v, k - 1)[:k]
                    # keep every document tied with the k-th score, then cut deterministically
                    kth = v[part].min()
                    part = np.flatnonzero(v >= kth)
                    d, v = d[part], v[part]
                order = np.lexsort((d, -v))[:k]  # score desc, then catalog position
                d, v = d[order], v[order]
                qids.append(np.full(len(d), qid_all[start + r], dtype=object))
                iids.append(self.item_ids[d])
                ranks.append(np.arange(1, len(d) + 1))
                scores.append(v)
            if progress:
                progress(min(start + self.batch_size, n), n)
        return result_frame(qids, iids, ranks, scores)
