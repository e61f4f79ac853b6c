"""A query-item engagement graph built only from events strictly before ``as_of``
(filtered at construction), extended to queries without engagement of their own through
lexically similar logged queries."""
from __future__ import annotations

import logging
import time
from datetime import datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp

from relgrade.contract import ContractError
from relgrade.mining.tokenize import tokenize_many
from relgrade.util import to_utc
from relgrade.mining.channels.base import Channel, ProgressFn, catalog_frame, empty_results, query_frame, result_frame

log = logging.getLogger("relgrade.mining")


class BehavioralChannel(Channel):
    """Query-item engagement graph from the log *before* ``as_of``.

    At construction the events are cut to ``event_ts < as_of`` (and, with
    ``lookback_days``, ``>= as_of - lookback``); nothing later is kept on the object.
    Edge weight per (query, item)::

        w = sum over events of (click_w*click + cart_w*add_to_cart + order_w*order)
                               * 0.5 ** (age_days / half_life_days)

    normalized per query to [0, 1] (``own``). A query is extended with its
    ``neighbors`` most similar logged queries (cosine of binary TF-IDF vectors over
    product tokens, at least ``min_similarity``)::

        score(q, i) = own(q, i) + neighbor_weight * sum_n sim(q, n) own(n, i) / sum_n sim(q, n)

    so queries with no engagement of their own still get items their look-alikes led
    to, and a query's own engagement always dominates.
    """

    name, letter = "behavioral", "B"

    def __init__(
        self,
        events: pd.DataFrame,
        as_of: datetime,
        query_texts: pd.DataFrame | None = None,
        click_weight: float = 1.0,
        add_to_cart_weight: float = 2.0,
        order_weight: float = 3.0,
        half_life_days: float | None = 28.0,
        lookback_days: float | None = None,
        neighbors: int = 10,
        min_similarity: float = 0.5,
        neighbor_weight: float = 0.5,
    ):
        super().__init__()
        need = ["event_ts", "query_id", "item_id", "click", "add_to_cart", "order"]
        if events is None:
            events = pd.DataFrame({c: [] for c in need})
        missing = [c for c in need if c not in events.columns]
        if missing:
            raise ContractError(f"behavioral channel: events missing column(s) {missing}")
        self.as_of = to_utc(as_of)
        ts = pd.to_datetime(events["event_ts"], utc=True)
        keep = (ts < self.as_of).to_numpy()
        if lookback_days is not None:
            keep &= (ts >= self.as_of - pd.Timedelta(days=lookback_days)).to_numpy()
        ev = events.loc[keep, need].copy()
        ev["event_ts"] = ts[keep]
        # the only copy of the log this object holds: strictly before as_of
        self.events = ev.reset_index(drop=True)
        self.stats.update(
            as_of=self.as_of.isoformat(),
            events_in=int(len(events)),
            events_used=int(len(ev)),
            events_dropped_at_or_after_as_of=int((ts >= self.as_of).sum()),
            max_event_ts=None if ev.empty else ev["event_ts"].max().isoformat(),
        )
        self.query_texts = None if query_texts is None else query_frame(query_texts)
        self.weights = (click_weight, add_to_cart_weight, order_weight)
        self.half_life_days, self.neighbors = half_life_days, neighbors
        self.min_similarity, self.neighbor_weight = min_similarity, neighbor_weight
        self.own: sp.csr_matrix | None = None

    def fit(self, catalog: pd.DataFrame) -> "BehavioralChannel":
        t0 = time.perf_counter()
        cat = catalog_frame(catalog)
        self.item_ids = cat["item_id"].to_numpy(dtype=object)
        item_index = pd.Index(self.item_ids)
        ev = self.events
        cw, aw, ow = self.weights
        w = (cw * pd.to_numeric(ev["click"]).to_numpy(np.float64)
             + aw * pd.to_numeric(ev["add_to_cart"]).to_numpy(np.float64)
             + ow * pd.to_numeric(ev["order"]).to_numpy(np.float64))
        if self.half_life_days:
            age = (self.as_of - ev["event_ts"]).dt.total_seconds().to_numpy() / 86400.0
            w = w * np.power(0.5, age / self.half_life_days)
        ii = item_index.get_indexer(ev["item_id"].astype(str))
        m = (w > 0) & (ii >= 0)
        qid = ev["query_id"].astype(str).to_numpy()[m]
        self.src_query_ids, qi = np.unique(qid, return_inverse=True)
        own = sp.csr_matrix((w[m], (qi.ravel(), ii[m])), shape=(len(self.src_query_ids), len(self.item_ids)))
        own.sum_duplicates()
        rowmax = own.max(axis=1).toarray().ravel()
        own = sp.diags(1.0 / np.maximum(rowmax, 1e-300)) @ own
        self.own = own.tocsr()
        self.src_index = pd.Index(self.src_query_ids)
        self.stats.update(items=len(cat), logged_queries=len(self.src_query_ids), edges=int(self.own.nnz),
                          fit_s=round(time.perf_counter() - t0, 3))
        return self

    def _similar(self, targets: pd.DataFrame) -> sp.csr_matrix:
        """Row-normalized (targets x logged queries) similarity, top ``neighbors`` per
        row with cosine >= min_similarity, self excluded."""
        n_t, n_s = len(targets), len(self.src_query_ids)
        if n_s == 0 or self.neighbors <= 0 or self.neighbor_weight <= 0:
            return sp.csr_matrix((n_t, n_s))
        texts = self.query_texts if self.query_texts is not None else targets
        text_of = dict(zip(texts["query_id"], texts["text"]))
        text_of.update(zip(targets["query_id"], targets["text"]))
        src_texts = [text_of.get(q, "") for q in self.src_query_ids]
        t_tok = tokenize_many(targets["text"].tolist())
        s_tok = tokenize_many(src_texts)
        vocab: dict[str, int] = {}
        for toks in s_tok:
            for t in toks:
                vocab.setdefault(t, len(vocab))

        def binary(tok_lists):
            rows, cols = [], []
            for r, toks in enumerate(tok_lists):
                ids = {vocab[t] for t in toks if t in vocab}
                rows.extend([r] * len(ids))
                cols.extend(ids)
            return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tok_lists), len(vocab)))

        S, T = binary(s_tok), binary(t_tok)
        df = np.asarray(S.sum(axis=0)).ravel()
        idf = np.log((1 + len(s_tok)) / (1 + df)) + 1.0
        S, T = S @ sp.diags(idf), T @ sp.diags(idf)

        def l2(M):
            nrm = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
            return sp.diags(1.0 / np.maximum(nrm, 1e-12)) @ M

        S, T = l2(S).tocsr(), l2(T).tocsr()
        ST = S.T.tocsc()
        self_idx = self.src_index.get_indexer(targets["query_id"])
        rows, cols, vals = [], [], []
        for s in range(0, n_t, 1000):
            block = (T[s:s + 1000] @ ST).tocsr()
            for r in range(block.shape[0]):
                a, b = block.indptr[r], block.indptr[r + 1]
                c, v = block.indices[a:b], block.data[a:b]
                ok = (v >= self.min_similarity) & (c != self_idx[s + r])
                c, v = c[ok], v[ok]
                if len(c) > self.neighbors:
                    top = np.lexsort((c, -v))[: self.neighbors]
                    c, v = c[top], v[top]
                if len(c):
                    rows.append(np.full(len(c), s + r))
                    cols.append(c)
                    vals.append(v / v.sum())
        if not rows:
            return sp.csr_matrix((n_t, n_s))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_t, n_s))

    def search(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        if self.own is None:
            raise RuntimeError("BehavioralChannel.search before fit")
        t0 = time.perf_counter()
        q = query_frame(queries)
        n = len(q)
        if n == 0 or self.own.shape[0] == 0:
            if progress:
                progress(n, n)
            self.stats.update(queries=n, queries_with_own=0, queries_with_hits=0, search_s=0.0)
            return empty_results()
        own_idx = self.src_index.get_indexer(q["query_id"])
        has_own = own_idx >= 0
        sel = sp.csr_matrix((np.ones(int(has_own.sum())), (np.flatnonzero(has_own), own_idx[has_own])),
                            shape=(n, self.own.shape[0]))
        W = self._similar(q)
        scores = (sel @ self.own + self.neighbor_weight * (W @ self.own)).tocsr()
        qids, iids, ranks, vals = [], [], [], []
        qid_arr = q["query_id"].to_numpy(dtype=object)
        step = max(1, n // 20)
        for r in range(n):
            a, b = scores.indptr[r], scores.indptr[r + 1]
            if b > a:
                c, v = scores.indices[a:b], scores.data[a:b]
                ok = v > 0
                c, v = c[ok], v[ok]
                top = np.lexsort((c, -v))[:k]
                qids.append(np.full(len(top), qid_arr[r], dtype=object))
                iids.append(self.item_ids[c[top]])
                ranks.append(np.arange(1, len(top) + 1))
                vals.append(v[top])
            if progress and ((r + 1) % step == 0 or r + 1 == n):
                progress(r + 1, n)
        out = result_frame(qids, iids, ranks, vals)
        self.stats.update(queries=n, queries_with_own=int(has_own.sum()),
                          queries_with_hits=int(out["query_id"].nunique()) if len(out) else 0,
                          search_s=round(time.perf_counter() - t0, 3))
        return out
