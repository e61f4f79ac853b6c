"""The cascade: every pair starts at stage 1 and moves up while its calibrated
confidence (max probability) is below that stage's threshold.

Stage k is a :class:`~relgrade.grading.teachers.StackedTeacher` over the teachers of
stages 1..k (``grading.stages``: the GBM, then cross-encoders, cheapest first), so a
pair escalated to stage k pays one more teacher pass and keeps what the cheaper stages
said. An LLM judge may follow as a last stage.

**Thresholds are fitted on dev to a compute budget** (:func:`choose_thresholds`):
``grading.compute_budget_s_per_million`` seconds per million union pairs. Each stage has
a modelled cost (``cost_s_per_million``: its measured inference rate on the reference
machine, benchmarks/bench_grading.py), and the share of *union* pairs that a threshold
vector sends to each stage is read off a sample of the union that every stage scored.
Among the threshold vectors on ``threshold_grid`` whose modelled union compute fits the
budget, the one with the best dev quality (weighted QWK on dev judgments plus the dev
queries' mined negatives) wins; the whole grid is the quality-against-compute curve of the report. The
cost model is fixed configuration, not a live measurement, so a rerun or a resumed run
chooses the same thresholds; the report sets the measured seconds beside it.

Optional hard caps (``grading.max_share``) bound the share of a chunk escalated to each
stage, least confident first. Whatever decides, the report measures "the cascade" by
running :meth:`TeacherCascade.grade` itself on the test pairs, chunk by chunk with the
same thresholds and caps: the figures are those of the grades that were published.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES, GradeRule, as_targets, decide_grade

log = logging.getLogger("relgrade.grading")


@dataclass
class CascadeResult:
    probs: np.ndarray  # (n, 4) calibrated probabilities of the deciding stage
    stage: np.ndarray  # (n,) deciding stage (1-based)
    versions: np.ndarray  # (n,) deciding teacher's version
    seconds: dict = field(default_factory=dict)  # compute per stage
    counts: dict = field(default_factory=dict)  # pairs evaluated per stage
    llm_failed: int = 0


def decide(stage_probs: list[np.ndarray], thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Cascade on precomputed per-stage probabilities (every stage on every pair):
    (final probs, deciding stage). ``thresholds[k]`` applies to stage k+1."""
    n = len(stage_probs[0])
    probs = stage_probs[0].copy()
    stage = np.ones(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    for k, t in enumerate(thresholds):
        active &= stage_probs[k].max(axis=1) < t
        probs[active] = stage_probs[k + 1][active]
        stage[active] = k + 2
    return probs, stage


def reach_shares(stage_conf: list[np.ndarray], thresholds: list[float]) -> list[float]:
    """Share of pairs that reach each stage (stage 1: all) under ``thresholds``."""
    n = len(stage_conf[0])
    active = np.ones(n, dtype=bool)
    out = [1.0]
    for k, t in enumerate(thresholds):
        active &= stage_conf[k] < t
        out.append(float(active.mean()) if n else 0.0)
    return out


def modelled_cost(shares: list[float], costs: list[float]) -> float:
    """Seconds per million pairs: each stage's cost times the share that reaches it."""
    return float(sum(s * c for s, c in zip(shares, costs)))


def weighted_qwk(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(N_GRADES)), sample_weight=w))


def choose_thresholds(dev_probs: list[np.ndarray], dev_targets, dev_weights: np.ndarray | None,
                      union_conf: list[np.ndarray], costs: list[float], budget: float, grid: list[float],
                      rule: "str | GradeRule" = "quadratic", judged: np.ndarray | None = None) -> dict:
    """The threshold vector with the best weighted dev QWK whose modelled union compute
    is within ``budget`` (s per million pairs). ``dev_probs[k]``: stage k+1's calibrated
    probabilities on every dev pair; ``union_conf[k]``: its confidence on the union
    sample. Returns the choice, the whole grid (the quality/compute curve) and its
    Pareto frontier."""
    k = len(dev_probs)
    y = as_targets(dev_targets).argmax(axis=1)
    w = None if dev_weights is None else np.asarray(dev_weights, dtype=float)
    grid = sorted(set(grid) | {0.0, 1.0})  # 0: never escalate (always affordable); 1: escalate every pair
    if k > 3:  # keep the search small: every other grid value per extra stage
        grid = grid[::2]
    rows = []
    for ts in itertools.product(grid, repeat=k - 1) if k > 1 else [()]:
        p, s = decide(dev_probs, list(ts))
        pred = decide_grade(p, rule)
        shares = reach_shares(union_conf, list(ts))
        row = {"thresholds": [float(t) for t in ts], "dev_qwk": weighted_qwk(y, pred, w),
               "cost_s_per_million": modelled_cost(shares, costs), "union_reach": shares,
               "dev_reach": [float((s >= j + 1).mean()) for j in range(k)]}
        if judged is not None and judged.any():
            row["dev_qwk_judged"] = weighted_qwk(y[judged], pred[judged])
        rows.append(row)
    ok = [r for r in rows if r["cost_s_per_million"] <= budget + 1e-9]
    if not ok:  # even stage 1 alone is over budget: take the cheapest
        ok = [min(rows, key=lambda r: r["cost_s_per_million"])]
    best = max(ok, key=lambda r: (round(r["dev_qwk"], 6), -r["cost_s_per_million"]))
    frontier, top = [], -np.inf
    for r in sorted(rows, key=lambda r: (r["cost_s_per_million"], -r["dev_qwk"])):
        if r["dev_qwk"] > top + 1e-9:
            frontier.append(r)
            top = r["dev_qwk"]
    full = max(rows, key=lambda r: r["dev_qwk"])
    log.info("cascade thresholds on dev for a budget of %.0f s per million pairs: %s (dev QWK %.4f, modelled "
             "%.0f s/M, union reach %s); unbounded best %.4f at %.0f s/M", budget, best["thresholds"], best["dev_qwk"],
             best["cost_s_per_million"], [round(x, 3) for x in best["union_reach"]], full["dev_qwk"],
             full["cost_s_per_million"])
    return {"thresholds": best["thresholds"], "chosen": best, "budget_s_per_million": budget, "grid": rows,
            "frontier": frontier, "unbounded_best": full}


