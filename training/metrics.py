"""Retrieval metrics on human-judged held-out queries, returned as plain dicts and frames
(rendered elsewhere: ``training/report.py``).

Per query (:func:`query_metrics`), for each model:

* ``ndcg@10`` - judged-set NDCG: the query's judged items ranked by the model's score,
  gain 2^grade - 1, ideal order from the same judged set (queries whose judged items
  are all grade 0 have no ideal gain and are left out); also reported over the queries
  with at least one grade-0 judged item (``ndcg@10_g0``), where ranking matters;
* ``emb@3`` - embarrassing@3: share of the top-3 ranked judged items with grade 0;
* ``recall@100`` - full catalog: the model's FAISS index over every catalog item,
  share of the query's judged grade >= 2 items in its top 100 (BM25: bm25s top 100).

Aggregates (:func:`aggregate`) are means over queries with percentile bootstrap
intervals (queries resampled with replacement, the same resamples for every model, so
differences and ratios between models get paired intervals), overall and by head /
torso / tail.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.contract import SEGMENTS
from training.args import CLICK, HARDNEG, STUDENT

# ---------------------------------------------------------------- types
@dataclass
class EvalData:
    queries: pd.DataFrame  # query_id, text, segment (queries with >= 1 judged catalog item)
    judged: pd.DataFrame  # query_id, item_id, grade, qi (row of queries), ci (catalog position)
    item_ids: np.ndarray  # catalog order
    item_texts: list[str]
    tie: np.ndarray = field(default=None)  # per judged row: fixed pseudo-random tie-break


@dataclass
class Scored:
    """A model's output on the evaluation data."""

    judged_scores: np.ndarray  # per judged row
    topk: list[set[int]]  # per query: catalog positions of the full-catalog top k
    stats: dict


def query_metrics(ed: EvalData, sc: Scored, cfg: RelgradeConfig) -> pd.DataFrame:
    """One row per evaluation query: ndcg, emb, recall (NaN where undefined), has_g0, segment."""
    e = cfg.evaluation
    j = ed.judged.assign(score=sc.judged_scores, tie=ed.tie)
    j = j.sort_values(["qi", "score", "tie"], ascending=[True, False, True], kind="stable")
    j["r"] = j.groupby("qi").cumcount()
    gain = np.power(2.0, j["grade"].to_numpy()) - 1
    disc = 1.0 / np.log2(j["r"].to_numpy() + 2.0)
    top = j["r"].to_numpy() < e.ndcg_k
    dcg = pd.Series(np.where(top, gain * disc, 0.0)).groupby(j["qi"].to_numpy()).sum()
    ig = ed.judged[["qi", "grade"]].sort_values(["qi", "grade"], ascending=[True, False])
    ir = ig.groupby("qi").cumcount().to_numpy()
    igain = np.where(ir < e.ndcg_k, (np.power(2.0, ig["grade"].to_numpy()) - 1) / np.log2(ir + 2.0), 0.0)
    idcg = pd.Series(igain).groupby(ig["qi"].to_numpy()).sum()
    ndcg = (dcg / idcg.reindex(dcg.index)).where(idcg.reindex(dcg.index) > 0)
    emb_top = j[j["r"] < e.embarrassing_k]
    emb = (emb_top["grade"] == 0).groupby(emb_top["qi"]).mean()
    has_g0 = (ed.judged["grade"] == 0).groupby(ed.judged["qi"]).any()
    rel = ed.judged[ed.judged["grade"] >= e.recall_min_grade]
    if sc.topk is None:  # judged-set-only evaluation
        rel = rel.iloc[:0]
    rec = pd.Series(
        [np.mean([c in sc.topk[q] for c in g["ci"]]) for q, g in rel.groupby("qi")],
        index=rel["qi"].unique() if len(rel) else [], dtype=float)
    out = pd.DataFrame(index=pd.RangeIndex(len(ed.queries)))
    out["query_id"] = ed.queries["query_id"].to_numpy()
    out["segment"] = ed.queries["segment"].to_numpy()
    out["ndcg"] = ndcg.reindex(out.index)
    out["emb"] = emb.reindex(out.index)
    out["recall"] = rec.reindex(out.index)
    out["has_g0"] = has_g0.reindex(out.index).fillna(False).astype(bool)
    out["ndcg_g0"] = out["ndcg"].where(out["has_g0"])
    return out


def metric_names(cfg: RelgradeConfig) -> dict[str, str]:
    e = cfg.evaluation
    return {f"ndcg@{e.ndcg_k}": "ndcg", f"ndcg@{e.ndcg_k}_g0": "ndcg_g0", f"emb@{e.embarrassing_k}": "emb",
            f"recall@{e.recall_k}": "recall"}


