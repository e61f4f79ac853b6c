"""The union table of one mining snapshot and its feature batch.

One row per (query, item) returned by at least one channel::

    query_id, item_id, snapshot_ts,
    rank_lexical, rank_dense, rank_behavioral, rank_external    (Int64, null = not returned)
    score_lexical, score_dense, score_behavioral, score_external (float, NaN = not returned)
    agreement        number of channels that returned the item
    channel_pattern  one position per channel in the order L D B E, the letter when the
                     channel returned the item, "-" otherwise ("LD--": lexical and dense)
    active_channels  same format: the channels that returned anything for the query
    retrieval_prior, category, difficulty_level   (relgrade.mining.prior)
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from relgrade.mining.prior import CHANNELS, LETTERS, categorize, retrieval_prior
from relgrade.util import utc_timestamp
from relgrade.views import RETRIEVAL_PRIOR_FV

UNION_COLUMNS = (
    ["query_id", "item_id", "snapshot_ts"]
    + [f"rank_{c}" for c in CHANNELS]
    + [f"score_{c}" for c in CHANNELS]
    + ["agreement", "channel_pattern", "active_channels", "retrieval_prior", "category", "difficulty_level"]
)
FEATURE_VIEW = RETRIEVAL_PRIOR_FV


def _pattern(mask: np.ndarray) -> np.ndarray:
    """(n, 4) bool -> 'LDBE'-style strings."""
    letters = np.array([LETTERS[c] for c in CHANNELS])
    chars = np.where(mask, letters[None, :], "-")
    if len(chars) == 0:
        return np.array([], dtype=object)
    return np.array(["".join(r) for r in chars], dtype=object)


def build_union(
    results: dict[str, pd.DataFrame],
    snapshot_ts: datetime | str | pd.Timestamp,
    weights: dict[str, float] | None = None,
    rank_constant: float = 10.0,
    agreement_weight: float = 0.25,
    near_top_rank: int = 10,
    high_rank: int = 10,
) -> pd.DataFrame:
    """Union of per-channel top-K frames (``query_id, item_id, rank, score``), keyed by
    channel name (lexical | dense | behavioral | external), with the prior and the
    pattern categories. Sorted by query, then prior (descending), then item."""
    unknown = set(results) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s) {sorted(unknown)}; known: {list(CHANNELS)}")
    parts = _channel_parts(results)
    ts = utc_timestamp(snapshot_ts)
    if not parts:
        out = pd.DataFrame({c: pd.Series([], dtype=object) for c in UNION_COLUMNS})
        return out
    out = _union_rows(pd.concat(parts, ignore_index=True), ts)
    out["retrieval_prior"] = retrieval_prior(out, weights, rank_constant, agreement_weight).to_numpy()
    out[["category", "difficulty_level"]] = categorize(out, near_top_rank, high_rank)
    out = out.sort_values(["query_id", "retrieval_prior", "item_id"], ascending=[True, False, True], kind="stable")
    return out.reset_index(drop=True)[UNION_COLUMNS]


def _channel_parts(results: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    """Each non-empty channel's hits, checked (columns, no duplicated pair) and tagged with the channel index."""
    parts = []
    for ci, c in enumerate(CHANNELS):
        df = results.get(c)
        if df is None or len(df) == 0:
            continue
        missing = {"query_id", "item_id", "rank", "score"} - set(df.columns)
        if missing:
            raise ValueError(f"{c} results missing column(s) {sorted(missing)}")
        if df.duplicated(["query_id", "item_id"]).any():
            raise ValueError(f"{c} results hold duplicated (query_id, item_id) pairs")
        parts.append(pd.DataFrame({
            "query_id": df["query_id"].astype(str).to_numpy(dtype=object),
            "item_id": df["item_id"].astype(str).to_numpy(dtype=object),
            "ch": np.full(len(df), ci, dtype=np.int8),
            "rank": df["rank"].to_numpy(dtype=np.int64),
            "score": df["score"].to_numpy(dtype=np.float64),
        }))
    return parts


def _union_rows(allr: pd.DataFrame, ts: pd.Timestamp) -> pd.DataFrame:
    """One row per (query, item): ranks and scores per channel, agreement, channel pattern, active channels."""
    qcode, quniq = pd.factorize(allr["query_id"], sort=True)
    icode, iuniq = pd.factorize(allr["item_id"], sort=True)
    key = qcode.astype(np.int64) * len(iuniq) + icode
    ukey, row = np.unique(key, return_inverse=True)
    row = row.ravel()
    n = len(ukey)
    ch = allr["ch"].to_numpy()
    R = np.full((n, len(CHANNELS)), np.nan)
    S = np.full((n, len(CHANNELS)), np.nan)
    R[row, ch] = allr["rank"].to_numpy(dtype=np.float64)
    S[row, ch] = allr["score"].to_numpy()
    uq = ukey // len(iuniq)
    found = ~np.isnan(R)
    # active channels per query: returned anything for it
    act_q = np.zeros((len(quniq), len(CHANNELS)), dtype=bool)
    act_q[qcode, ch] = True
    active = act_q[uq]

    out = pd.DataFrame({
        "query_id": np.asarray(quniq, dtype=object)[uq],
        "item_id": np.asarray(iuniq, dtype=object)[ukey % len(iuniq)],
        "snapshot_ts": pd.Series(np.full(n, ts), dtype="datetime64[us, UTC]") if n else pd.Series([], dtype="datetime64[us, UTC]"),
    })
    for ci, c in enumerate(CHANNELS):
        out[f"rank_{c}"] = pd.array(np.where(found[:, ci], R[:, ci], np.nan), dtype="Float64").astype("Int64")
    for ci, c in enumerate(CHANNELS):
        out[f"score_{c}"] = S[:, ci]
    out["agreement"] = found.sum(axis=1).astype(np.int64)
    out["channel_pattern"] = _pattern(found)
    out["active_channels"] = _pattern(active)
    return out


def to_feature_batch(union: pd.DataFrame, snapshot_ts: datetime | str | pd.Timestamp | None = None) -> pd.DataFrame:
    """The union as a retrieval_prior_fv batch: exactly the view's columns (join keys,
    event_timestamp = the snapshot instant, then the settled schema), typed."""
    from relgrade.featurestore import view_columns

    cols = view_columns(FEATURE_VIEW)
    if snapshot_ts is None:
        if "snapshot_ts" not in union.columns or union["snapshot_ts"].nunique() != 1:
            raise ValueError("pass snapshot_ts: the union does not hold exactly one snapshot")
        snapshot_ts = union["snapshot_ts"].iloc[0]
    ts = utc_timestamp(snapshot_ts)
    out = pd.DataFrame({
        "query_id": union["query_id"].astype(str).to_numpy(dtype=object),
        "item_id": union["item_id"].astype(str).to_numpy(dtype=object),
    })
    out["event_timestamp"] = pd.Series(np.full(len(union), ts), dtype="datetime64[us, UTC]")
    for c in cols:
        if c in ("query_id", "item_id", "event_timestamp"):
            continue
        if c.startswith("rank_") or c in ("agreement", "difficulty_level"):
            out[c] = pd.array(union[c].to_numpy(), dtype="Int64") if c in union.columns else pd.array([pd.NA] * len(union), dtype="Int64")
        elif c == "retrieval_prior":
            out[c] = union[c].astype("float64").to_numpy()
        else:
            out[c] = union[c].astype(object).to_numpy()
    return out[cols]
