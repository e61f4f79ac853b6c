"""The query traffic model: each query's share of traffic and its segment (head / torso
/ tail), a function of the query ids and ``simulation.seed`` only.

Ground, because two stages use it: ingest derives a query's segment with it when the
contract's queries carry none, and the simulator draws each day's traffic from it."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from relgrade.config import SimulationConfig


def _popularity_ranks(query_ids: pd.Series, seed: int) -> pd.Series:
    ids = query_ids.astype(str)
    if ids.duplicated().any():
        raise ValueError(f"query ids must be unique; e.g. {ids[ids.duplicated()].iloc[0]!r} repeats")
    digest = ids.map(lambda q: hashlib.sha1(f"{seed}:{q}".encode("utf-8")).hexdigest())
    # rank by digest, ties (impossible in practice) broken by the id itself
    order = pd.DataFrame({"d": digest.values, "q": ids.values}).sort_values(["d", "q"]).index
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.asarray(order)] = np.arange(1, len(ids) + 1)
    return pd.Series(rank, index=query_ids.index)


def query_popularity(query_ids: pd.Series, sim: SimulationConfig) -> pd.Series:
    """Traffic share of each query (sums to 1, indexed like ``query_ids``).

    Popularity rank = position of sha1(f"{seed}:{query_id}") in sorted order: a seeded
    permutation that depends only on the id set and the seed, not on row order.
    weight = 1 / rank ** zipf_exponent, normalized.
    """
    if len(query_ids) == 0:
        return pd.Series([], dtype=float, index=query_ids.index)
    rank = _popularity_ranks(query_ids, sim.seed)
    w = 1.0 / rank.to_numpy(dtype=np.float64) ** sim.zipf_exponent
    return pd.Series(w / w.sum(), index=query_ids.index, name="popularity")


def query_segments(query_ids: pd.Series, sim: SimulationConfig) -> pd.Series:
    """head / torso / tail by share of simulated traffic.

    Queries are ordered by popularity (most popular first). A query is ``head`` when the
    traffic of the strictly more popular queries is below ``head_traffic_share``,
    ``torso`` when it is below ``head_traffic_share + torso_traffic_share``, else
    ``tail``. So head is the smallest set of top queries covering the head share (the
    query that crosses the boundary belongs to the earlier segment).
    """
    w = query_popularity(query_ids, sim)
    if len(w) == 0:
        return pd.Series([], dtype=object, index=query_ids.index)
    rank = _popularity_ranks(query_ids, sim.seed)
    order = np.argsort(rank.to_numpy(), kind="stable")
    ws = w.to_numpy()[order]
    before = np.cumsum(ws) - ws
    h = sim.segments.head_traffic_share
    t = h + sim.segments.torso_traffic_share
    seg_sorted = np.where(before < h - 1e-12, "head", np.where(before < t - 1e-12, "torso", "tail"))
    seg = np.empty(len(w), dtype=object)
    seg[order] = seg_sorted
    return pd.Series(seg, index=query_ids.index, name="segment")
