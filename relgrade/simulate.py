"""Deterministic engagement simulator: a search log (impressions, clicks, add-to-carts,
orders) for a catalog, its queries and their human judgments.

Everything random is a function of ``SimulationConfig.seed``:

* hidden per-item attributes (popularity, price, title appeal, margin, advertiser
  flag, bid) and per-(item, day) ad budgets come from a counter-based hash of
  ``(seed, item_id[, day])``, so an item keeps its attributes whatever subset of the
  catalog is simulated and in whatever row order;
* the latent grade of an unjudged candidate comes from a hash of
  ``(seed, query_id, item_id)``;
* daily traffic, ranker noise and click draws come from one numpy ``Generator`` per
  day, seeded with ``(seed, day)``.

The model (candidate pools, production ranker, ad allocation with budgets, position
based click model, add-to-cart and order funnel) is documented in docs/simulator.md;
the values live in :class:`relgrade.config.SimulationConfig`.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri

from relgrade.config import SimulationConfig
from relgrade.contract import conform
# the traffic model (query popularity and segments) is ground: ingest derives segments with it
from relgrade.segments import query_popularity, query_segments  # noqa: F401 (query_segments: re-exported)
from relgrade.util import to_utc

log = logging.getLogger("relgrade.simulate")

DAY_US = 86_400_000_000
_LOG_EVERY_S = 5.0

# hash streams (one per attribute, so attributes are independent)
_S_POP, _S_PRICE, _S_TITLE, _S_MARGIN, _S_ADV, _S_BID, _S_BUDGET, _S_GRADE, _S_DAY = range(1, 10)


# --------------------------------------------------------------------------- hashing
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized (uint64 arithmetic wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _keys(ids, seed: int) -> np.ndarray:
    """64-bit key per id: first 8 bytes of sha1(f"{seed}:{id}")."""
    return np.fromiter(
        (int.from_bytes(hashlib.sha1(f"{seed}:{i}".encode("utf-8")).digest()[:8], "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def _stream(keys: np.ndarray, stream: int, extra: np.ndarray | int = 0) -> np.ndarray:
    s = _mix(np.full(1, stream, dtype=np.uint64))
    e = _mix(np.asarray(extra, dtype=np.int64).astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
    return _mix(keys ^ s ^ e)


def _uniform(keys: np.ndarray, stream: int, extra: np.ndarray | int = 0) -> np.ndarray:
    """Uniform in (0, 1), 53 bits."""
    return ((_stream(keys, stream, extra) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal(keys: np.ndarray, stream: int, extra: np.ndarray | int = 0) -> np.ndarray:
    return ndtri(_uniform(keys, stream, extra))


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- items
def _brand_signal(titles: pd.Series) -> np.ndarray:
    """1 for an all-caps first word (BEHR, KOHLER, GE), 0.5 for a Capitalised one,
    0 otherwise."""
    first = titles.fillna("").astype(str).str.strip().str.split(n=1).str[0].fillna("")
    caps = first.str.fullmatch(r"[A-Z][A-Z\-]+").fillna(False).to_numpy()
    cap1 = first.str.fullmatch(r"[A-Z][a-z][A-Za-z\-']*").fillna(False).to_numpy()
    return np.where(caps, 1.0, np.where(cap1, 0.5, 0.0))


def item_attributes(catalog: pd.DataFrame, sim: SimulationConfig) -> pd.DataFrame:
    """Hidden per-item attributes, indexed by item_id (sorted), deterministic by seed.

    popularity_z  z of log popularity (popularity is lognormal; its log is N(0,1))
    cheapness     -z(log price) (price is lognormal; its log is N(0,1))
    title_appeal  z(brand signal + z(log title length) + N(0,1)), standardized over the
                  catalog passed in (the only attribute relative to the catalog)
    margin        Uniform(0, 1)
    advertiser    Bernoulli(advertiser_share)
    bid           lognormal, median 1, sigma ad_bid_sigma (advertisers; 0 otherwise)
    """
    cat = catalog[["item_id", "title"]].copy()
    cat["item_id"] = cat["item_id"].astype(str)
    cat = cat.drop_duplicates("item_id").sort_values("item_id", kind="stable").reset_index(drop=True)
    keys = _keys(cat["item_id"].to_numpy(), sim.seed)
    pop_z = _normal(keys, _S_POP)
    log_price = _normal(keys, _S_PRICE)
    titles = cat["title"].fillna("").astype(str)
    length = np.log1p(titles.str.len().to_numpy(dtype=np.float64))
    appeal = _z(_brand_signal(titles) + _z(length) + _normal(keys, _S_TITLE))
    adv = _uniform(keys, _S_ADV) < sim.advertiser_share
    bid = np.where(adv, np.exp(sim.ad_bid_sigma * _normal(keys, _S_BID)), 0.0)
    return pd.DataFrame(
        {
            "popularity_z": pop_z,
            "cheapness": -log_price,  # log price is N(0, 1): already a z-score
            "title_appeal": appeal,
            "margin": _uniform(keys, _S_MARGIN),
            "advertiser": adv,
            "bid": bid,
        },
        index=pd.Index(cat["item_id"], name="item_id"),
    )


def _day_number(day) -> int:
    """Days since 1970-01-01 UTC of a date-like (or an int already in that unit)."""
    if isinstance(day, (int, np.integer)):
        return int(day)
    return int(to_utc(day).normalize().value // (DAY_US * 1000))


def ad_budgets(item_ids, day, sim: SimulationConfig) -> pd.Series:
    """Daily ad impression budget of each item on calendar ``day`` (UTC date-like or
    days since epoch): floor(lognormal(median ad_budget_median, sigma ad_budget_sigma))
    for advertisers, 0 for other items. Deterministic by (seed, item_id, day)."""
    ids = pd.Series(item_ids).astype(str)
    keys = _keys(ids.to_numpy(), sim.seed)
    adv = _uniform(keys, _S_ADV) < sim.advertiser_share
    b = _budget_from_keys(keys, _day_number(day), sim)
    return pd.Series(np.where(adv, b, 0), index=ids.to_numpy(), name="ad_budget")


def _budget_from_keys(keys: np.ndarray, day_no: int, sim: SimulationConfig) -> np.ndarray:
    z = _normal(keys, _S_BUDGET, day_no)
    return np.floor(sim.ad_budget_median * np.exp(sim.ad_budget_sigma * z)).astype(np.int64)


# --------------------------------------------------------------------------- candidate pools
@dataclass
class _Pools:
    query_ids: np.ndarray  # (nq,) str, sorted
    item_ids: np.ndarray  # (ni,) str, sorted
    item: np.ndarray  # (nq, W) int32 item index, -1 = empty
    lexical: np.ndarray  # (nq, W) float64 in [0, 1]
    grade: np.ndarray  # (nq, W) int8 true (judged) or latent grade
    judged: np.ndarray  # (nq, W) bool


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, lower=True, stopwords="en", show_progress=False, return_ids=False)


def _build_pools(catalog: pd.DataFrame, queries: pd.DataFrame, judgments: pd.DataFrame, sim: SimulationConfig) -> _Pools:
    """Each query's candidate pool: its judged items, then BM25's best unjudged ones, with a grade for each."""
    import bm25s

    t0 = time.perf_counter()
    cat = catalog[["item_id", "title"]].copy()
    cat["item_id"] = cat["item_id"].astype(str)
    cat = cat.drop_duplicates("item_id").sort_values("item_id", kind="stable").reset_index(drop=True)
    item_ids = cat["item_id"].to_numpy()
    qs = queries[["query_id", "text"]].copy()
    qs["query_id"] = qs["query_id"].astype(str)
    qs = qs.drop_duplicates("query_id").sort_values("query_id", kind="stable").reset_index(drop=True)
    query_ids = qs["query_id"].to_numpy()
    nq, cap = len(qs), sim.candidates_per_query

    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(cat["title"].fillna("").astype(str).tolist(), lower=True, stopwords="en", show_progress=False),
        show_progress=False,
    )
    q_tokens = _tokenize(qs["text"].fillna("").astype(str).tolist())

    judged_by_q = _judged_by_query(judgments, query_ids, pd.Index(item_ids))
    max_j = max((len(v[0]) for v in judged_by_q.values()), default=0)
    W = max(cap, max_j, 1)
    item, lex, grade, judged = _fill_pools(retriever, q_tokens, judged_by_q, nq, W, cap, len(item_ids))
    _latent_grades(item, grade, query_ids, item_ids, sim)
    log.info(
        "candidate pools: %d queries x %d slots over %d items (%d judged pairs) in %.1fs",
        nq, W, len(item_ids), int(judged.sum()), time.perf_counter() - t0,
    )
    return _Pools(query_ids, item_ids, item, lex, grade, judged)


def _judged_by_query(judgments: pd.DataFrame, query_ids: np.ndarray, item_index: pd.Index) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Judged items per query index (item index, grade; -1 = null grade), items outside the catalog left out."""
    # judged items per query (item must be in the catalog); a null grade counts as unjudged
    j = judgments[["query_id", "item_id", "grade"]].copy()
    j["query_id"] = j["query_id"].astype(str)
    j["item_id"] = j["item_id"].astype(str)
    j = j.drop_duplicates(["query_id", "item_id"])
    j["qi"] = pd.Index(query_ids).get_indexer(j["query_id"])
    j["ii"] = item_index.get_indexer(j["item_id"])
    j = j[(j["qi"] >= 0) & (j["ii"] >= 0)].sort_values(["qi", "ii"], kind="stable")
    judged_by_q: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if len(j):
        grades = pd.to_numeric(j["grade"], errors="coerce").fillna(-1).to_numpy(np.int64)
        qi, ii = j["qi"].to_numpy(), j["ii"].to_numpy()
        starts = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]])
        ends = np.r_[starts[1:], len(qi)]
        for s, e in zip(starts, ends):
            judged_by_q[int(qi[s])] = (ii[s:e], grades[s:e])
    return judged_by_q


