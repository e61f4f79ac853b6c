"""Span-level precision, recall and F1 per attribute type (exact span and type match,
the CoNLL convention), and micro-F1 over every type."""
from __future__ import annotations

from collections import Counter

from relgrade.attributes.schema import TYPES, spans_from_tags


def span_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """``{"per_type": {type: {precision, recall, f1, gold, predicted, correct}}, "micro": {...}}``."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    tp, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        gs, ps = set(spans_from_tags(g)), set(spans_from_tags(p))
        for s in gs:
            n_gold[s[2]] += 1
        for s in ps:
            n_pred[s[2]] += 1
        for s in gs & ps:
            tp[s[2]] += 1

    def prf(c, ng, npred):
        p = c / npred if npred else 0.0
        r = c / ng if ng else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4),
                "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "gold": ng, "predicted": npred, "correct": c}

    per = {t: prf(tp[t], n_gold[t], n_pred[t]) for t in TYPES}
    micro = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    return {"per_type": per, "micro": micro}
