"""Read the assembled training set and build each curriculum stage's examples.

Input contract (the assemble stage): ``<data_root>/training/trainset.parquet``, one row
per (query, item) of the mining union for train-split queries, with ``query_text``,
``item_title``, ``difficulty_level`` (1..5), ``grade`` (teacher, nullable) and the
targets ``target`` (blended), ``grade_target`` and ``click_target`` (null where the
pair had no impressions). Human test labels never enter here.

Pairs and triples are chosen on *percentiles* of the run's target over the whole set,
so the same thresholds work for the blended target (spread over [0, 1]) and for the
click target (a smoothed CTR, mostly small); the loss labels are the raw targets.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig, TrainingConfig
from relgrade.contract import ContractError

log = logging.getLogger("training.data")

REQUIRED_COLUMNS = ["query_id", "item_id", "query_text", "item_title", "difficulty_level", "grade"]
OPTIONAL_COLUMNS = ["teacher_version"]  # "human" on the human-anchored rows (relgrade/grading/stage.py)


def load_trainset(path: str | Path, target_column: str) -> pd.DataFrame:
    """The training set with the columns a run needs; rows without a target dropped."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"training set {path} not found: run `relgrade assemble` first")
    import pyarrow.parquet as pq

    have = pq.read_schema(path).names
    cols = list(dict.fromkeys(REQUIRED_COLUMNS + [target_column] + [c for c in OPTIONAL_COLUMNS if c in have]))
    missing = [c for c in cols if c not in have]
    if missing:
        raise ContractError(f"{path}: missing column(s) {missing}; have {have}")
    df = pd.read_parquet(path, columns=cols)
    return prepare(df, target_column)


def prepare(df: pd.DataFrame, target_column: str) -> pd.DataFrame:
    """Typed, de-duplicated rows with a target: query_id, item_id, query_text,
    item_title, level, graded, judged (human-anchored), target, pct (target percentile
    over the set)."""
    missing = [c for c in REQUIRED_COLUMNS + [target_column] if c not in df.columns]
    if missing:
        raise ContractError(f"training set missing column(s) {missing}")
    out = pd.DataFrame({
        "query_id": df["query_id"].astype(str).to_numpy(),
        "item_id": df["item_id"].astype(str).to_numpy(),
        "query_text": df["query_text"].fillna("").astype(str).to_numpy(),
        "item_title": df["item_title"].fillna("").astype(str).to_numpy(),
        "level": pd.to_numeric(df["difficulty_level"], errors="coerce").to_numpy(),
        "graded": df["grade"].notna().to_numpy(),
        # the human anchor: a train query's judged union pair, published with its judgment
        "judged": (df["teacher_version"].astype(str) == "human").to_numpy() if "teacher_version" in df
        else np.zeros(len(df), dtype=bool),
        "target": pd.to_numeric(df[target_column], errors="coerce").astype("float64").to_numpy(),
    })
    n0 = len(out)
    out = out[out["target"].notna() & out["level"].notna() & (out["item_title"] != "") & (out["query_text"] != "")]
    out = out.drop_duplicates(["query_id", "item_id"]).reset_index(drop=True)
    out["level"] = out["level"].astype(np.int64)
    bad = ~out["level"].between(1, 5)
    if bad.any():
        raise ContractError(f"difficulty_level outside 1..5 in {int(bad.sum())} rows")
    if len(out) == 0:
        raise ContractError(f"training set has no usable rows for target {target_column!r}")
    out["pct"] = out["target"].rank(pct=True, method="average").to_numpy()
    log.info("training set: %d of %d rows usable for target %s (%d queries)", len(out), n0, target_column,
             out["query_id"].nunique())
    return out