def _fill_pools(retriever, q_tokens, judged_by_q: dict, nq: int, W: int, cap: int, n_items: int):
    """Pool arrays (item, lexical normalized per query, grade, judged), judged items first, BM25 fill after."""
    vocab = retriever.vocab_dict
    item = np.full((nq, W), -1, dtype=np.int32)
    lex = np.zeros((nq, W), dtype=np.float64)
    grade = np.full((nq, W), -1, dtype=np.int8)
    judged = np.zeros((nq, W), dtype=bool)
    for q in range(nq):
        toks = [t for t in q_tokens[q] if t in vocab]
        scores = retriever.get_scores(toks) if toks else None
        ji, jg = judged_by_q.get(q, (np.empty(0, np.int64), np.empty(0, np.int64)))
        nfill = max(0, cap - len(ji))
        fill = np.empty(0, dtype=np.int64)
        if nfill and scores is not None:
            k = min(n_items, nfill + len(ji))
            top = np.argpartition(-scores, k - 1)[:k] if k < n_items else np.arange(n_items)
            top = top[scores[top] > 0]
            top = top[~np.isin(top, ji)]
            top = top[np.lexsort((top, -scores[top]))][:nfill]
            fill = top
        row = np.concatenate([ji, fill]).astype(np.int64)
        n = len(row)
        item[q, :n] = row
        if scores is not None and n:
            lex[q, :n] = scores[row]
        grade[q, : len(ji)] = jg
        judged[q, : len(ji)] = jg >= 0
    mx = lex.max(axis=1, keepdims=True)
    lex = np.divide(lex, mx, out=np.zeros_like(lex), where=mx > 0)
    return item, lex, grade, judged


