"""The label budget: which human judgments relgrade's learners may see.

``dataset.train_label_fraction`` keeps the judgments of that share of the train queries
(chosen by a seeded hash of the query id, so a smaller budget's queries are a subset of a
larger one's) and withholds the rest from everything that learns from them: the teachers,
their calibration and class prior, the human anchor of the target (relgrade/grading/) and
the peer recipe's positives (training/hardneg.py). The withheld queries stay in the data:
they are mined, graded and trained on like any other train query. Dev and test judgments
are never withheld (dev calibrates, test measures), and the simulated engagement is drawn
from the full table (the world does not change with the budget).
"""
from __future__ import annotations

import hashlib

import pandas as pd

SALT = "relgrade-label-budget"


def kept_share(query_ids: pd.Series) -> pd.Series:
    """A uniform number in [0, 1) per query id, the same on every run and machine."""
    return query_ids.astype(str).map(
        lambda q: int(hashlib.sha1(f"{SALT}:{q}".encode("utf-8")).hexdigest()[:12], 16) / 16 ** 12)


def visible_judgments(judgments: pd.DataFrame, queries: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """``judgments`` without those of the train queries outside the budget."""
    if fraction >= 1.0:
        return judgments
    q = queries[["query_id", "split"]].astype({"query_id": str})
    train = q.loc[q["split"] == "train", "query_id"]
    withheld = set(train[kept_share(train).to_numpy() >= fraction])
    return judgments[~judgments["query_id"].astype(str).isin(withheld)].reset_index(drop=True)


def budget_stats(judgments: pd.DataFrame, visible: pd.DataFrame, queries: pd.DataFrame, fraction: float) -> dict:
    """How much of the train split's judgments the budget keeps."""
    train = set(queries.loc[queries["split"] == "train", "query_id"].astype(str))
    tj, tv = (d[d["query_id"].astype(str).isin(train)] for d in (judgments, visible))
    return {"train_label_fraction": fraction, "train_queries_judged": int(tj["query_id"].nunique()),
            "train_queries_kept": int(tv["query_id"].nunique()), "train_judgments": int(len(tj)),
            "train_judgments_kept": int(len(tv))}
