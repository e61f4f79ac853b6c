"""Stage-1 pair features: cheap, vectorized over every (query, item) pair.

For pairs given as integer codes into the query and catalog tables, every feature is a
sparse row-gather plus an element-wise product (no Python loop over token lists), so
the whole mined union (millions of pairs) is featurized in seconds:

=====================  ===========================================================
feature                definition
=====================  ===========================================================
bm25                   BM25 (bm25s weights of the mining lexical channel) of the
                       query's product tokens against the item text
cosine                 cosine of the base MiniLM embeddings (the mining dense
                       channel's embedding cache: no re-encoding when it ran)
q_tokens, t_tokens     product-token counts of query and item text
overlap, overlap_frac  distinct query tokens found in the item text (count, share)
idf_overlap            IDF-weighted share of the query's tokens found in the item
jaccard                token-set Jaccard
num_tokens, num_frac   numeric query tokens (sizes, counts) and the share found
first_hit, last_hit    the first / last query token (often the head noun) found
phrase_hit             the normalized query is a substring of the normalized title
char_cosine            cosine of the query's and the item's character 3-4-gram TF-IDF
                       vectors (spelling-robust: ``dewalt dril`` still meets ``drill``)
char_containment       share of the query's character 3-4-grams found in the item
first_char, last_char  character-gram cosine of the first / last query word alone
                       against the item (the head noun, misspelt or not)
q_max_bm25, bm25_rel   the query's best BM25 over the whole catalog, and the pair's BM25
                       as a share of it (how this item compares with the best the
                       catalog offers for the query, whatever any retriever returned)
q_max_cos, cos_gap     the same for the cosine: the query's best cosine over the
                       catalog, and the pair's cosine minus it
rank_*, score_beh.     mining channel ranks (NaN when the channel missed the item or
agreement, prior       the pair is not in the union), agreement, retrieval prior
attr_*, <type>_agree   query-item attribute agreement (``grading.attribute_features``):
                       the attributes the query tagger found in the query, and whether
                       the item's title matches, contradicts or is silent on each
                       (:mod:`relgrade.attributes.agreement`)
=====================  ===========================================================

With ``grading.attribute_text`` the cross-encoders read the same agreement as text after
the item's title (``... [SEP] brand dewalt: contradicts; type drill: matches``).
"""
from __future__ import annotations

import logging
import re
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from relgrade.attributes.agreement import FEATURES as AGREEMENT_FEATURES
from relgrade.config import RelgradeConfig
from relgrade.mining.channels import catalog_frame, item_texts, query_frame
from relgrade.mining.tokenize import normalize, tokenize_many

log = logging.getLogger("relgrade.grading")

BASE_FEATURES = [
    "bm25", "cosine", "q_tokens", "t_tokens", "overlap", "overlap_frac", "idf_overlap", "jaccard",
    "num_tokens", "num_frac", "first_hit", "last_hit", "phrase_hit",
    "char_cosine", "char_containment", "first_char", "last_char",
    "q_max_bm25", "bm25_rel", "q_max_cos", "cos_gap",
    "rank_lexical", "rank_dense", "rank_behavioral", "score_behavioral", "agreement", "retrieval_prior",
]
UNION_FEATURES = ["rank_lexical", "rank_dense", "rank_behavioral", "score_behavioral", "agreement", "retrieval_prior"]
CONTENT_FEATURES = [f for f in BASE_FEATURES if f not in UNION_FEATURES]
ATTRIBUTE_FEATURES = list(AGREEMENT_FEATURES)
FEATURES = [*BASE_FEATURES, *ATTRIBUTE_FEATURES]  # the columns of transform_all


def feature_names(retrieval_features: bool, attribute_features: bool = False) -> list[str]:
    """Stage-1 inputs: the content features; plus the union's ranks, agreement, prior
    and behavioural score with ``grading.retrieval_features`` (off by default: a grade
    that depends on where a channel ranked the pair double-counts the retrieval prior in
    the target and cannot be computed for a pair that was never mined); plus the
    query-item attribute agreement with ``grading.attribute_features``."""
    return [f for f in FEATURES if (retrieval_features or f not in UNION_FEATURES)
            and (attribute_features or f not in ATTRIBUTE_FEATURES)]


