"""The cascade: every pair starts at stage 1 and moves up while its calibrated
confidence (max probability) is below that stage's threshold.

Stages: 1 GBM, 2 a cross-encoder stacked with stage 1, 3 a second cross-encoder stacked
with both (a pair escalated to stage k reuses the outputs of the stages below it, so each
stage costs one more cross-encoder pass), optionally 4 an LLM judge. Stacking matters:
a bare cross-encoder at stage 2 was *worse* than stage 1 on this data (test QWK 0.25 vs
0.33), so escalating to it lost quality, and only escalating nearly every pair to stage
3 came within 0.01 QWK of it (52% of stage-3 compute); stacked, stage 2 is 0.355 and the
cascade meets the target at about a fifth of the compute (docs/grading.md).

Thresholds are chosen on dev (:func:`choose_thresholds`): the cheapest pair
``(t1, t2)`` on a grid whose dev QWK is within ``qwk_margin`` of stage 3 alone, where
cost is measured seconds per 1,000 pairs of each stage. On the mined union the
escalation is additionally capped per chunk (:meth:`TeacherCascade.grade`): at most
``max_share[k]`` of the chunk's pairs go up to stage k, least confident first.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES, decide_grade, qwk
from relgrade.grading.teachers import CrossEncoderTeacher, EnsembleTeacher, GBMTeacher, LLMJudgeTeacher

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


def cascade_cost(stage: np.ndarray, costs: list[float]) -> float:
    """Seconds per 1,000 pairs: every pair pays stages 1..its deciding stage."""
    c = np.cumsum(costs)
    return float(np.mean(c[stage - 1]))


def choose_thresholds(stage_probs: list[np.ndarray], y: np.ndarray, costs: list[float], grid: list[float],
                      qwk_margin: float, rule: str = "quadratic") -> dict:
    """The cheapest (t1, t2) whose dev QWK >= QWK(stage 3 alone) - qwk_margin."""
    target = qwk(y, decide_grade(stage_probs[-1], rule)) - qwk_margin
    full = float(np.sum(costs))
    best, fallback, table = None, None, []
    for t1 in grid:
        for t2 in grid:
            p, s = decide(stage_probs, [t1, t2])
            k = qwk(y, decide_grade(p, rule))
            cost = cascade_cost(s, costs)
            row = {"t1": t1, "t2": t2, "qwk": k, "cost_per_1k_s": cost, "cost_share": cost / full,
                   "escalated_2": float((s >= 2).mean()), "escalated_3": float((s >= 3).mean())}
            table.append(row)
            if k >= target and (best is None or (cost, -k) < (best["cost_per_1k_s"], -best["qwk"])):
                best = row
            if fallback is None or k > fallback["qwk"]:
                fallback = row
    chosen = best or fallback
    log.info("cascade thresholds on dev: t1=%.3f t2=%.3f (QWK %.4f vs stage 3 %.4f, cost share %.3f)%s",
             chosen["t1"], chosen["t2"], chosen["qwk"], target + qwk_margin, chosen["cost_share"],
             "" if best else " - no pair met the QWK target: highest QWK taken")
    return {"t1": chosen["t1"], "t2": chosen["t2"], "met_target": best is not None, "dev": chosen,
            "stage3_dev_qwk": target + qwk_margin, "grid": table}


def _cap(candidates: np.ndarray, conf: np.ndarray, share: float | None, n_total: int) -> np.ndarray:
    """Least-confident ``share * n_total`` of ``candidates`` (indices), ties by index."""
    if share is None or len(candidates) == 0:
        return candidates
    k = int(np.floor(share * n_total))
    if len(candidates) <= k:
        return candidates
    order = np.lexsort((candidates, conf[candidates]))
    return np.sort(candidates[order[:k]])


class TeacherCascade:
    def __init__(self, gbm: GBMTeacher, st2: EnsembleTeacher, ens: EnsembleTeacher, thresholds: list[float],
                 llm: LLMJudgeTeacher | None = None, llm_threshold: float | None = None):
        if len(st2.members) != 2 or st2.members[0] is not gbm or not isinstance(st2.members[1], CrossEncoderTeacher):
            raise ValueError("stage 2 must stack (stage 1, a cross-encoder)")
        if len(ens.members) != 3 or ens.members[0] is not gbm or ens.members[1] is not st2.members[1]:
            raise ValueError("stage 3 must stack (stage 1, the stage-2 cross-encoder, a third cross-encoder)")
        self.gbm, self.st2, self.ce2, self.ens, self.ce3 = gbm, st2, st2.members[1], ens, ens.members[2]
        self.thresholds, self.llm, self.llm_threshold = list(thresholds), llm, llm_threshold

    @property
    def version(self) -> str:
        v = f"cascade[{self.gbm.version},{self.ce2.version},{self.ce3.version}]"
        return v + (f"+{self.llm.version}" if self.llm else "")

    def grade(self, pairs: pd.DataFrame, ctx, max_share: tuple[float | None, float | None, float | None] = (None, None, None),
              X: np.ndarray | None = None) -> CascadeResult:
        """Grade ``pairs``; ``max_share`` caps escalation to stages 2, 3 and the LLM as a
        share of ``len(pairs)`` (None = no cap)."""
        n = len(pairs)
        secs, counts = {}, {}
        t0 = time.perf_counter()
        X = ctx.transform(pairs) if X is None else X
        z1 = self.gbm.logits_from_features(X)
        p = self.gbm.proba_from_logits(z1)
        secs[1], counts[1] = time.perf_counter() - t0, n
        stage = np.ones(n, dtype=np.int64)
        versions = np.full(n, self.gbm.version, dtype=object)
        conf = p.max(axis=1)
        # stage 2
        idx2 = _cap(np.flatnonzero(conf < self.thresholds[0]), conf, max_share[0], n)
        t0 = time.perf_counter()
        sub = pairs.iloc[idx2]
        q, it = ctx.texts(sub)
        z2 = self.ce2.logits_texts(q, it)
        p2 = self.st2.proba_from_logits(self.st2.combine([z1[idx2], z2]))
        secs[2], counts[2] = time.perf_counter() - t0, len(idx2)
        p[idx2], stage[idx2], versions[idx2] = p2, 2, self.st2.version
        # stage 3 (reuses z1, z2)
        c2 = p2.max(axis=1)
        loc3 = _cap(np.flatnonzero(c2 < self.thresholds[1]), c2, max_share[1], n)
        idx3 = idx2[loc3]
        t0 = time.perf_counter()
        z3 = self.ce3.logits_texts([q[i] for i in loc3], [it[i] for i in loc3])
        p3 = self.ens.proba_from_logits(self.ens.combine([z1[idx3], z2[loc3], z3]))
        secs[3], counts[3] = time.perf_counter() - t0, len(idx3)
        p[idx3], stage[idx3], versions[idx3] = p3, 3, self.ens.version
        failed = 0
        if self.llm is not None:
            conf = p.max(axis=1)
            idx4 = _cap(np.flatnonzero(conf < (self.llm_threshold or 1.0)), conf, max_share[2], n)
            t0 = time.perf_counter()
            z4 = self.llm.logits(pairs.iloc[idx4], ctx)
            ok = ~np.isnan(z4).any(axis=1)
            failed = int((~ok).sum())
            if failed:
                log.error("LLM judge could not grade %d of %d escalated pairs: they keep their stage-%s grade",
                          failed, len(idx4), "/".join(map(str, sorted(set(stage[idx4[~ok]])))))
            good = idx4[ok]
            p[good] = self.llm.proba_from_logits(z4[ok])
            stage[good], versions[good] = self.llm.stage, self.llm.version
            secs[4], counts[4] = time.perf_counter() - t0, len(idx4)
        return CascadeResult(p, stage, versions, secs, counts, failed)


def grade_frame(pairs: pd.DataFrame, res: CascadeResult, rule: str = "quadratic") -> pd.DataFrame:
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
