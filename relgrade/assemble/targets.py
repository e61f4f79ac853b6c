"""Blended training targets and the per-query list form (docs/assemble.md, "Targets").

For one (query, item) row with cascade grade distribution p, retrieval prior r and gated
preference e (null unless the pair is graded relevant and was shown)::

    g      = E[grade] / 3 = (sum_k k p_k) / 3              in [0, 1]  (primary term)
             (rows without a grade: g = r, flagged in target_source)
    pref   = 0.5 + c * (pct_q(e) - 0.5)   where e is present, else 0.5 (neutral)
             pct_q(e) = (average rank of e among the query's rows with a preference - 0.5) / n
             c        = engagement_confidence (exposure / (exposure + k))
    target = w_g g + w_r r + w_e pref                       (w_g + w_r + w_e = 1)

so target is in [0, 1]. The preference only moves items against other *relevant* items of
the same query (irrelevant and unseen items sit at the neutral 0.5) and by at most
w_e / 2 either way, shrunk by the engagement's confidence.

``grade_target = E[grade] / 3`` (null without a grade) is the grades-only ablation;
``click_target = (clicks_28d + m ctr0) / (impressions_28d + m)`` (null without
impressions; ctr0 = the pooled raw CTR of the rows) is the click-trained baseline.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def _f(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()


def preference_term(df: pd.DataFrame) -> np.ndarray:
    """Within-query preference in [0, 1]: neutral 0.5 where gated_preference is null."""
    e = _f(df["gated_preference"])
    conf = np.clip(np.nan_to_num(_f(df["engagement_confidence"]), nan=0.0), 0.0, 1.0) \
        if "engagement_confidence" in df else np.ones(len(df))
    has = ~np.isnan(e)
    out = np.full(len(df), 0.5)
    if has.any():
        q = df["query_id"].to_numpy()[has]
        s = pd.Series(e[has])
        rank = s.groupby(q).rank(method="average").to_numpy()
        n = s.groupby(q).transform("size").to_numpy()
        pct = (rank - 0.5) / n
        out[has] = 0.5 + conf[has] * (pct - 0.5)
    return np.clip(out, 0.0, 1.0)


def click_target(df: pd.DataFrame, prior_impressions: float) -> np.ndarray:
    """Smoothed raw CTR toward the pooled CTR; NaN where the pair had no impressions."""
    imp = np.nan_to_num(_f(df["impressions_28d"]), nan=0.0)
    clk = np.nan_to_num(_f(df["clicks_28d"]), nan=0.0)
    tot = imp.sum()
    ctr0 = clk.sum() / tot if tot > 0 else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (clk + prior_impressions * ctr0) / (imp + prior_impressions)
    return np.where(imp > 0, np.clip(t, 0.0, 1.0), np.nan)


def add_targets(df: pd.DataFrame, weight_grade: float, weight_prior: float, weight_preference: float,
                click_prior_impressions: float = 10.0) -> pd.DataFrame:
    """``df`` plus preference_term, grade_target, target, target_source, click_target."""
    total = weight_grade + weight_prior + weight_preference
    if abs(total - 1.0) > 1e-6 or min(weight_grade, weight_prior, weight_preference) < 0:
        raise ValueError(f"target weights must be >= 0 and sum to 1; got {total}")
    out = df.copy(deep=False)  # new columns only; the caller's frame is not modified
    eg = _f(out["expected_grade"])
    prior = np.clip(_f(out["retrieval_prior"]), 0.0, 1.0)
    if np.isnan(prior).any():
        raise ValueError(f"{int(np.isnan(prior).sum())} row(s) have no retrieval prior at the cut: "
                         "the cut precedes the mining snapshot or the union and the prior view disagree")
    g = np.clip(eg / 3.0, 0.0, 1.0)
    has_grade = ~np.isnan(g)
    pref = preference_term(out)
    g_eff = np.where(has_grade, g, prior)
    out["preference_term"] = pref
    out["grade_target"] = np.where(has_grade, g, np.nan)
    out["target"] = np.clip(weight_grade * g_eff + weight_prior * prior + weight_preference * pref, 0.0, 1.0)
    out["target_source"] = np.where(has_grade, "grade", "prior_only")
    out["click_target"] = click_target(out, click_prior_impressions)
    return out


def list_form(df: pd.DataFrame) -> pa.Table:
    """One row per query: query_id, item_ids, targets, levels (items by target, best first)."""
    d = df[["query_id", "item_id", "target", "difficulty_level"]].sort_values(
        ["query_id", "target", "item_id"], ascending=[True, False, True], kind="stable")
    q = d["query_id"].to_numpy()
    if len(q) == 0:
        starts = np.array([0], dtype=np.int32)
        qids = np.array([], dtype=object)
    else:
        brk = np.flatnonzero(q[1:] != q[:-1]) + 1
        starts = np.concatenate([[0], brk, [len(q)]]).astype(np.int32)
        qids = q[starts[:-1]]
    offsets = pa.array(starts, pa.int32())
    return pa.table({
        "query_id": pa.array(qids, pa.string()),
        "item_ids": pa.ListArray.from_arrays(offsets, pa.array(d["item_id"].to_numpy(), pa.string())),
        "targets": pa.ListArray.from_arrays(offsets, pa.array(d["target"].to_numpy(np.float64), pa.float64())),
        "levels": pa.ListArray.from_arrays(offsets, pa.array(d["difficulty_level"].to_numpy(np.int64), pa.int64())),
    })