def load_agreement(cfg: RelgradeConfig, catalog: pd.DataFrame, queries: pd.DataFrame | None = None):
    """The attribute agreement of the attributes stage's outputs (the catalog lexicon in
    the tagger folder, every query's tagged attributes). With ``queries``, every one of
    them must be in the attribute table: a table older than the queries (a re-ingest
    without `relgrade attributes`) is an error, not silently "names nothing"."""
    from relgrade.attributes.agreement import AttributeAgreement
    from relgrade.attributes.lexicon import Lexicon

    p = cfg.paths
    lex_path = p.tagger / "lexicon.json"
    missing = [str(x) for x in (p.query_attributes, lex_path) if not x.exists()]
    if missing:
        raise FileNotFoundError(f"grading.attribute_features needs the attributes stage's outputs {missing}: "
                                "run `relgrade attributes` first (or set grading.attribute_features: false)")
    from relgrade.io import read_parquet

    qa = read_parquet(p.query_attributes, columns=["query_id", "attributes_json"])
    if queries is not None:
        missing = ~queries["query_id"].astype(str).isin(set(qa["query_id"].astype(str)))
        if missing.any():
            from relgrade.contract import ContractError

            raise ContractError(f"{p.query_attributes} lacks {int(missing.sum())} of the {len(queries)} queries "
                                f"(e.g. {queries.loc[missing, 'query_id'].iloc[0]!r}): it is older than the query "
                                "table; run `relgrade attributes` again")
    return AttributeAgreement(Lexicon.load(lex_path), catalog, qa)


def _is_num(tok: str) -> bool:
    return tok[:1].isdigit()


_WORD = re.compile(r"[a-z0-9]+")


class CharGrams:
    """Character 3-4-gram TF-IDF (within word boundaries) fitted on the item texts:
    L2-normalized rows for items and queries, and the vectors of each query's first and
    last word alone. Query grams the catalog never uses carry no weight."""

    def __init__(self, item_texts: list[str], query_texts: list[str], min_df: int = 2):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), min_df=min_df, sublinear_tf=True,
                                   dtype=np.float32).fit(item_texts)
        self.items = self._rows(item_texts)
        self.queries = self._rows(query_texts)
        words = [_WORD.findall(t.lower()) or [""] for t in query_texts]
        self.first = self._rows([w[0] for w in words])
        self.last = self._rows([w[-1] for w in words])
        self.q_grams = np.diff(self.queries.indptr).astype(np.float32)

    def _rows(self, texts: list[str]) -> sp.csr_matrix:
        m = self.vec.transform(texts).tocsr()
        m.sort_indices()
        return m

    def features(self, qi: np.ndarray, ii: np.ndarray) -> np.ndarray:
        """(n, 4): char_cosine, char_containment, first_char, last_char."""
        T = self.items[ii]
        out = np.zeros((len(qi), 4), dtype=np.float32)
        P = self.queries[qi].multiply(T).tocsr()  # shared grams (tf-idf weights are > 0)
        P.eliminate_zeros()
        out[:, 0] = np.asarray(P.sum(axis=1)).ravel()
        out[:, 1] = np.diff(P.indptr) / np.maximum(self.q_grams[qi], 1.0)
        out[:, 2] = np.asarray(self.first[qi].multiply(T).sum(axis=1)).ravel()
        out[:, 3] = np.asarray(self.last[qi].multiply(T).sum(axis=1)).ravel()
        return out