def subsample_graded(df: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep ``fraction`` of the teacher-graded pairs (sampled per pair, seeded) and every
    ungraded pair: the data-scaling experiment varies only the teacher's labels."""
    if fraction >= 1.0:
        return df
    rng = np.random.default_rng(seed)
    keep = ~df["graded"].to_numpy() | (rng.random(len(df)) < fraction)
    return df[keep].reset_index(drop=True)


def load_catalog_texts(cfg: RelgradeConfig) -> tuple[list[str], list[str]]:
    """(item_ids, texts) of the whole catalog, the text every dense model indexes."""
    from relgrade.mining.channels import item_texts

    cat = pd.read_parquet(cfg.paths.table("catalog")).drop_duplicates("item_id").reset_index(drop=True)
    return cat["item_id"].astype(str).tolist(), item_texts(cat).tolist()


# ---------------------------------------------------------------- stage examples
def pointwise_examples(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """(query, item, target) rows, sampled uniformly from the stage's rows."""
    take = rng.choice(len(df), size=min(n, len(df)), replace=False)
    part = df.iloc[np.sort(take)]
    out = pd.DataFrame({"sentence1": part["query_text"].to_numpy(), "sentence2": part["item_title"].to_numpy(),
                        "score": part["target"].astype("float32").to_numpy()})
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def positives(df: pd.DataFrame, tcfg: TrainingConfig) -> pd.DataFrame:
    """Each query's highest-target rows at or above the positive percentile."""
    pos = df[df["pct"] >= tcfg.positive_percentile]
    pos = pos.sort_values(["query_id", "target"], ascending=[True, False], kind="stable")
    return pos.groupby("query_id", sort=False).head(tcfg.positives_per_query)


def contrastive_examples(df: pd.DataFrame, n: int, rng: np.random.Generator, tcfg: TrainingConfig) -> pd.DataFrame:
    """(query, positive) pairs for in-batch negatives: each query's highest-target
    items above the positive percentile."""
    pos = positives(df, tcfg)
    if len(pos) == 0:
        return pd.DataFrame({"anchor": [], "positive": []})
    take = rng.choice(len(pos), size=min(n, len(pos)), replace=False)
    part = pos.iloc[take]
    return pd.DataFrame({"anchor": part["query_text"].to_numpy(), "positive": part["item_title"].to_numpy()})


def margin_examples(df: pd.DataFrame, n: int, rng: np.random.Generator, tcfg: TrainingConfig,
                    new_levels: tuple[int, ...]) -> pd.DataFrame:
    """(query, positive, negative, margin) triples of the same query: the positive at or
    above the positive percentile, the negative at least ``min_percentile_gap`` below
    it; negatives from the stage's newly entering levels are drawn
    ``new_level_negative_weight`` times as often. Label = margin_scale * target gap."""
    pos = positives(df, tcfg)
    if len(pos) == 0:
        return pd.DataFrame({"query": [], "positive": [], "negative": [], "label": []})
    by_q = {q: g for q, g in df.groupby("query_id", sort=False)}
    qs = pos["query_id"].unique()
    rng.shuffle(qs)
    rows: list[tuple[str, str, str, float]] = []
    pos_by_q = {q: g for q, g in pos.groupby("query_id", sort=False)}
    new = np.asarray(new_levels, dtype=np.int64)
    for q in qs:
        g = by_q[q]
        gp, gl, gt = g["pct"].to_numpy(), g["level"].to_numpy(), g["target"].to_numpy()
        for _, p in pos_by_q[q].iterrows():
            ok = np.flatnonzero(gp <= p["pct"] - tcfg.min_percentile_gap)
            if len(ok) == 0:
                continue
            w = np.where(np.isin(gl[ok], new), tcfg.new_level_negative_weight, 1.0)
            k = min(tcfg.negatives_per_positive, len(ok))
            pick = rng.choice(ok, size=k, replace=False, p=w / w.sum())
            for j in pick:
                rows.append((p["query_text"], p["item_title"], g["item_title"].iat[j],
                             float(tcfg.margin_scale * (p["target"] - gt[j]))))
        if len(rows) >= n:
            break
    out = pd.DataFrame(rows[:n], columns=["query", "positive", "negative", "label"])
    out["label"] = out["label"].astype("float32")
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)
