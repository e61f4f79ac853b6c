"""Gated engagement: engagement is evidence of *preference among relevant items*, not of
relevance (docs/assemble.md, "Gating").

The simulate stage fills ``gated_engagement_fv`` per (query, item, day) with
``gated_preference`` null. At the training set's cut instant T this module

1. recomputes the engagement aggregates *as of T* from the events strictly before the
   last midnight at or before T (:func:`relgrade.engagement.engagement_features` with
   ``as_of_days``; the position-bias curve is estimated from those events only);
2. looks up the cascade grade known at T for each pair (a Feast point-in-time join);
3. sets ``gated_preference = engagement_smoothed`` only where the grade says relevant
   (grade >= ``assemble.gate_min_grade`` and confidence >= ``gate_min_confidence``) and
   the pair was shown at least once in the window; everywhere else it stays null - an
   absent preference, never a zero that would read as "users rejected it";
4. stamps every row at T itself: the gated value depends on the grade, which is only
   known at the grading snapshot, so no row may claim an earlier instant.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from relgrade.engagement import engagement_features
from relgrade.util import utc_timestamp

log = logging.getLogger("relgrade.assemble")


def gate_engagement(
    feats: pd.DataFrame,
    grades: pd.DataFrame,
    min_grade: int = 2,
    min_confidence: float = 0.0,
) -> pd.DataFrame:
    """``feats`` (gated_engagement_fv rows) with ``gated_preference`` filled from
    ``engagement_smoothed`` where the pair's grade (``grades``: query_id, item_id, grade,
    confidence) is >= ``min_grade`` with confidence >= ``min_confidence`` and the pair had
    impressions in the window; null elsewhere (ungraded pairs included)."""
    need = {"query_id", "item_id", "grade"}
    if not need <= set(grades.columns):
        raise ValueError(f"grades need columns {sorted(need)}; got {list(grades.columns)}")
    g = grades.dropna(subset=["grade"]).drop_duplicates(["query_id", "item_id"], keep="last")
    key = pd.MultiIndex.from_arrays([feats["query_id"].astype(str), feats["item_id"].astype(str)])
    gk = pd.MultiIndex.from_arrays([g["query_id"].astype(str), g["item_id"].astype(str)])
    pos = gk.get_indexer(key)
    has = pos >= 0
    grade = np.full(len(feats), np.nan)
    conf = np.full(len(feats), np.nan)
    if len(g):
        grade[has] = pd.to_numeric(g["grade"]).to_numpy(np.float64)[pos[has]]
        c = pd.to_numeric(g["confidence"]).to_numpy(np.float64) if "confidence" in g else np.ones(len(g))
        conf[has] = c[pos[has]]
    relevant = has & (grade >= min_grade) & (np.nan_to_num(conf, nan=0.0) >= min_confidence)
    shown = pd.to_numeric(feats["impressions_28d"]).fillna(0).to_numpy() > 0
    out = feats.copy()
    sm = pd.to_numeric(out["engagement_smoothed"]).to_numpy(np.float64)
    out["gated_preference"] = np.where(relevant & shown, sm, np.nan)
    return out


def as_of_day(cut) -> pd.Timestamp:
    """The last complete UTC day before the cut: its aggregate is stamped at midnight
    after it, which is <= the cut."""
    return utc_timestamp(cut).normalize() - pd.Timedelta(days=1)


def refresh_gated_engagement(
    events: pd.DataFrame,
    queries: pd.DataFrame,
    grade_lookup,
    cut,
    prior_strength: float = 20.0,
    min_grade: int = 2,
    min_confidence: float = 0.0,
) -> tuple[pd.DataFrame, dict]:
    """Engagement as of ``cut``, gated by the grades known at ``cut``.

    ``grade_lookup(pairs, cut)`` returns query_id, item_id, grade, confidence for the
    pairs (the flow passes a Feast point-in-time lookup). Returns the gated_engagement_fv
    batch (stamped at ``cut``) and stats."""
    t0 = time.perf_counter()
    cut = utc_timestamp(cut)
    day = as_of_day(cut)
    ev = events[pd.to_datetime(events["event_ts"], utc=True) < day + pd.Timedelta(days=1)]
    if len(ev) == 0:
        raise ValueError(f"no events before the cut {cut.isoformat()}: nothing to gate")
    feats = engagement_features(ev, queries, as_of_days=[day],
                                prior_strength=prior_strength)
    if len(feats) == 0:
        raise ValueError(f"no pair was shown in the window ending {day.date()}: nothing to gate")
    t1 = time.perf_counter()
    grades = grade_lookup(feats[["query_id", "item_id"]], cut)
    t2 = time.perf_counter()
    out = gate_engagement(feats, grades, min_grade, min_confidence)
    out["event_timestamp"] = pd.Series(cut, index=out.index).astype("datetime64[us, UTC]")
    graded = int(pd.to_numeric(grades["grade"]).notna().sum()) if len(grades) else 0
    stats = {
        "as_of_day": str(day.date()), "cut": cut.isoformat(), "events_used": int(len(ev)), "pairs": int(len(out)),
        "pairs_graded": graded, "pairs_gated": int(out["gated_preference"].notna().sum()),
        # of the pairs shown in the window and graded, the share the gate lets through
        "gate_pass_share": (float(out["gated_preference"].notna().sum()) / graded) if graded else None,
        "features_s": round(t1 - t0, 2), "grade_lookup_s": round(t2 - t1, 2), "total_s": round(time.perf_counter() - t0, 2),
    }
    log.info("gated engagement as of %s: %d pairs, %d graded, %d with a preference (%.1fs)",
             stats["as_of_day"], stats["pairs"], graded, stats["pairs_gated"], stats["total_s"])
    return out, stats