def cap(candidates: np.ndarray, conf: np.ndarray, share: float | None, n_total: int) -> np.ndarray:
    """Least-confident ``share * n_total`` of ``candidates`` (indices), ties by index."""
    if share is None or len(candidates) == 0:
        return candidates
    k = int(np.floor(share * n_total))
    if len(candidates) <= k:
        return candidates
    order = np.lexsort((candidates, conf[candidates]))
    return np.sort(candidates[order[:k]])


class TeacherCascade:
    """``stacks[k]`` is stage k+1 (a :class:`StackedTeacher` over teachers 1..k+1);
    ``thresholds[k]`` moves a pair from stage k+1 to k+2."""

    def __init__(self, stacks: list, thresholds: list[float], llm=None, llm_threshold: float | None = None,
                 rule: GradeRule | None = None):
        if len(thresholds) != len(stacks) - 1:
            raise ValueError(f"{len(stacks)} stages need {len(stacks) - 1} thresholds, got {len(thresholds)}")
        for k, st in enumerate(stacks):
            if len(st.members) != k + 1 or any(a is not b for a, b in zip(st.members, stacks[-1].members)):
                raise ValueError("stage k must stack exactly the teachers of stages 1..k, in order")
        self.stacks, self.teachers = stacks, stacks[-1].members
        self.thresholds, self.llm, self.llm_threshold = list(thresholds), llm, llm_threshold
        self.rule = rule or GradeRule()  # how a distribution becomes the published grade

    @property
    def version(self) -> str:
        v = "cascade[" + ",".join(t.version for t in self.teachers) + "]"
        return v + (f"+{self.llm.version}" if self.llm else "")

    def grade(self, pairs: pd.DataFrame, ctx, max_share: list[float | None] | None = None,
              llm_share: float | None = None, X: np.ndarray | None = None) -> CascadeResult:
        """Grade ``pairs``; ``max_share[k]`` caps escalation to stage k+2 as a share of
        ``len(pairs)`` (None = thresholds alone)."""
        n = len(pairs)
        K = len(self.stacks)
        caps = list(max_share or []) + [None] * K
        secs, counts = {}, {}
        t0 = time.perf_counter()
        X = ctx.transform(pairs) if X is None else X
        z = [self.teachers[0].logits_from_features(X)]
        p = self.stacks[0].proba_from_logits(self.stacks[0].combine(z))
        secs[1], counts[1] = time.perf_counter() - t0, n
        stage = np.ones(n, dtype=np.int64)
        versions = np.full(n, self.stacks[0].version, dtype=object)
        reached = np.arange(n)
        texts = None
        for k in range(1, K):
            conf = p.max(axis=1)
            cand = reached[conf[reached] < self.thresholds[k - 1]]
            cand = cap(cand, conf, caps[k - 1], n)
            t1 = time.perf_counter()
            if texts is None and len(cand):
                texts = ctx.texts(pairs)
            zk = np.zeros((n, self.teachers[k]._n_outputs() if hasattr(self.teachers[k], "_n_outputs") else N_GRADES),
                          dtype=np.float32)
            if len(cand):
                zk[cand] = self.teachers[k].logits_texts([texts[0][i] for i in cand], [texts[1][i] for i in cand])
                z.append(zk)
                pk = self.stacks[k].proba_from_logits(self.stacks[k].combine([zz[cand] for zz in z]))
                p[cand], stage[cand], versions[cand] = pk, k + 1, self.stacks[k].version
            else:
                z.append(zk)
            secs[k + 1], counts[k + 1] = time.perf_counter() - t1, len(cand)
            reached = cand
        failed = 0
        if self.llm is not None:
            conf = p.max(axis=1)
            idx = cap(np.flatnonzero(conf < (self.llm_threshold or 1.0)), conf, llm_share, n)
            t1 = time.perf_counter()
            zl = self.llm.logits(pairs.iloc[idx], ctx)
            ok = ~np.isnan(zl).any(axis=1)
            failed = int((~ok).sum())
            if failed:
                log.error("LLM judge could not grade %d of %d escalated pairs: they keep their earlier grade",
                          failed, len(idx))
            good = idx[ok]
            p[good] = self.llm.proba_from_logits(zl[ok])
            stage[good], versions[good] = K + 1, self.llm.version
            secs[K + 1], counts[K + 1] = time.perf_counter() - t1, len(idx)
        return CascadeResult(p, stage, versions, secs, counts, failed)


def grade_frame(pairs: pd.DataFrame, res: CascadeResult, rule: "str | GradeRule" = "quadratic") -> pd.DataFrame:
    """The grade columns of ``relevance_grade_fv`` for ``pairs``."""
    p = res.probs
    out = pd.DataFrame({"query_id": pairs["query_id"].astype(str).to_numpy(dtype=object),
                        "item_id": pairs["item_id"].astype(str).to_numpy(dtype=object)})
    out["grade"] = decide_grade(p, rule)
    out["expected_grade"] = np.clip(p @ np.arange(N_GRADES), 0.0, 3.0)
    out["confidence"] = p.max(axis=1)
    for g in range(N_GRADES):
        out[f"p_grade_{g}"] = p[:, g]
    out["deciding_stage"] = res.stage.astype(np.int64)
    out["teacher_version"] = res.versions
    return out