def _boot_idx(n: int, b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def _mean_ci(values: np.ndarray, idx: np.ndarray, alpha: float) -> dict:
    v = values.astype(float)
    ok = ~np.isnan(v)
    if ok.sum() == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    vv = np.where(ok, v, 0.0)
    s = vv[idx].sum(axis=1)
    c = ok[idx].sum(axis=1)
    bm = s[c > 0] / c[c > 0]
    lo, hi = np.quantile(bm, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(v[ok].mean()), "lo": float(lo), "hi": float(hi), "n": int(ok.sum())}


def aggregate(per_query: dict[str, pd.DataFrame], cfg: RelgradeConfig) -> dict:
    """Means with bootstrap CIs per model, metric and segment, and paired comparisons of
    the student against every other model."""
    e = cfg.evaluation
    alpha = 1 - e.ci
    names = metric_names(cfg)
    any_model = next(iter(per_query.values()))
    n = len(any_model)
    idx = _boot_idx(n, e.bootstrap, e.seed)
    seg = any_model["segment"].to_numpy()
    out: dict = {"models": {}, "comparisons": {}}
    for model, pq in per_query.items():
        res = {}
        for mname, col in names.items():
            res[mname] = {"all": _mean_ci(pq[col].to_numpy(), idx, alpha)}
            for s in SEGMENTS:
                mask = seg == s
                if mask.sum() == 0:
                    res[mname][s] = {"mean": None, "lo": None, "hi": None, "n": 0}
                    continue
                sidx = _boot_idx(int(mask.sum()), e.bootstrap, e.seed + 1)
                res[mname][s] = _mean_ci(pq[col].to_numpy()[mask], sidx, alpha)
        out["models"][model] = res
    if STUDENT in per_query:
        for other, pq in per_query.items():
            if other != STUDENT:
                out["comparisons"][other] = paired_comparison(per_query[STUDENT], pq, cfg, idx)
    out["targets"] = check_targets(out, cfg)
    return out


def paired_comparison(a_pq: pd.DataFrame, b_pq: pd.DataFrame, cfg: RelgradeConfig, idx: np.ndarray | None = None) -> dict:
    """Model A (``"student"`` in the result) against model B (``"other"``) per metric, on
    the queries where both have a value: the ratio and the difference of the means, each
    with a paired percentile bootstrap interval (the same query resamples for both
    models), and the difference per segment. ``idx``: the resamples (default: the
    evaluation's, as in :func:`aggregate`)."""
    e = cfg.evaluation
    alpha = 1 - e.ci
    if idx is None:
        idx = _boot_idx(len(a_pq), e.bootstrap, e.seed)
    if len(a_pq) != len(b_pq) or not np.array_equal(a_pq["query_id"].to_numpy(), b_pq["query_id"].to_numpy()):
        raise ValueError("paired comparison needs both models' per-query rows for the same queries in the same order")
    seg = a_pq["segment"].to_numpy()
    comp = {}
    for mname, col in metric_names(cfg).items():
        a, b = a_pq[col].to_numpy(float), b_pq[col].to_numpy(float)
        ok = ~np.isnan(a) & ~np.isnan(b)
        if ok.sum() == 0:
            continue
        A, B = np.where(ok, a, 0)[idx].sum(1), np.where(ok, b, 0)[idx].sum(1)
        ratio = np.where(B > 0, A / np.where(B > 0, B, 1), np.nan)
        diff = (A - B) / np.maximum(ok[idx].sum(1), 1)
        rr = a[ok].mean() / b[ok].mean() if b[ok].mean() > 0 else None
        comp[mname] = {"student": float(a[ok].mean()), "other": float(b[ok].mean()),
                       "ratio": None if rr is None else float(rr),
                       "ratio_ci": [float(np.nanquantile(ratio, alpha / 2)), float(np.nanquantile(ratio, 1 - alpha / 2))],
                       "diff": float(a[ok].mean() - b[ok].mean()),
                       "diff_ci": [float(np.quantile(diff, alpha / 2)), float(np.quantile(diff, 1 - alpha / 2))],
                       "diff_by_segment": {s: (float(a[ok & (seg == s)].mean() - b[ok & (seg == s)].mean())
                                               if (ok & (seg == s)).any() else None) for s in SEGMENTS}}
    return comp


def check_targets(agg: dict, cfg: RelgradeConfig, click: str = CLICK, label: str = "student",
                  click_label: str = "click-trained") -> list[dict]:
    """The evaluation targets (``evaluation.target_relative_gain``,
    ``target_embarrassing_ratio``) checked on ``agg["comparisons"]`` (the student against ``click``,
    the peer recipe ``hardneg_human`` (``target_peer_recall_gain``), ``base`` and ``bm25``);
    ``label`` / ``click_label`` name the pair in the rows."""
    e = cfg.evaluation
    c = agg.get("comparisons", {})
    rec, ng0, emb = f"recall@{e.recall_k}", f"ndcg@{e.ndcg_k}_g0", f"emb@{e.embarrassing_k}"
    rows = []

    def add(name, value, goal, ok):
        rows.append({"target": name, "measured": value, "goal": goal, "met": bool(ok) if ok is not None else None})

    if click in c:
        for m in (rec, ng0):
            r = c[click].get(m, {}).get("ratio")
            add(f"{label} / {click_label} {m}", r, f">= {1 + e.target_relative_gain:.2f}",
                None if r is None else r >= 1 + e.target_relative_gain)
        r = c[click].get(emb, {}).get("ratio")
        add(f"{label} / {click_label} {emb}", r, f"<= {e.target_embarrassing_ratio:.2f}",
            None if r is None else r <= e.target_embarrassing_ratio)
    if HARDNEG in c:  # the peer recipe: the alternative a team already has
        g = 1 + e.target_peer_recall_gain
        for m, goal, ok in ((rec, f">= {g:.2f}", lambda r: r >= g), (ng0, ">= 1.00", lambda r: r >= 1.0),
                            (emb, "<= 1.00", lambda r: r <= 1.0)):
            r = c[HARDNEG].get(m, {}).get("ratio")
            add(f"{label} / {HARDNEG} {m}", r, goal, None if r is None else ok(r))
    for other in ("base", "bm25"):
        if other in c:
            for m in (rec, ng0):
                r = c[other].get(m, {}).get("ratio")
                add(f"{label} / {other} {m}", r, "> 1.00", None if r is None else r > 1.0)
    return rows
