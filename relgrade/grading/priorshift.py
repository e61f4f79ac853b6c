"""Prior-shift correction of calibrated posteriors (Saerens, Latinne & Decaestecker,
"Adjusting the outputs of a classifier to new a priori probabilities", Neural
Computation 14(1), 2002).

A teacher calibrated on a population with class prior ``pi_train`` outputs
``p(y | x)``. Applied to a population whose classes occur with another prior, and
whose class-conditional densities ``p(x | y)`` are the same (label shift), Bayes' rule
gives the corrected posterior::

    p'(y | x) = (pi'(y) / pi_train(y)) p(y | x) / sum_z (pi'(z) / pi_train(z)) p(z | x)

``pi'`` is unknown on unlabelled data; the EM of the paper estimates it from the
posteriors themselves: start at ``pi_train``, correct the posteriors with the current
estimate, set the estimate to their mean, repeat until it stops moving. It is the
maximum-likelihood prior under label shift.

The estimate is only as good as the calibration: posteriors that never put mass on a
class cannot reveal it (a teacher that calls every union pair relevant estimates a
relevant union). That is why the teachers see negatives in training
(:mod:`relgrade.grading.negatives`) before this correction is of any use.
"""
from __future__ import annotations

import numpy as np


def adjust(probs: np.ndarray, pi_train: np.ndarray, pi_new: np.ndarray) -> np.ndarray:
    """Posteriors under the prior ``pi_new`` (rows renormalized)."""
    w = np.asarray(pi_new, dtype=float) / np.clip(np.asarray(pi_train, dtype=float), 1e-12, None)
    p = np.asarray(probs, dtype=float) * w[None, :]
    return p / np.clip(p.sum(axis=1, keepdims=True), 1e-300, None)


def em_prior(probs: np.ndarray, pi_train: np.ndarray, max_iter: int = 200, tol: float = 1e-6,
             floor: float = 1e-4) -> dict:
    """The EM estimate of the population's class prior from its posteriors.

    Returns ``{"prior", "iterations", "converged", "log_likelihood"}``; ``floor`` keeps
    every class possible (an estimate of exactly 0 can never recover)."""
    p = np.asarray(probs, dtype=float)
    pi_t = np.asarray(pi_train, dtype=float)
    if len(p) == 0:
        return {"prior": pi_t.tolist(), "iterations": 0, "converged": True, "log_likelihood": 0.0}
    pi = pi_t.copy()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        new = adjust(p, pi_t, pi).mean(axis=0)
        new = np.clip(new, floor, None)
        new /= new.sum()
        if np.abs(new - pi).max() < tol:
            pi = new
            converged = True
            break
        pi = new
    w = pi / np.clip(pi_t, 1e-12, None)
    ll = float(np.log(np.clip((p * w[None, :]).sum(axis=1), 1e-300, None)).sum())
    return {"prior": pi.tolist(), "iterations": it, "converged": converged, "log_likelihood": ll}