class PairFeaturizer:
    """Fitted once on the catalog and query table; :meth:`transform` featurizes pairs.

    ``pair_codes(frame)`` maps ``query_id, item_id`` to row codes; pairs whose query or
    item is unknown raise (a grade must refer to the contract tables).
    """

    def __init__(self, cfg: RelgradeConfig, catalog: pd.DataFrame, queries: pd.DataFrame, union: pd.DataFrame | None = None):
        t0 = time.perf_counter()
        g = cfg.grading
        self.names = feature_names(g.retrieval_features, g.attribute_features)
        self.agreement = load_agreement(cfg, catalog, queries) if (g.attribute_features or g.attribute_text) else None
        self.attribute_text, self._agree_features = g.attribute_text, g.attribute_features
        self._cols = np.array([FEATURES.index(f) for f in self.names])
        self.cat = catalog_frame(catalog)
        self.q = query_frame(queries)
        self.item_index = pd.Index(self.cat["item_id"].astype(str))
        self.query_index = pd.Index(self.q["query_id"].astype(str))
        texts = item_texts(self.cat)
        self.item_text_arr = texts.to_numpy(dtype=object)
        self._fit_lexical(cfg, texts)
        # queries
        self._set_query_block(self._query_block(self.q["text"].tolist()))
        self.t_norm = np.array([" ".join(normalize(t).split()) for t in texts], dtype=object)
        self.chars = CharGrams(list(texts), self.q["text"].astype(str).tolist())
        self._fit_dense(cfg, texts)
        self.n_catalog = len(self.cat)
        self.q_max_bm25, self.q_max_cos = self._query_maxima()
        self._set_union(union)
        self._tagger_dir = cfg.paths.tagger
        self.fit_s = time.perf_counter() - t0
        log.info("grading features: %d items, %d queries, vocab %d, dense cache %s (%.1fs)",
                 len(self.cat), len(self.q), self.V, "hit" if self.dense_cache_hit else "miss", self.fit_s)

    def _fit_lexical(self, cfg: RelgradeConfig, texts: pd.Series) -> None:
        """The mining channel's BM25 weights per item over an alphabetical vocabulary, IDF and BM25 statistics."""
        from relgrade.mining.stage import make_channel

        # lexical: the mining channel's BM25 weights (same tokenizer, k1, b)
        lex = make_channel("lexical", cfg)
        lex.fit(self.cat)
        M = lex._term_doc_matrix()  # vocab x docs
        # bm25s numbers tokens in set order (differs per process with string hashing):
        # renumber alphabetically so sums run in the same order in every process and a
        # resumed run computes bit-identical features
        order = sorted(t for t, i in lex.vocab.items() if i < M.shape[0] and t)
        vocab = {t: i for i, t in enumerate(order)}
        self.V = len(order)
        cols = np.fromiter((lex.vocab[t] for t in order), dtype=np.int64, count=self.V)
        self.bm25_dt = M.T.tocsr()[:, cols].tocsr().astype(np.float32)  # docs x vocab
        self.bm25_dt.sort_indices()
        self.item_bin = self.bm25_dt.copy()
        self.item_bin.data[:] = 1.0
        self.item_bin.sum_duplicates()
        self.item_bin.data[:] = 1.0
        n_docs = self.item_bin.shape[0]
        df = np.asarray(self.item_bin.sum(axis=0)).ravel()
        self.idf = np.log1p(n_docs / np.maximum(df, 1.0)).astype(np.float32)
        self.max_idf = float(np.log1p(n_docs))
        self.t_tokens = np.array([len(set(t)) for t in tokenize_many(texts)], dtype=np.float32)
        numeric = np.zeros(self.V, dtype=bool)
        for tok, i in vocab.items():
            numeric[i] = _is_num(tok)
        self.numeric = numeric.astype(np.float32)
        self.vocab = vocab
        # BM25 statistics of the catalog, for items added later (extend)
        doc_tokens = tokenize_many(texts)
        self.bm25_k1, self.bm25_b = lex.k1, lex.b
        self.doc_freq = df.astype(np.float64)
        self.avg_doc_len = float(np.mean([len(t) for t in doc_tokens])) if doc_tokens else 1.0

    def _fit_dense(self, cfg: RelgradeConfig, texts: pd.Series) -> None:
        """The dense mining channel's embeddings of the items and the queries (its cache, encoded on a miss)."""
        from relgrade.mining.stage import make_channel

        # dense: the mining channel's cached embeddings (encoded on a cache miss)
        dense = make_channel("dense", cfg)
        self.dense = dense
        self.item_emb = dense.encode(texts.tolist(), what="items")
        self.query_emb = dense.encode(self.q["text"].tolist(), what="queries")
        self.dense_cache_hit = bool(dense.stats.get("items_cache_hit")) and bool(dense.stats.get("queries_cache_hit"))

    def _set_union(self, union: pd.DataFrame | None) -> None:
        """The union's (query, item) keys and channel-rank columns, for the retrieval features."""
        # union lookup for channel ranks
        self.union_key = None
        if union is not None and len(union):
            self.union_key = pd.MultiIndex.from_arrays([union["query_id"].astype(str), union["item_id"].astype(str)])
            self.union_vals = np.column_stack([
                pd.to_numeric(union[c], errors="coerce").astype("float64").to_numpy() if c in union.columns
                else np.full(len(union), np.nan) for c in UNION_FEATURES
            ]).astype(np.float32)

    def _query_block(self, texts: list[str]) -> dict:
        """Query-side arrays of ``texts`` (token counts over the catalog vocabulary, IDF
        mass, numeric tokens, first and last token, normalized text)."""
        vocab = self.vocab
        qtok = tokenize_many(texts)
        rows, cols, data = [], [], []
        n = len(qtok)
        q_tokens = np.zeros(n, dtype=np.float32)
        q_idf = np.zeros(n, dtype=np.float32)
        q_num = np.zeros(n, dtype=np.float32)
        first = np.full(n, -1, dtype=np.int64)
        last = np.full(n, -1, dtype=np.int64)
        for r, toks in enumerate(qtok):
            uniq = list(dict.fromkeys(toks))
            q_tokens[r] = len(uniq)
            q_num[r] = sum(_is_num(t) for t in uniq)
            q_idf[r] = sum(float(self.idf[vocab[t]]) if t in vocab else self.max_idf for t in uniq)
            for t in toks:  # repeated tokens count twice in BM25, as in bm25s
                if t in vocab:
                    rows.append(r)
                    cols.append(vocab[t])
                    data.append(1.0)
            if toks:
                first[r] = vocab.get(toks[0], -1)
                last[r] = vocab.get(toks[-1], -1)
        counts = sp.csr_matrix((np.array(data, dtype=np.float32), (rows, cols)), shape=(n, self.V))
        counts.sum_duplicates()
        qbin = counts.copy()
        qbin.data[:] = 1.0
        return {"q_counts": counts, "q_bin": qbin, "q_tokens": q_tokens, "q_idf": q_idf, "q_num": q_num,
                "q_first": first, "q_last": last,
                "q_norm": np.array([" ".join(normalize(t).split()) for t in texts], dtype=object)}

    def _set_query_block(self, b: dict) -> None:
        for k, v in b.items():
            setattr(self, k, v)

    def _query_maxima(self, batch: int = 512, q_counts=None, query_emb=None) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the highest BM25 and the highest cosine over every catalog item."""
        q_counts = self.q_counts if q_counts is None else q_counts
        query_emb = self.query_emb if query_emb is None else query_emb
        nq = q_counts.shape[0]
        mb = np.zeros(nq, dtype=np.float32)
        mc = np.full(nq, -1.0, dtype=np.float32)
        n_cat = self.n_catalog
        DT = self.bm25_dt[:n_cat].T.tocsr()  # vocab x docs
        for lo in range(0, nq, batch):
            hi = min(nq, lo + batch)
            S = (q_counts[lo:hi] @ DT).tocsr()
            if S.nnz:
                mb[lo:hi] = S.max(axis=1).toarray().ravel()
            mc[lo:hi] = (query_emb[lo:hi] @ self.item_emb[:n_cat].T).max(axis=1)
        return mb, mc

    def extend(self, items: pd.DataFrame | None = None, queries: pd.DataFrame | None = None) -> "PairFeaturizer":
        """Add items (``item_id, title``) and queries (``query_id, text``) that are not in
        the contract tables, featurized with the catalog's own statistics (BM25 document
        frequencies and lengths, the character-gram vocabulary, the base model): pairs of
        catalog items and known queries keep exactly the features they had."""
        if items is not None and len(items):
            self._extend_items(items)
        if queries is not None and len(queries):
            self._extend_queries(queries)
        return self

    def _extend_items(self, items: pd.DataFrame) -> None:
        """Appends the items not known yet to every item-side array."""
        it = items[["item_id", "title"]].astype(str).drop_duplicates("item_id")
        it = it[~it["item_id"].isin(self.item_index)]
        texts = it["title"].tolist()
        toks = tokenize_many(texts)
        M = self._bm25_rows(toks)
        B = M.copy()
        B.data[:] = 1.0
        self.bm25_dt = sp.vstack([self.bm25_dt, M]).tocsr()
        self.item_bin = sp.vstack([self.item_bin, B]).tocsr()
        self.t_tokens = np.r_[self.t_tokens, np.array([len(set(t)) for t in toks], dtype=np.float32)]
        self.t_norm = np.r_[self.t_norm, np.array([" ".join(normalize(t).split()) for t in texts], dtype=object)]
        self.chars.items = sp.vstack([self.chars.items, self.chars._rows(texts)]).tocsr()
        self.item_emb = np.vstack([self.item_emb, self.dense.encode(texts, what="extra items")])
        self.item_text_arr = np.r_[self.item_text_arr, np.array(texts, dtype=object)]
        self.item_index = self.item_index.append(pd.Index(it["item_id"]))
        if self.agreement is not None:
            self.agreement.extend(items=it)

    def _bm25_rows(self, toks: list[list[str]]) -> sp.csr_matrix:
        """BM25 weights of new documents (token lists) with the catalog's document frequencies and mean length."""
        rows, cols, data = [], [], []
        N = float(self.n_catalog)
        for r, tl in enumerate(toks):
            dl = len(tl)
            tf: dict[int, int] = {}
            for t in tl:
                if t in self.vocab:
                    tf[self.vocab[t]] = tf.get(self.vocab[t], 0) + 1
            for j, f in tf.items():
                idf = np.log(1.0 + (N - self.doc_freq[j] + 0.5) / (self.doc_freq[j] + 0.5))
                norm = self.bm25_k1 * ((1 - self.bm25_b) + self.bm25_b * dl / self.avg_doc_len)
                rows.append(r)
                cols.append(j)
                data.append(idf * f / (norm + f))
        M = sp.csr_matrix((np.array(data, dtype=np.float32), (rows, cols)), shape=(len(toks), self.V))
        M.sort_indices()
        return M

    def _extend_queries(self, queries: pd.DataFrame) -> None:
        """Appends the queries not known yet to every query-side array."""
        qq = queries[["query_id", "text"]].astype(str).drop_duplicates("query_id")
        qq = qq[~qq["query_id"].isin(self.query_index)]
        texts = qq["text"].tolist()
        b = self._query_block(texts)
        emb = self.dense.encode(texts, what="extra queries")
        mb, mc = self._query_maxima(q_counts=b["q_counts"], query_emb=emb)
        for k in ("q_tokens", "q_idf", "q_num", "q_first", "q_last", "q_norm"):
            setattr(self, k, np.r_[getattr(self, k), b[k]])
        self.q_counts = sp.vstack([self.q_counts, b["q_counts"]]).tocsr()
        self.q_bin = sp.vstack([self.q_bin, b["q_bin"]]).tocsr()
        self.query_emb = np.vstack([self.query_emb, emb])
        self.q_max_bm25, self.q_max_cos = np.r_[self.q_max_bm25, mb], np.r_[self.q_max_cos, mc]
        ch = self.chars
        words = [_WORD.findall(t.lower()) or [""] for t in texts]
        ch.queries = sp.vstack([ch.queries, ch._rows(texts)]).tocsr()
        ch.first = sp.vstack([ch.first, ch._rows([w[0] for w in words])]).tocsr()
        ch.last = sp.vstack([ch.last, ch._rows([w[-1] for w in words])]).tocsr()
        ch.q_grams = np.diff(ch.queries.indptr).astype(np.float32)
        self.q = pd.concat([self.q, qq], ignore_index=True)
        self.query_index = self.query_index.append(pd.Index(qq["query_id"]))
        if self.agreement is not None:
            self.agreement.extend(queries=qq, tagger_dir=self._tagger_dir)

    # ------------------------------------------------------------------ codes
    def pair_codes(self, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        qi = self.query_index.get_indexer(pairs["query_id"].astype(str))
        ii = self.item_index.get_indexer(pairs["item_id"].astype(str))
        bad = (qi < 0) | (ii < 0)
        if bad.any():
            from relgrade.contract import ContractError

            r = pairs[bad].iloc[0]
            raise ContractError(f"{int(bad.sum())} pair(s) name a query or item missing from the contract tables, "
                                f"e.g. ({r['query_id']!r}, {r['item_id']!r})")
        return qi, ii

    def cosine(self, pairs: pd.DataFrame) -> np.ndarray:
        """Base bi-encoder cosine of each (query, item) pair."""
        qi, ii = self.pair_codes(pairs)
        return np.einsum("ij,ij->i", self.query_emb[qi], self.item_emb[ii]) if len(qi) else np.zeros(0, np.float32)

    def union_features(self, pairs: pd.DataFrame) -> np.ndarray:
        out = np.full((len(pairs), len(UNION_FEATURES)), np.nan, dtype=np.float32)
        have = [c for c in UNION_FEATURES if c in pairs.columns]
        if len(have) == len(UNION_FEATURES):  # the pairs are union rows: take their own values
            for j, c in enumerate(UNION_FEATURES):
                out[:, j] = pd.to_numeric(pairs[c], errors="coerce").astype("float64").to_numpy()
        elif self.union_key is not None:
            pos = self.union_key.get_indexer(pd.MultiIndex.from_arrays(
                [pairs["query_id"].astype(str), pairs["item_id"].astype(str)]))
            ok = pos >= 0
            out[ok] = self.union_vals[pos[ok]]
        agr = UNION_FEATURES.index("agreement")
        pri = UNION_FEATURES.index("retrieval_prior")
        out[:, agr] = np.nan_to_num(out[:, agr], nan=0.0)  # not in the union: no channel found it
        out[:, pri] = np.nan_to_num(out[:, pri], nan=0.0)
        return out

    # ------------------------------------------------------------------ features
    def transform(self, pairs: pd.DataFrame) -> np.ndarray:
        """(n, len(self.names)) float32 matrix for ``pairs`` (query_id, item_id)."""
        return self.transform_all(pairs)[:, self._cols]

    def transform_all(self, pairs: pd.DataFrame) -> np.ndarray:
        """(n, len(FEATURES)) float32 matrix for ``pairs`` (query_id, item_id [, union columns])."""
        qi, ii = self.pair_codes(pairs)
        n = len(pairs)
        X = np.zeros((n, len(FEATURES)), dtype=np.float32)
        if n == 0:
            return X
        Qc = self.q_counts[qi]
        Qb = self.q_bin[qi]
        Tb = self.item_bin[ii]
        bm25 = np.asarray(Qc.multiply(self.bm25_dt[ii]).sum(axis=1)).ravel()
        hit = Qb.multiply(Tb).tocsr()
        overlap = np.asarray(hit.sum(axis=1)).ravel()
        idf_hit = hit @ self.idf
        num_hit = hit @ self.numeric
        q_tok = self.q_tokens[qi]
        t_tok = self.t_tokens[ii]
        cos = np.einsum("ij,ij->i", self.query_emb[qi], self.item_emb[ii])
        first, last = self.q_first[qi], self.q_last[qi]

        def has(tokcol: np.ndarray) -> np.ndarray:
            ok = tokcol >= 0
            v = np.zeros(n, dtype=np.float32)
            if ok.any():
                v[ok] = np.asarray(self.item_bin[ii[ok], tokcol[ok]]).ravel()
            return v

        qn, tn = self.q_norm[qi], self.t_norm[ii]
        phrase = np.fromiter((a in b for a, b in zip(qn, tn)), dtype=bool, count=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            X[:, 0] = bm25
            X[:, 1] = cos
            X[:, 2] = q_tok
            X[:, 3] = t_tok
            X[:, 4] = overlap
            X[:, 5] = np.where(q_tok > 0, overlap / np.maximum(q_tok, 1), 0.0)
            X[:, 6] = np.where(self.q_idf[qi] > 0, idf_hit / np.maximum(self.q_idf[qi], 1e-6), 0.0)
            X[:, 7] = overlap / np.maximum(q_tok + t_tok - overlap, 1)
            X[:, 8] = self.q_num[qi]
            X[:, 9] = np.where(self.q_num[qi] > 0, num_hit / np.maximum(self.q_num[qi], 1), np.nan)
            X[:, 10] = has(first)
            X[:, 11] = has(last)
            X[:, 12] = phrase
        X[:, 13:17] = self.chars.features(qi, ii)
        qmb, qmc = self.q_max_bm25[qi], self.q_max_cos[qi]
        X[:, 17] = qmb
        X[:, 18] = np.where(qmb > 0, bm25 / np.maximum(qmb, 1e-6), 0.0)
        X[:, 19] = qmc
        X[:, 20] = cos - qmc
        X[:, 21:27] = self.union_features(pairs)
        if self.agreement is not None and self._agree_features:
            X[:, 27:] = self.agreement.features(pairs)
        else:
            X[:, 27:] = np.nan
        return X

    def texts(self, pairs: pd.DataFrame) -> tuple[list[str], list[str]]:
        """(query texts, item texts) for the cross-encoder stages; with
        ``grading.attribute_text`` each item text ends with the attribute agreement."""
        qi, ii = self.pair_codes(pairs)
        qt = self.q["text"].to_numpy(dtype=object)[qi]
        it = self.item_text_arr[ii]
        if self.attribute_text and self.agreement is not None:
            agree = self.agreement.texts(pairs)
            it = [f"{t} [SEP] {a}" if a else t for t, a in zip(it, agree)]
        return list(qt), list(it)
