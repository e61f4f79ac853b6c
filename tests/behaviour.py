"""Behavioural checks shared by the student and the teacher tests (Made-With-ML's
invariance / direction / minimum-function tests): pairs of a grade-3 and a grade-0
judged item of the same query, and one-character query typos."""
from __future__ import annotations

import numpy as np
import pandas as pd


def grade_3_over_0_pairs(judgments: pd.DataFrame, query_ids, limit: int = 400, seed: int = 0) -> pd.DataFrame:
    """(query_id, item_3, item_0): every grade-3 x grade-0 judged pair of one query, for
    the given queries, at most ``limit`` (a fixed sample)."""
    j = judgments[judgments["query_id"].isin(set(query_ids))]
    hi = j[j["grade"] == 3][["query_id", "item_id"]].rename(columns={"item_id": "item_3"})
    lo = j[j["grade"] == 0][["query_id", "item_id"]].rename(columns={"item_id": "item_0"})
    pairs = hi.merge(lo, on="query_id")
    return pairs.sample(min(limit, len(pairs)), random_state=seed).reset_index(drop=True) if len(pairs) else pairs


def typo(text: str, seed: int) -> str:
    """One character of the longest word (>= 5 letters) dropped, at a seeded position
    inside the word; texts without such a word are returned as they are."""
    words = text.split()
    if not words:
        return text
    i = max(range(len(words)), key=lambda k: (len(words[k]), -k))
    w = words[i]
    if len(w) < 5 or not w.isalpha():
        return text
    pos = 1 + np.random.default_rng(seed).integers(len(w) - 2)
    words[i] = w[:pos] + w[pos + 1:]
    return " ".join(words)
