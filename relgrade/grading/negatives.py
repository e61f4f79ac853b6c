"""Negatives for teacher training: what the human judgments lack.

The judged pairs are what the source's own engine showed, rated by people: mostly
relevant (Home Depot: 84% grade 2 or 3). The teachers grade the *mined union*, whose
typical pair is an item no engine would show first. Teachers that never saw such pairs
grade them like the judged ones. Two kinds of negative are added to the judged pairs of
each split (train for fitting, dev for calibration), with weights so that they do not
drown the judged pairs:

**Random catalog negatives** (``random_per_query`` per query). Items drawn uniformly
from the catalog, excluding the query's judged items and every item any mining channel
returned for it (its union rows). For a catalog of tens of thousands of items a uniform
draw is irrelevant to a specific query with near certainty; the rare exceptions are
broad queries (``drill``), bounded by the exclusion of the union. Label: grade 0 (the
lowest raw score of the source's scale). Total weight: ``random_weight`` times the
split's judged pairs.

**Mined hard negatives** (``mined_per_query`` per query), in the manner of
sentence-transformers' ``mine_hard_negatives``: candidates are the query's *unjudged*
union rows whose best channel rank lies in ``[mined_rank_min, mined_rank_max]`` (a rank
window: the top of every list is left alone, it is where unjudged relevant items sit)
and whose base-model cosine with the query is below the query's *weakest judged
positive* by a relative margin (``cos <= (1 - mined_relative_margin) * min cos(q, p)``
over the judged items of grade >= ``positive_grade``); queries without a judged positive
give none. These are same-aisle items that lose to every item a person called relevant.
They are *probably* irrelevant, not certainly (a relevant item can sit deep in a list):
``mined_label`` is the grade distribution they train towards (default grade 0; a soft
label such as 0.7/0.3 on grades 0/1 agreed less with blind ratings of dev-query union
pairs, docs/grading.md), and their total weight, ``mined_weight`` times the split's
judged pairs, is kept below the judged pairs' own.

Both kinds are deterministic functions of the seed and the tables (never of row order).
Their features are computed exactly like any pair's (:mod:`relgrade.grading.features`),
which use no retrieval-position input: a teacher grades content, so a pair's grade does
not depend on whether, or where, a channel found it.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

log = logging.getLogger("relgrade.grading")

N_GRADES = 4


def _query_seed(seed: int, query_id: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{query_id}".encode()).digest()[:8], "little")


def random_negatives(queries: list[str], item_ids: np.ndarray, exclude: dict[str, set], per_query: int,
                     seed: int) -> pd.DataFrame:
    """``per_query`` uniform catalog items per query, none in ``exclude[query]``.
    Seeded per query id, so a query's negatives do not depend on which other queries
    are in the list or on their order."""
    n_items = len(item_ids)
    rows_q, rows_i = [], []
    if per_query <= 0 or n_items == 0:
        return pd.DataFrame({"query_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object)})
    for q in queries:
        ex = exclude.get(q, set())
        rng = np.random.default_rng(_query_seed(seed, q))
        want = min(per_query, n_items - len(ex))
        picked: list[str] = []
        seen: set[str] = set()
        while len(picked) < want:
            for i in rng.integers(0, n_items, size=2 * want + 4):
                it = item_ids[i]
                if it in ex or it in seen:
                    continue
                seen.add(it)
                picked.append(it)
                if len(picked) == want:
                    break
        rows_q += [q] * len(picked)
        rows_i += picked
    return pd.DataFrame({"query_id": np.array(rows_q, dtype=object), "item_id": np.array(rows_i, dtype=object)})


def mined_candidates(union: pd.DataFrame, judged: pd.DataFrame, cosine, s, positive_grade: int = 2) -> pd.DataFrame:
    """Unjudged union rows in the rank window and below the margin of the query's
    weakest judged positive. ``cosine(pairs) -> array`` scores (query, item) pairs with
    the base bi-encoder. Returns query_id, item_id, best_rank, cosine, pos_floor."""
    j = judged[["query_id", "item_id", "grade"]].astype({"query_id": str, "item_id": str})
    pos = j[j["grade"] >= positive_grade]
    if len(pos) == 0:
        return pd.DataFrame(columns=["query_id", "item_id", "best_rank", "cosine", "pos_floor"])
    pos = pos.assign(cosine=cosine(pos))
    floor = pos.groupby("query_id")["cosine"].min().rename("pos_floor")
    u = union[["query_id", "item_id"]].astype(str).copy()
    ranks = [c for c in union.columns if c.startswith("rank_")]
    u["best_rank"] = union[ranks].apply(pd.to_numeric, errors="coerce").min(axis=1).to_numpy() if ranks else np.nan
    u = u[u["query_id"].isin(floor.index) & u["best_rank"].between(s.mined_rank_min, s.mined_rank_max)]
    judged_key = pd.MultiIndex.from_frame(j[["query_id", "item_id"]])
    u = u[~pd.MultiIndex.from_frame(u[["query_id", "item_id"]]).isin(judged_key)]
    if len(u) == 0:
        return u.assign(cosine=[], pos_floor=[])
    u = u.assign(cosine=cosine(u)).join(floor, on="query_id")
    return u[u["cosine"] <= (1.0 - s.mined_relative_margin) * u["pos_floor"]].reset_index(drop=True)


def sample_mined(cands: pd.DataFrame, per_query: int, seed: int) -> pd.DataFrame:
    """At most ``per_query`` candidates per query, drawn by a seeded hash of the pair."""
    if len(cands) == 0 or per_query <= 0:
        return cands.iloc[:0]
    key = pd.util.hash_pandas_object(cands[["query_id", "item_id"]].astype(str), index=False).to_numpy()
    key = key ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    order = cands.assign(_k=key).sort_values(["query_id", "_k"], kind="stable")
    return order.groupby("query_id", sort=False).head(per_query).drop(columns="_k").reset_index(drop=True)


def with_negatives(judged: pd.DataFrame, union: pd.DataFrame, item_ids: np.ndarray, cosine, s, seed: int,
                   raw_floor: float | None, positive_grade: int = 2) -> pd.DataFrame:
    """``judged`` (one split) plus its negatives, with per-row ``weight``, ``origin``
    (judged | random | mined) and soft targets ``t_0..t_3`` for the added rows (NaN on
    judged rows: their targets come from the human label). ``raw_floor`` is the lowest
    value of the source's numeric scale (NaN raw score when the source has none); ``s``
    is a :class:`relgrade.config.NegativesConfig`."""
    j = judged.copy()
    j["query_id"], j["item_id"] = j["query_id"].astype(str), j["item_id"].astype(str)
    n_j = len(j)
    qs = sorted(j["query_id"].unique())
    u = union[["query_id", "item_id"]].astype(str)
    u = u[u["query_id"].isin(set(qs))]
    exclude: dict[str, set] = {}
    for frame in (u, j[["query_id", "item_id"]]):
        for q, items in frame.groupby("query_id")["item_id"]:
            exclude.setdefault(q, set()).update(items)
    rnd = random_negatives(qs, item_ids, exclude, s.random_per_query, seed)
    mined = sample_mined(mined_candidates(union[union["query_id"].astype(str).isin(set(qs))], j, cosine, s,
                                          positive_grade), s.mined_per_query, seed)
    j["weight"], j["origin"] = 1.0, "judged"
    for g in range(N_GRADES):
        j[f"t_{g}"] = np.nan
    parts = [j]
    for frame, origin, label, total in ((rnd, "random", (1.0, 0.0, 0.0, 0.0), s.random_weight),
                                         (mined[["query_id", "item_id"]] if len(mined) else mined, "mined",
                                          s.mined_label, s.mined_weight)):
        if len(frame) == 0 or total <= 0:
            continue
        add = frame[["query_id", "item_id"]].copy()
        add["grade"] = int(np.argmax(label))
        add["raw_score"] = raw_floor if raw_floor is not None else np.nan
        add["weight"] = total * n_j / len(add)
        add["origin"] = origin
        for g in range(N_GRADES):
            add[f"t_{g}"] = float(label[g])
        parts.append(add)
    out = pd.concat(parts, ignore_index=True)
    log.info("teacher pairs: %d judged + %d random (weight %.2f each) + %d mined negatives (weight %.2f each)",
             n_j, len(rnd), (s.random_weight * n_j / len(rnd)) if len(rnd) else 0.0, len(mined),
             (s.mined_weight * n_j / len(mined)) if len(mined) else 0.0)
    return out
