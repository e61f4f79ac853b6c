"""A small training set in the assemble stage's exact contract, built from a real slice
of the bundled Home Depot data (the quick profile's 400 queries), for the training and
evaluation tests while the assemble stage is not required.

Stand-ins, all deterministic: the "teacher grade" of a train-split pair is its human
grade where the pair is judged (train split only: the teacher cascade is trained on
those labels too); otherwise none. The retrieval prior and levels come from BM25 ranks,
the blended target from grade, prior and lexical overlap, and the click target from a
position-biased function of the BM25 rank (what a click log of a lexical ranker teaches).
Test-split judgments are never read here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.ingest import build_tables
from relgrade.io import write_parquet_atomic
from relgrade.mining.channels import LexicalChannel
from relgrade.mining.tokenize import tokenize_many


def write_contract(cfg: RelgradeConfig) -> dict[str, pd.DataFrame]:
    tables = build_tables(cfg)
    for name, df in tables.items():
        write_parquet_atomic(df, cfg.paths.table(name))
    return tables


def make_trainset(tables: dict[str, pd.DataFrame], k: int = 30) -> pd.DataFrame:
    catalog, queries, judgments = tables["catalog"], tables["queries"], tables["judgments"]
    train_q = queries[queries["split"] == "train"].reset_index(drop=True)
    hits = LexicalChannel().fit(catalog).search(train_q, k=k)
    j = judgments[judgments["query_id"].isin(set(train_q["query_id"]))][["query_id", "item_id", "grade"]]
    pairs = hits[["query_id", "item_id", "rank"]].merge(j, on=["query_id", "item_id"], how="outer")
    title = dict(zip(catalog["item_id"].astype(str), catalog["title"].astype(str)))
    qtext = dict(zip(train_q["query_id"], train_q["text"]))
    seg = dict(zip(train_q["query_id"], train_q["segment"]))
    pairs["query_text"] = pairs["query_id"].map(qtext)
    pairs["item_title"] = pairs["item_id"].map(title)
    pairs = pairs.dropna(subset=["item_title"]).reset_index(drop=True)
    qt = tokenize_many(pairs["query_text"])
    tt = tokenize_many(pairs["item_title"])
    overlap = np.array([len(set(a) & set(b)) / max(len(set(a)), 1) for a, b in zip(qt, tt)])
    rank = pairs["rank"].to_numpy(dtype=float)
    found = ~np.isnan(rank)
    prior = np.where(found, 11.0 / (10.0 + np.nan_to_num(rank, nan=1e9)), 0.0)
    grade = pairs["grade"].to_numpy(dtype=float)
    graded = ~np.isnan(grade)
    expected = np.where(graded, grade, np.clip(np.round(3 * overlap), 0, 3))
    rel = expected >= 2
    r = np.nan_to_num(rank, nan=999)
    level = np.where(rel, np.select([r <= 5, r <= 15, r <= k], [1, 2, 3], 5),
                     np.select([r <= 5, r <= 15, r <= k], [4, 3, 2], 1))
    category = np.where(level == 1, np.where(rel, "easy_positive", "other"),
                        np.where(rel & (level == 5), "hard_positive", np.where(~rel & (level >= 3), "hard_negative", "other")))
    impressions = np.where(r <= 20, np.round(400.0 / np.sqrt(r)), 0.0)
    clicks = np.round(impressions * (0.25 / np.sqrt(r)) * (0.4 + 0.6 * overlap))
    ctr = np.where(impressions > 0, clicks / np.maximum(impressions, 1), np.nan)
    click_target = np.where(impressions > 0, (clicks + 10 * 0.05) / (impressions + 10), np.nan)
    target = 0.75 * expected / 3 + 0.15 * prior + 0.10 * overlap
    n = len(pairs)
    out = pd.DataFrame({
        "query_id": pairs["query_id"].astype(str), "item_id": pairs["item_id"].astype(str),
        "event_timestamp": pd.Timestamp("2026-08-26", tz="UTC"),
        "query_text": pairs["query_text"], "item_title": pairs["item_title"],
        "segment": pairs["query_id"].map(seg), "retrieval_prior": prior,
        "agreement": found.astype(int), "category": category, "difficulty_level": level.astype(int),
        "grade": pd.array(np.where(graded, grade, np.nan), dtype="Float64").astype("Int64"),
        "expected_grade": expected, "confidence": np.where(graded, 0.9, 0.5),
        "impressions_28d": impressions, "clicks_28d": clicks, "ctr_raw_28d": ctr, "ctr_debiased_28d": ctr,
        "gated_preference": pd.array([None] * n, dtype="Float64"),
        "target": np.clip(target, 0, 1), "grade_target": expected / 3, "click_target": click_target,
    })
    return out.sort_values(["query_id", "item_id"]).reset_index(drop=True)


def write_trainset(cfg: RelgradeConfig, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:

    ts = make_trainset(tables)
    write_parquet_atomic(ts, cfg.paths.trainset)
    return ts