def _latent_grades(item: np.ndarray, grade: np.ndarray, query_ids: np.ndarray, item_ids: np.ndarray, sim: SimulationConfig) -> None:
    """Fills in place the grade of each unjudged candidate from a hash of (seed, query_id, item_id)."""
    need = (item >= 0) & (grade < 0)
    if need.any():
        qk = _keys(query_ids, sim.seed)
        ik = _keys(item_ids, sim.seed)
        rows, cols = np.nonzero(need)
        pk = qk[rows] ^ _mix(ik[item[rows, cols]])
        u = _uniform(pk, _S_GRADE)
        cum = np.cumsum(np.asarray(sim.unjudged_grade_probs, dtype=np.float64))
        grade[rows, cols] = np.minimum(np.searchsorted(cum, u, side="right"), 3).astype(np.int8)


def candidate_pools(catalog: pd.DataFrame, queries: pd.DataFrame, judgments: pd.DataFrame, sim: SimulationConfig) -> pd.DataFrame:
    """The production ranker's candidate pool per query, one row per (query, item):
    query_id, item_id, judged, grade (human grade when judged, latent otherwise),
    lexical (BM25 normalized to [0, 1] per query)."""
    p = _build_pools(catalog, queries, judgments, sim)
    rows, cols = np.nonzero(p.item >= 0)
    return pd.DataFrame(
        {
            "query_id": p.query_ids[rows],
            "item_id": p.item_ids[p.item[rows, cols]],
            "judged": p.judged[rows, cols],
            "grade": p.grade[rows, cols].astype(np.int8),
            "lexical": p.lexical[rows, cols],
        }
    )


