"""Probes of the grades on the union's own distribution (grading report, and expectations
of the ``relevance_grade_fv`` suite so that a shifted teacher cannot publish):

* **random-pair probe** - dev queries paired with uniformly drawn catalog items (never
  a pair the union or the judgments hold), graded by the cascade like union pairs; nearly
  all must come out grade 0;
* **grade mix per best-rank band** - the union's grades by the best rank any channel gave
  the pair; relevance must fall with rank;
* **grade mix per channel agreement** - by how many channels found the pair;
* **agreement on the union pairs that carry a human label**.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES, qwk


def random_pairs(query_ids: np.ndarray, item_ids: np.ndarray, exclude: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` distinct (query, item) pairs, queries and items drawn uniformly, none in
    ``exclude`` (query_id, item_id)."""
    rng = np.random.default_rng(seed)
    if n <= 0 or len(query_ids) == 0 or len(item_ids) == 0:
        return pd.DataFrame({"query_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object)})
    ex = pd.MultiIndex.from_frame(exclude[["query_id", "item_id"]].astype(str))
    out = pd.DataFrame({"query_id": [], "item_id": []}, dtype=object)
    while len(out) < n:
        m = 2 * (n - len(out)) + 8
        cand = pd.DataFrame({"query_id": rng.choice(np.asarray(query_ids, dtype=object), m),
                             "item_id": rng.choice(np.asarray(item_ids, dtype=object), m)})
        cand = cand[~pd.MultiIndex.from_frame(cand).isin(ex)]
        out = pd.concat([out, cand], ignore_index=True).drop_duplicates(ignore_index=True)
    return out.iloc[:n].reset_index(drop=True)


def best_rank(union: pd.DataFrame) -> np.ndarray:
    cols = [c for c in union.columns if c.startswith("rank_")]
    if not cols:
        return np.full(len(union), np.nan)
    return union[cols].apply(pd.to_numeric, errors="coerce").min(axis=1).to_numpy(dtype=float)


def band_labels(edges: list[int]) -> list[str]:
    lo = [1] + [e + 1 for e in edges[:-1]]
    return [f"{a}-{b}" for a, b in zip(lo, edges)] + [f">{edges[-1]}"]


def rank_band(rank: np.ndarray, edges: list[int]) -> np.ndarray:
    """Band label per row (``1-5``, ``6-10``, ...; ``>100`` beyond the last edge)."""
    labels = np.array(band_labels(edges), dtype=object)
    idx = np.searchsorted(np.asarray(edges, dtype=float), np.nan_to_num(rank, nan=np.inf), side="left")
    return labels[np.clip(idx, 0, len(labels) - 1)]


def _mix(frame: pd.DataFrame) -> dict:
    g = frame["grade"].astype(int).to_numpy()
    out = {"pairs": int(len(frame)), "mean_expected_grade": float(frame["expected_grade"].mean()) if len(frame) else None}
    for k in range(N_GRADES):
        out[f"grade_{k}"] = float((g == k).mean()) if len(g) else None
    return out


def grade_mix(grades: pd.DataFrame, by: np.ndarray, order: list | None = None) -> list[dict]:
    """Grade shares and mean expected grade per value of ``by``."""
    keys = order if order is not None else sorted(pd.unique(by))
    rows = []
    for k in keys:
        m = by == k
        if m.any():
            rows.append({"group": str(k), **_mix(grades[m])})
    return rows


def judged_agreement(grades: pd.DataFrame, human: np.ndarray, positive_grade: int = 2) -> dict:
    """Agreement of published grades with the human grade where a union pair has one."""
    ok = ~np.isnan(human)
    if not ok.any():
        return {"pairs": 0}
    g = grades["grade"].to_numpy(dtype=int)[ok]
    h = human[ok].astype(int)
    e = grades["expected_grade"].to_numpy(dtype=float)[ok]
    return {"pairs": int(ok.sum()), "exact": float((g == h).mean()), "within_one": float((np.abs(g - h) <= 1).mean()),
            "binary": float(((g >= positive_grade) == (h >= positive_grade)).mean()), "qwk": qwk(h, g),
            "rmse_grade": float(np.sqrt(np.mean((e - h) ** 2))), "mean_grade": float(g.mean()),
            "mean_human_grade": float(h.mean())}


def human_grade_of(pairs: pd.DataFrame, judgments: pd.DataFrame) -> np.ndarray:
    """The human grade of each pair (NaN where none)."""
    j = judgments.dropna(subset=["grade"]).astype({"query_id": str, "item_id": str})
    j = j.drop_duplicates(["query_id", "item_id"], keep="last")
    idx = pd.MultiIndex.from_frame(j[["query_id", "item_id"]])
    pos = idx.get_indexer(pd.MultiIndex.from_frame(pairs[["query_id", "item_id"]].astype(str)))
    vals = j["grade"].to_numpy(dtype=float)
    return np.where(pos >= 0, vals[np.maximum(pos, 0)] if len(vals) else np.nan, np.nan)


class UnionEvidence:
    """The probes of one graded union: report tables, and the evidence the
    ``relevance_grade_fv`` suite checks (:meth:`for_gate`)."""

    def __init__(self, cfg, inp, grades: pd.DataFrame, probe: pd.DataFrame | None):
        p = cfg.grading.probe
        self.cfg, self.edges = cfg, list(p.rank_bands)
        self.labels = band_labels(self.edges)
        best = best_rank(inp.union)
        self.band = rank_band(best, self.edges)
        # judgments of dev and test queries only: train pairs carry their judgment as the
        # published grade (the human anchor), agreement on them would measure nothing
        held_out = inp.queries.loc[inp.queries["split"] != "train", "query_id"].astype(str)
        self.human = human_grade_of(grades, inp.judgments[inp.judgments["query_id"].astype(str).isin(set(held_out))])
        self.probe = probe
        self.snapshot_ts = inp.snapshot_ts
        agreement = pd.to_numeric(inp.union["agreement"], errors="coerce").fillna(0).astype(int).to_numpy()
        self.by_band = grade_mix(grades, self.band, self.labels)
        self.by_agreement = grade_mix(grades, agreement)
        self.by_pattern = grade_mix(grades, inp.union["channel_pattern"].astype(str).to_numpy())
        self.judged = judged_agreement(grades, self.human, cfg.grading.positive_grade)
        pg = probe["grade"].to_numpy(dtype=int) if probe is not None and len(probe) else np.zeros(0, int)
        self.probe_summary = {"pairs": int(len(pg)), "grade_0_share": float((pg == 0).mean()) if len(pg) else None,
                              **({f"grade_{k}": float((pg == k).mean()) for k in range(N_GRADES)} if len(pg) else {}),
                              "mean_expected_grade": float(probe["expected_grade"].mean()) if len(pg) else None,
                              **probe_bounds(int((pg == 0).sum()), len(pg), p.min_random_grade0_share,
                                             p.share_confidence)}
        # the deepest band the mining depth reaches (k=50 leaves 51-100 empty)
        filled = [r["group"] for r in self.by_band if r["group"] in self.labels[:len(self.edges)] and r["pairs"] > 0]
        self.top_band = self.labels[0]
        self.deep_band = filled[-1] if filled else self.labels[len(self.edges) - 1]
        self.blind = blind_agreement(cfg, grades)
        top = next((r for r in self.by_band if r["group"] == self.top_band), None)
        deep = next((r for r in self.by_band if r["group"] == self.deep_band), None)
        self.band_drop = (top["mean_expected_grade"] - deep["mean_expected_grade"]) if top and deep else None

    def to_json(self) -> dict:
        return {"random_pair_probe": self.probe_summary, "top_band": self.top_band, "deep_band": self.deep_band,
                "blind_rated_pairs": self.blind, "by_best_rank_band": self.by_band,
                "by_agreement": self.by_agreement, "by_channel_pattern": self.by_pattern,
                "judged_union_pairs": self.judged, "top_minus_deep_band_expected_grade": self.band_drop}

    def for_gate(self, grades: pd.DataFrame):
        from validation.suites import GradeEvidence

        p = self.cfg.grading.probe
        probe = self.probe.copy() if self.probe is not None else grades.iloc[:0].copy()
        probe["event_timestamp"] = pd.Series(self.snapshot_ts, index=probe.index).astype("datetime64[us, UTC]")
        return GradeEvidence(probe=probe, band=self.band, human_grade=self.human, top_band=self.top_band,
                             deep_band=self.deep_band,
                             min_probe_grade0_share=p.min_random_grade0_share,
                             min_band_expected_grade_drop=p.min_band_expected_grade_drop,
                             min_judged_binary_agreement=p.min_judged_binary_agreement,
                             positive_grade=self.cfg.grading.positive_grade,
                             share_confidence=p.share_confidence)


def probe_bounds(grade0: int, n: int, required: float, confidence: float) -> dict:
    """The probe's grade-0 share as the gate judges it: its Wilson interval at
    ``confidence`` and the least sampled share the gate accepts at this sample size."""
    from relgrade.util import share_floor, wilson_interval

    lo, hi = wilson_interval(grade0, n, confidence)
    return {"grade_0_wilson_low": lo, "grade_0_wilson_high": hi, "gate_required_share": required,
            "gate_confidence": confidence, "gate_min_sampled_share": share_floor(required, n, confidence),
            "gate_passed": bool(n) and hi >= required}


def union_evidence(cfg, inp, grades: pd.DataFrame, probe: pd.DataFrame | None) -> UnionEvidence:
    return UnionEvidence(cfg, inp, grades, probe)


def blind_grade(mean_rating: np.ndarray) -> np.ndarray:
    """Home Depot's rule on a mean 1..3 rating (< 1.5 -> 0, < 2.0 -> 1, < 2.5 -> 2, else 3)."""
    r = np.asarray(mean_rating, dtype=float)
    return np.select([r < 1.5 - 1e-9, r < 2.0 - 1e-9, r < 2.5 - 1e-9], [0, 1, 2], default=3)


def blind_not_available(reason: str) -> dict:
    """The blind-rating audit's entry when there is nothing to audit against."""
    return {"available": False, "reason": reason}


def blind_agreement(cfg, grades: pd.DataFrame) -> dict:
    """The published grades against the blind ratings of ``dataset.blind_ratings_path``
    (pairs of dev queries rated from query and title alone): overall and per band for the
    unjudged union pairs, and the raters' own agreement with the human grades on the
    judged ones. Without a file (the bundled one is adapter homedepot's default only), or
    without overlap: ``available`` False and the reason."""
    if not cfg.dataset.blind_ratings_path:
        return blind_not_available("no blind ratings configured (dataset.blind_ratings_path)")
    path = cfg.resolve(cfg.dataset.blind_ratings_path)
    if not path.exists():
        logging.getLogger("relgrade.grading").warning("dataset.blind_ratings_path %s does not exist: "
                                                      "blind-rating audit not available", path)
        return blind_not_available(f"dataset.blind_ratings_path {path} does not exist")
    b = pd.read_csv(path, dtype={"query_id": str, "item_id": str})
    b["blind_grade"] = blind_grade(b[["r1", "r2", "r3"]].mean(axis=1))
    m = b.merge(grades[["query_id", "item_id", "grade", "expected_grade"]], on=["query_id", "item_id"], how="inner")
    if len(m) == 0:
        return blind_not_available(f"no pair of {path} is among the graded pairs")

    def agree(d: pd.DataFrame) -> dict:
        bg, g = d["blind_grade"].to_numpy(dtype=int), d["grade"].to_numpy(dtype=int)
        return {"pairs": int(len(d)), "qwk": qwk(bg, g) if len(set(bg)) > 1 else None,
                "binary": float(((bg >= 2) == (g >= 2)).mean()), "exact": float((bg == g).mean()),
                "mean_grade": float(g.mean()), "mean_blind_grade": float(bg.mean()),
                "grade_0": float((g == 0).mean()), "blind_grade_0": float((bg == 0).mean())}

    un = m[m["kind"] == "unjudged"]
    out = {"file": str(path), "unjudged": agree(un) if len(un) else None,
           "unjudged_by_band": [{"group": k, **agree(d)} for k, d in un.groupby("band", sort=False)]}
    jd = m[m["kind"] == "judged"]
    if len(jd):
        out["judged"] = agree(jd)
    return out
