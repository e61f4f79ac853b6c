"""Calibration and agreement metrics.

* Temperature scaling: one scalar ``T`` per teacher, fitted on dev by minimizing the
  negative log-likelihood of the human grades; calibrated probabilities are
  ``softmax(logits / T)``. It keeps the arg-max grade and fixes over/under-confidence.
* Expected calibration error (ECE): equal-width bins of the confidence (max
  probability), ``sum_b |acc_b - conf_b| * n_b / n``; the reliability plot shows the
  same bins.
* Scale map: isotonic regression from the expected grade (0..3) to the source's raw
  score (Home Depot mean rating 1..3), fitted on dev, for RMSE on the original scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_GRADES = 4


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def as_targets(y, n_classes: int = N_GRADES) -> np.ndarray:
    """Grades (n,) as one-hot (n, 4); soft targets (n, 4) pass through."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(np.float64)
    out = np.zeros((len(y), n_classes))
    out[np.arange(len(y)), y.astype(np.int64)] = 1.0
    return out


def expand_soft(targets, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft targets as weighted hard rows for estimators that take class labels: each
    pair once per grade its target touches, weighted by that share times the pair's
    weight. Returns (row index, grade, weight)."""
    T = as_targets(targets)
    w = np.ones(len(T)) if weights is None else np.asarray(weights, dtype=float)
    rows, grades = np.nonzero(T > 0)
    return rows, grades, T[rows, grades] * w[rows]


def nll(probs: np.ndarray, y, weights=None) -> float:
    """Mean (weighted) cross-entropy of ``probs`` against grades or soft targets."""
    T = as_targets(y, probs.shape[1])
    lp = np.log(np.clip(probs, 1e-12, 1.0))
    per = -(T * lp).sum(axis=1)
    w = np.ones(len(per)) if weights is None else np.asarray(weights, dtype=float)
    return float((per * w).sum() / max(w.sum(), 1e-12))


def fit_temperature(logits: np.ndarray, y, weights=None) -> float:
    """The temperature minimizing dev NLL (bounded to [0.05, 20]); ``y`` grades or
    soft targets, ``weights`` per pair."""
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        raise ValueError("temperature scaling needs at least one labelled dev pair")
    res = minimize_scalar(lambda lt: nll(softmax(logits / np.exp(lt)), y, weights), bounds=(np.log(0.05), np.log(20.0)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> list[dict]:
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = pred == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else None,
                    "accuracy": float(correct[m].mean()) if m.any() else None})
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    n = len(y)
    if n == 0:
        return float("nan")
    return float(sum(abs(b["accuracy"] - b["confidence"]) * b["n"] / n for b in reliability(probs, y, bins) if b["n"]))


@dataclass
class ScaleMap:
    """Expected grade (0..3) -> raw score (e.g. 1..3 mean rating), isotonic, fitted on dev."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def fit(cls, expected: np.ndarray, raw: np.ndarray | None) -> "ScaleMap | None":
        """None when the source has no numeric label (ESCI, WANDS: categories only):
        RMSE is then reported on the 0..3 grade scale alone."""
        from sklearn.isotonic import IsotonicRegression

        if raw is None:
            return None
        raw = np.asarray(raw, dtype=float)
        ok = ~np.isnan(raw)
        if ok.sum() < 2:
            return None
        iso = IsotonicRegression(out_of_bounds="clip").fit(expected[ok], raw[ok])
        return cls(np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float))

    def __call__(self, expected: np.ndarray) -> np.ndarray:
        return np.interp(expected, self.x, self.y)

    def to_json(self) -> dict:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "ScaleMap":
        return cls(np.asarray(d["x"], dtype=float), np.asarray(d["y"], dtype=float))


@dataclass(frozen=True)
class GradeRule:
    """How a distribution over grades 0..3 becomes one grade: ``name`` is ``argmax``
    or ``quadratic``, and only ``grades`` (the grades the source's judgments use) may be
    published. WANDS, for one, maps its labels to 0, 1 and 3: a pair half way between
    "partial" and "exact" must not get a grade 2 no human could have given."""

    name: str = "quadratic"
    grades: tuple[int, ...] = tuple(range(N_GRADES))

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        return decide_grade(probs, self.name, self.grades)


def decide_grade(probs: np.ndarray, rule: "str | GradeRule" = "quadratic", grades=None) -> np.ndarray:
    """The grade of each distribution among ``grades`` (default: all of 0..3):
    ``argmax`` (the most probable allowed grade) or ``quadratic`` (the allowed grade
    ``g`` minimizing the expected squared error ``sum_k p_k (g - k)^2``: the Bayes
    decision under the loss that quadratic weighted kappa and RMSE charge; with every
    grade allowed it is the integer nearest the expected grade, halves rounded up)."""
    if isinstance(rule, GradeRule):
        rule, grades = rule.name, rule.grades
    probs = np.asarray(probs, dtype=float)
    allowed = np.arange(probs.shape[1]) if grades is None else np.asarray(sorted(set(int(g) for g in grades)))
    if len(allowed) == 0:
        raise ValueError("a grade rule needs at least one allowed grade")
    if rule == "argmax":
        return allowed[probs[:, allowed].argmax(axis=1)].astype(np.int64)
    if rule == "quadratic":
        k = np.arange(probs.shape[1])
        loss = probs @ ((allowed[None, :] - k[:, None]) ** 2)  # (n, allowed): expected squared error
        # ties (an expected grade exactly half way) go to the higher grade, as rounding half up
        return allowed[len(allowed) - 1 - loss[:, ::-1].argmin(axis=1)].astype(np.int64)
    raise ValueError(f"unknown grade rule {rule!r} (argmax | quadratic)")


def qwk(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(N_GRADES))))


def agreement_metrics(probs: np.ndarray, y: np.ndarray, raw: np.ndarray | None = None,
                      scale: ScaleMap | None = None, positive_grade: int = 2, bins: int = 15,
                      rule: "str | GradeRule" = "quadratic") -> dict:
    """Exact, within-one, binary (grade >= positive_grade) agreement, QWK, ECE and RMSE
    on the raw scale (through ``scale``) of calibrated ``probs`` against human ``y``."""
    pred = decide_grade(probs, rule)
    expected = probs @ np.arange(N_GRADES)
    out = {
        "n": int(len(y)),
        "exact": float((pred == y).mean()),
        "within_one": float((np.abs(pred - y) <= 1).mean()),
        "binary": float(((pred >= positive_grade) == (y >= positive_grade)).mean()),
        "qwk": qwk(y, pred),
        "ece": ece(probs, y, bins),
        "nll": nll(probs, y),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "rmse_grade": float(np.sqrt(np.mean((expected - y) ** 2))),
    }
    out["rmse_raw"] = None  # on the source's raw scale: only where it has one (a numeric label)
    if raw is not None and scale is not None:
        ok = ~np.isnan(raw)
        if ok.any():
            out["rmse_raw"] = float(np.sqrt(np.mean((scale(expected[ok]) - raw[ok]) ** 2)))
    return out
