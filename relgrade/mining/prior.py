"""Retrieval prior, disagreement categories and difficulty levels (docs/mining.md).

Notation for one (query, item) row of the union: ``r_c`` is channel c's 1-based rank
(absent when c did not return the item in its top K), ``A`` is the set of channels
*active for the query* (those that returned at least one item for it: a behavioural
channel with no engagement near the query, or an external file without the query, is
not evidence against the item).

Prior::

    s_c       = (k0 + 1) / (k0 + r_c)      if c found the item, else 0   (s_c in (0, 1])
    rr        = sum_{c in A} w_c s_c / sum_{c in A} w_c                  (weighted reciprocal rank)
    agree     = |{c in A : c found the item}| / |A|
    prior     = (1 - lam) * rr + lam * agree                             (in [0, 1])

with ``k0 = prior_rank_constant`` (10), ``w_c = prior_weights[c]`` (1 each) and
``lam = prior_agreement_weight`` (0.25). The prior decreases strictly with every rank
and increases with every additional channel that finds the item.

Pattern categories (precedence top-down; all need at least two active channels):

* ``easy_positive`` - every active channel finds it, each at rank <= near_top_rank;
* ``hard_positive`` - only the lexical channel finds it, and ranks it <= high_rank
  (lexical-only items deeper in the list are mostly weak token overlaps: ``other``);
* ``hard_negative`` - exactly one channel ranks it <= high_rank;
* ``other``.

Pattern levels (1 easiest .. 5 hardest): 1 easy_positive; 2 other found by >= 2
channels; 3 other found by one channel (or a query with one active channel);
4 hard_negative; 5 hard_positive.

:func:`refine_levels` replaces both with grade-aware definitions where a grade is known
(see its docstring): difficulty becomes "how many retrievers get this example wrong".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CHANNELS = ("lexical", "dense", "behavioral", "external")
LETTERS = {"lexical": "L", "dense": "D", "behavioral": "B", "external": "E"}
CATEGORIES = ("easy_positive", "hard_positive", "hard_negative", "other")
LEVELS = (1, 2, 3, 4, 5)
DEFAULT_WEIGHTS = {c: 1.0 for c in CHANNELS}


def _ranks(union: pd.DataFrame) -> np.ndarray:
    """(n, 4) float ranks, NaN when absent, in CHANNELS order."""
    cols = []
    for c in CHANNELS:
        col = f"rank_{c}"
        if col in union.columns:
            cols.append(pd.to_numeric(union[col], errors="coerce").astype("float64").to_numpy())
        else:
            cols.append(np.full(len(union), np.nan))
    return np.column_stack(cols) if cols else np.zeros((len(union), 0))


def _active(union: pd.DataFrame, found: np.ndarray) -> np.ndarray:
    """(n, 4) bool: channel active for the row's query (from ``active_channels``, a
    pattern like ``"LDB-"``); without that column, active = found somewhere in the query."""
    if "active_channels" in union.columns:
        pat = union["active_channels"].astype(str).to_numpy()
        if len(pat) == 0:
            return np.zeros((0, len(CHANNELS)), dtype=bool)
        b = np.asarray(pat, dtype=f"S{len(CHANNELS)}")
        codes = np.frombuffer(b.tobytes(), dtype=np.uint8).reshape(len(pat), len(CHANNELS))
        return codes != ord("-")
    q = pd.Series(union["query_id"]).astype(str)
    return pd.DataFrame(found, columns=list(CHANNELS)).groupby(q.to_numpy()).transform("any").to_numpy()


def retrieval_prior(
    union: pd.DataFrame,
    weights: dict[str, float] | None = None,
    rank_constant: float = 10.0,
    agreement_weight: float = 0.25,
) -> pd.Series:
    """The prior in [0, 1] per union row (formula in the module docstring)."""
    if rank_constant <= 0:
        raise ValueError("rank_constant must be > 0")
    if not 0.0 <= agreement_weight <= 1.0:
        raise ValueError("agreement_weight must be in [0, 1]")
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    if any(v < 0 for v in w.values()):
        raise ValueError("channel weights must be >= 0")
    R = _ranks(union)
    found = ~np.isnan(R)
    active = _active(union, found) | found
    wv = np.array([w[c] for c in CHANNELS], dtype=np.float64)
    s = np.where(found, (rank_constant + 1.0) / (rank_constant + np.where(found, R, 1.0)), 0.0)
    wa = active * wv
    den = wa.sum(axis=1)
    rr = np.divide((s * wa).sum(axis=1), den, out=np.zeros(len(union)), where=den > 0)
    n_act = active.sum(axis=1)
    agree = np.divide(found.sum(axis=1), n_act, out=np.zeros(len(union)), where=n_act > 0)
    prior = (1.0 - agreement_weight) * rr + agreement_weight * agree
    return pd.Series(np.clip(prior, 0.0, 1.0), index=union.index, name="retrieval_prior")


def _features(union: pd.DataFrame, near_top_rank: int, high_rank: int) -> dict[str, np.ndarray]:
    R = _ranks(union)
    found = ~np.isnan(R)
    active = _active(union, found) | found
    n_active = active.sum(axis=1)
    agreement = found.sum(axis=1)
    near = found & (np.nan_to_num(R, nan=np.inf) <= near_top_rank)
    high = found & (np.nan_to_num(R, nan=np.inf) <= high_rank)
    all_near = (near | ~active).all(axis=1) & (n_active >= 2)
    lex = CHANNELS.index("lexical")
    only_lex_high = high[:, lex] & (agreement == 1)
    best = np.nanmin(np.where(found, R, np.inf), axis=1)
    return dict(found=found, active=active, n_active=n_active, agreement=agreement, n_high=high.sum(axis=1),
                all_near=all_near, only_lex_high=only_lex_high, all_found=(found | ~active).all(axis=1), best=best)


def categorize(union: pd.DataFrame, near_top_rank: int = 10, high_rank: int = 10) -> pd.DataFrame:
    """Pattern categories and levels: a frame with ``category`` and ``difficulty_level``
    aligned with ``union``."""
    f = _features(union, near_top_rank, high_rank)
    multi = f["n_active"] >= 2
    easy = f["all_near"]
    hard_pos = multi & f["only_lex_high"] & ~easy
    hard_neg = multi & (f["n_high"] == 1) & ~easy & ~hard_pos
    cat = np.select([easy, hard_pos, hard_neg], ["easy_positive", "hard_positive", "hard_negative"], "other")
    level = np.select([easy, hard_pos, hard_neg, (f["agreement"] >= 2) & multi], [1, 5, 4, 2], 3)
    return pd.DataFrame({"category": cat.astype(object), "difficulty_level": level.astype(np.int64)}, index=union.index)


def refine_levels(
    union: pd.DataFrame,
    grades: pd.DataFrame,
    near_top_rank: int = 10,
    high_rank: int = 10,
    positive_grade: int = 2,
) -> pd.DataFrame:
    """Categories and levels that use the grade as well as the channel pattern.

    ``grades`` has ``query_id, item_id, grade`` (0..3; human or teacher). Rows of
    ``union`` with a grade get (difficulty = how many retrievers get the example wrong):

    ========  ==============================================  ============================================
    level     relevant (grade >= positive_grade)              not relevant (grade < positive_grade)
    ========  ==============================================  ============================================
    1         easy_positive: every active channel (>= 2)      other: no channel ranks it <= high_rank,
              ranks it <= near_top_rank                       at most one channel finds it
    2         other: every active channel finds it            other: >= 2 channels find it, none ranks it
                                                              <= high_rank
    3         other: >= 2 channels find it, some miss it      hard_negative: exactly one channel ranks it
                                                              <= high_rank
    4         hard_positive: exactly one channel finds it,    hard_negative: >= 2 channels rank it
              at rank <= high_rank                            <= high_rank
    5         hard_positive: exactly one channel finds it,    hard_negative: every active channel (>= 2)
              below high_rank                                 ranks it <= near_top_rank
    ========  ==============================================  ============================================

    Rows without a grade keep their pattern category and level. Returns a copy of
    ``union`` with ``grade`` (nullable Int64), ``category``, ``difficulty_level`` and
    ``level_source`` (``"grade"`` or ``"pattern"``).
    """
    need = {"query_id", "item_id", "grade"}
    if not need <= set(grades.columns):
        raise ValueError(f"grades need columns {sorted(need)}; got {list(grades.columns)}")
    out = union.copy()
    if "category" not in out.columns or "difficulty_level" not in out.columns:
        out[["category", "difficulty_level"]] = categorize(out, near_top_rank, high_rank)
    grade = _grades_of(out, grades)
    has = ~np.isnan(grade)
    rel = has & (grade >= positive_grade)
    neg = has & (grade < positive_grade)
    pos_cat, pos_level, neg_cat, neg_level = _graded_levels(_features(out, near_top_rank, high_rank), high_rank)

    cat = out["category"].astype(object).to_numpy().copy()
    lvl = out["difficulty_level"].astype("int64").to_numpy().copy()
    cat[rel], lvl[rel] = pos_cat[rel], pos_level[rel]
    cat[neg], lvl[neg] = neg_cat[neg], neg_level[neg]
    out["grade"] = pd.array(np.where(has, grade, np.nan), dtype="Float64").astype("Int64")
    out["category"] = cat
    out["difficulty_level"] = lvl.astype(np.int64)
    out["level_source"] = np.where(has, "grade", "pattern")
    return out


def _grades_of(union: pd.DataFrame, grades: pd.DataFrame) -> np.ndarray:
    """The grade of each union row (NaN where ungraded; the last grade of a repeated pair wins)."""
    g = grades[["query_id", "item_id", "grade"]].copy()
    g["query_id"], g["item_id"] = g["query_id"].astype(str), g["item_id"].astype(str)
    g = g.dropna(subset=["grade"]).drop_duplicates(["query_id", "item_id"], keep="last")
    key = pd.MultiIndex.from_arrays([union["query_id"].astype(str), union["item_id"].astype(str)])
    gidx = pd.MultiIndex.from_arrays([g["query_id"], g["item_id"]])
    pos = gidx.get_indexer(key)
    return np.where(pos >= 0, g["grade"].to_numpy(dtype=np.float64)[np.maximum(pos, 0)] if len(g) else np.nan, np.nan)


def _graded_levels(f: dict[str, np.ndarray], high_rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Category and level of each row were it relevant, then were it not relevant (the table of refine_levels)."""
    one = f["agreement"] == 1
    best_high = f["best"] <= high_rank
    pos_level = np.select(
        [f["all_near"], f["all_found"], f["agreement"] >= 2, one & best_high],
        [1, 2, 3, 4], 5)
    pos_cat = np.select([f["all_near"], one & ~f["all_found"]], ["easy_positive", "hard_positive"], "other")
    neg_level = np.select(
        [f["all_near"], f["n_high"] >= 2, f["n_high"] == 1, f["agreement"] >= 2],
        [5, 4, 3, 2], 1)
    neg_cat = np.where(f["n_high"] >= 1, "hard_negative", "other")
    return pos_cat, pos_level, neg_cat, neg_level