# --------------------------------------------------------------------------- simulation
def _page_layout(sim: SimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per page column (0-based): is it an ad slot, and which ad / organic rank fills it."""
    if sim.organic_slots < 1:
        raise ValueError("organic_slots must be >= 1")
    n_ads = len(sim.ad_positions)
    P = sim.organic_slots + n_ads
    ad_pos = sorted(int(p) for p in sim.ad_positions)
    if len(set(ad_pos)) != n_ads or (n_ads and (ad_pos[0] < 1 or ad_pos[-1] > P)):
        raise ValueError(f"ad_positions {sim.ad_positions} must be distinct and within 1..{P}")
    is_ad = np.zeros(P, dtype=bool)
    is_ad[[p - 1 for p in ad_pos]] = True
    src = np.empty(P, dtype=np.int64)
    src[is_ad] = np.arange(n_ads)
    src[~is_ad] = np.arange(sim.organic_slots)
    return is_ad, src


def _allocate_ads(
    ad_cols: np.ndarray, n_ad_cand: np.ndarray, pool_item: np.ndarray, remaining: np.ndarray, n_slots: int
) -> np.ndarray:
    """Ad columns (pool column index, -1 = none) per search, (S, n_slots).

    Proposal rounds: every search with an open ad slot proposes its next-best advertiser
    candidate (by ad score); each item accepts proposals in search-time order while it
    has budget left that day. Budgets are never exceeded.
    """
    S = ad_cols.shape[0]
    chosen = np.full((S, n_slots), -1, dtype=np.int64)
    if n_slots == 0 or ad_cols.shape[1] == 0:
        return chosen
    ptr = np.zeros(S, dtype=np.int64)
    nfill = np.zeros(S, dtype=np.int64)
    for _ in range(ad_cols.shape[1]):
        act = np.flatnonzero((nfill < n_slots) & (ptr < n_ad_cand))
        if len(act) == 0:
            break
        col = ad_cols[act, ptr[act]]
        it = pool_item[act, col]
        order = np.lexsort((act, it))  # by item, then time (search index is time order)
        it_s = it[order]
        first = np.r_[True, it_s[1:] != it_s[:-1]]
        grp_start = np.maximum.accumulate(np.where(first, np.arange(len(it_s)), 0))
        rank = np.arange(len(it_s)) - grp_start
        ok_sorted = rank < remaining[it_s]
        ok = np.empty_like(ok_sorted)
        ok[order] = ok_sorted
        acc = act[ok]
        chosen[acc, nfill[acc]] = col[ok]
        nfill[acc] += 1
        np.subtract.at(remaining, it[ok], 1)
        ptr[act] += 1
    return chosen


@dataclass
class _PairModel:
    """What the simulator knows of each (query, pool slot): ranker score, click, cart and order odds, ad candidates."""

    base: np.ndarray  # (nq, W) production ranker score without noise, -inf = empty slot
    attract_logit: np.ndarray  # (nq, W)
    p_atc: np.ndarray  # (nq, W)
    p_order: np.ndarray  # (nq, W)
    ad_cols: np.ndarray  # (nq, W) pool columns by ad score, best first
    n_ad_cand: np.ndarray  # (nq,) advertiser candidates in the pool
    adv_items: np.ndarray  # item indexes of the advertisers
    adv_keys: np.ndarray  # their hash keys (daily budgets)


def _pair_model(pools: _Pools, attrs: pd.DataFrame, sim: SimulationConfig) -> _PairModel:
    """Ranker score, attractiveness, cart and order probabilities and ad candidates per (query, pool slot)."""
    valid = pools.item >= 0
    gi = np.where(valid, pools.item, 0)
    pop_z = attrs["popularity_z"].to_numpy()[gi]
    margin = attrs["margin"].to_numpy()[gi]
    cheap = attrs["cheapness"].to_numpy()[gi]
    appeal = attrs["title_appeal"].to_numpy()[gi]
    g01 = np.clip(pools.grade, 0, 3).astype(np.float64) / 3.0

    base = sim.ranker_lexical_weight * pools.lexical + sim.ranker_popularity_weight * pop_z + sim.ranker_margin_weight * margin
    base = np.where(valid, base, -np.inf)
    attract_logit = (
        sim.attract_bias + sim.attract_relevance * g01 + sim.attract_popularity * pop_z
        + sim.attract_price * cheap + sim.attract_title * appeal
    )
    p_atc = _sigmoid(sim.atc_bias + sim.atc_relevance * g01 + sim.atc_price * cheap)
    p_order = sim.order_given_atc * (0.5 + 0.5 * g01)

    # ad candidates per query: advertiser items in the pool, by bid x weak relevance
    is_adv = attrs["advertiser"].to_numpy()[gi] & valid
    ad_score = attrs["bid"].to_numpy()[gi] * ((1 - sim.ad_relevance_weight) + sim.ad_relevance_weight * pools.lexical)
    ad_score = np.where(is_adv, ad_score, -np.inf)
    ad_cols_q = np.argsort(-ad_score, axis=1, kind="stable")
    n_ad_cand_q = is_adv.sum(axis=1)

    adv_items = np.flatnonzero(attrs["advertiser"].to_numpy())
    adv_keys = _keys(pools.item_ids[adv_items], sim.seed)
    return _PairModel(base, attract_logit, p_atc, p_order, ad_cols_q, n_ad_cand_q, adv_items, adv_keys)


_EVENT_KEYS = ("ts", "sid", "q", "i", "pos", "ad", "click", "atc", "order")


def simulate(catalog: pd.DataFrame, queries: pd.DataFrame, judgments: pd.DataFrame, sim: SimulationConfig) -> pd.DataFrame:
    """Simulated search log in the EVENTS contract, one row per impression."""
    t_start = time.perf_counter()
    pools = _build_pools(catalog, queries, judgments, sim)
    attrs = item_attributes(catalog, sim)
    if not np.array_equal(attrs.index.to_numpy(), pools.item_ids):
        raise AssertionError("item order mismatch between pools and attributes")
    model = _pair_model(pools, attrs, sim)
    layout = _page_layout(sim)
    weights = query_popularity(pd.Series(pools.query_ids), sim).to_numpy()
    start = to_utc(sim.start_date)
    start_us = start.value // 1000
    start_day_no = int(start.normalize().value // (DAY_US * 1000))
    S = sim.searches_per_day
    out: dict[str, list[np.ndarray]] = {k: [] for k in _EVENT_KEYS}
    t_loop, t_log, total_imp = time.perf_counter(), time.perf_counter(), 0
    log_every = max(1, -(-sim.days // 4))  # at least four progress lines per run
    for d in range(sim.days):
        day = _simulate_day(d, pools, model, layout, weights, start_us, start_day_no, sim)
        for k in _EVENT_KEYS:
            out[k].append(day[k])
        total_imp += len(day["pos"])
        now = time.perf_counter()
        if now - t_log >= _LOG_EVERY_S or (d + 1) % log_every == 0 or d == sim.days - 1:
            done = (d + 1) * S
            rate = done / max(now - t_loop, 1e-9)
            eta = (sim.days - d - 1) * S / rate
            log.info(
                "simulate: day %d/%d, %d searches, %d impressions, %.0f searches/s, ETA %.1fs",
                d + 1, sim.days, done, total_imp, rate, eta,
            )
            t_log = now

    events = conform(_events_frame(out, pools), "events")
    log.info(
        "simulated %d days x %d searches: %d impressions, CTR %.4f in %.1fs",
        sim.days, S, len(events), float(events["click"].mean()), time.perf_counter() - t_start,
    )
    return events


def _simulate_day(
    d: int, pools: _Pools, m: _PairModel, layout: tuple[np.ndarray, np.ndarray], weights: np.ndarray,
    start_us: int, start_day_no: int, sim: SimulationConfig,
) -> dict[str, np.ndarray]:
    """Day ``d``'s searches, their pages (ads within budget, then the ranked organic results) and the funnel."""
    is_ad_col, src_col = layout
    n_ads = int(is_ad_col.sum())
    K = sim.organic_slots
    nq, W = pools.item.shape
    S = sim.searches_per_day
    rng = np.random.default_rng([sim.seed, d])
    qd = rng.choice(nq, size=S, p=weights) if nq else np.empty(0, dtype=np.int64)
    off = np.sort(rng.integers(0, DAY_US, size=S))
    off = np.maximum.accumulate(off - np.arange(S)) + np.arange(S)  # strictly increasing
    if S and off[-1] >= DAY_US:
        off = np.sort(rng.choice(DAY_US, size=S, replace=False))
    noise = rng.standard_normal((S, W))
    u_click, u_atc, u_order = rng.random((3, S, n_ads + K))

    # ads (budgets of calendar day d)
    remaining = np.zeros(len(pools.item_ids), dtype=np.int64)
    remaining[m.adv_items] = _budget_from_keys(m.adv_keys, start_day_no + d, sim)
    ad_chosen = _allocate_ads(m.ad_cols[qd], m.n_ad_cand[qd], pools.item[qd], remaining, n_ads)
    org = _organic_ranking(m.base[qd] + sim.ranker_noise * noise, ad_chosen, n_ads, K, W, S)

    page = np.empty((S, len(is_ad_col)), dtype=np.int64)
    for c, (is_ad, src) in enumerate(zip(is_ad_col, src_col)):
        page[:, c] = ad_chosen[:, src] if is_ad else org[:, src]
    shown = page >= 0
    position = np.cumsum(shown, axis=1)
    s_idx, c_idx = np.nonzero(shown)
    col = page[s_idx, c_idx]
    q_of = qd[s_idx]
    pos = position[s_idx, c_idx]
    ad = is_ad_col[c_idx]
    examine = pos.astype(np.float64) ** -sim.position_bias_eta
    attract = _sigmoid(m.attract_logit[q_of, col] + sim.attract_ad * ad)
    click = u_click[s_idx, c_idx] < examine * attract
    atc = click & (u_atc[s_idx, c_idx] < m.p_atc[q_of, col])
    order = atc & (u_order[s_idx, c_idx] < m.p_order[q_of, col])
    return {
        "ts": start_us + d * DAY_US + off[s_idx], "sid": d * S + s_idx + 1, "q": q_of, "i": pools.item[q_of, col],
        "pos": pos, "ad": ad, "click": click, "atc": atc, "order": order,
    }


def _organic_ranking(score: np.ndarray, ad_chosen: np.ndarray, n_ads: int, K: int, W: int, S: int) -> np.ndarray:
    """Top-K pool columns per search by the noisy ranker score, ads excluded (-1 = no result)."""
    if n_ads:
        rr, kk = np.nonzero(ad_chosen >= 0)
        score[rr, ad_chosen[rr, kk]] = -np.inf
    if W > K:
        top = np.argpartition(-score, K - 1, axis=1)[:, :K]
    else:
        top = np.tile(np.arange(W), (S, 1))
    top_s = np.take_along_axis(score, top, axis=1)
    o = np.argsort(-top_s, axis=1, kind="stable")
    org = np.take_along_axis(top, o, axis=1)
    org = np.where(np.isfinite(np.take_along_axis(top_s, o, axis=1)), org, -1)
    if org.shape[1] < K:
        org = np.hstack([org, np.full((S, K - org.shape[1]), -1)])
    return org


def _events_frame(out: dict[str, list[np.ndarray]], pools: _Pools) -> pd.DataFrame:
    """The days' impressions as one frame with the EVENTS columns."""
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
    ts = pd.to_datetime(cat["ts"].astype(np.int64), unit="us", utc=True)
    return pd.DataFrame(
        {
            "event_ts": ts,
            "search_id": cat["sid"].astype(np.int64),
            "query_id": pools.query_ids[cat["q"].astype(np.int64)],
            "item_id": pools.item_ids[cat["i"].astype(np.int64)],
            "position": cat["pos"].astype(np.int16),
            "slot": np.where(cat["ad"].astype(bool), "ad", "organic").astype(object),
            "impression": np.ones(len(cat["pos"]), dtype=np.int8),
            "click": cat["click"].astype(np.int8),
            "add_to_cart": cat["atc"].astype(np.int8),
            "order": cat["order"].astype(np.int8),
        }
    )
