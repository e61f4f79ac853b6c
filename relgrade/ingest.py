"""Ingest stage: adapter -> data contract. Pure logic; the ingest flow validates and
writes what this returns."""
from __future__ import annotations

import pandas as pd

from relgrade.adapters import load_dataset
from relgrade.config import RelgradeConfig
from relgrade.contract import conform
from relgrade.segments import query_segments

CONTRACT_TABLES = ("catalog", "queries", "judgments")


def traffic_segments(queries: pd.DataFrame, searches: pd.Series, cfg: RelgradeConfig) -> pd.Series:
    """head / torso / tail by each query's share of a real log's searches (queries the log
    never saw are tail): the rule of :func:`relgrade.segments.query_segments` on the
    log's traffic instead of the simulator's."""
    import numpy as np

    w = queries["query_id"].astype(str).map(searches).fillna(0.0).to_numpy(dtype=float)
    order = np.lexsort((queries["query_id"].astype(str).to_numpy(), -w))
    total = w.sum() or 1.0
    ws = w[order] / total
    before = np.cumsum(ws) - ws
    h = cfg.simulation.segments.head_traffic_share
    t = h + cfg.simulation.segments.torso_traffic_share
    seg_sorted = np.where((before < h - 1e-12) & (ws > 0), "head",
                          np.where((before < t - 1e-12) & (ws > 0), "torso", "tail"))
    seg = np.empty(len(w), dtype=object)
    seg[order] = seg_sorted
    return pd.Series(seg, index=queries.index, name="segment")


TEXT_COLUMNS = {"catalog": ("title", "description", "brand", "category"), "queries": ("text",)}


def decode_entities(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """HTML entities in text columns decoded (``Thompson&#39;s`` -> ``Thompson's``,
    ``&amp;`` -> ``&``): sources scraped from web pages keep them, and they would reach
    the tokenizers, the models and the reports as literal text. Decoding is idempotent
    on text without entities. Counts are logged."""
    import html
    import logging

    out = dict(tables)
    for name, cols in TEXT_COLUMNS.items():
        df = out[name].copy()
        for c in cols:
            if c in df.columns:
                s = df[c]
                has = s.notna() & s.astype(str).str.contains("&", regex=False)
                if has.any():
                    dec = s[has].astype(str).map(html.unescape)
                    changed = int((dec != s[has].astype(str)).sum())
                    df.loc[has, c] = dec
                    if changed:
                        logging.getLogger("relgrade.ingest").info("%s.%s: HTML entities decoded in %d row(s)",
                                                                  name, c, changed)
        out[name] = df
    return out


def build_tables(cfg: RelgradeConfig) -> dict[str, pd.DataFrame]:
    """catalog, queries (with split and segment) and judgments, conformed. With your own
    search log (``engagement.source: log``) the queries it names by text join the
    queries table and the segments follow its traffic. Segments a queries file gives
    are kept."""
    raw = decode_entities(load_dataset(cfg.dataset))
    queries = raw["queries"].copy()
    if cfg.engagement.source == "log":
        from relgrade.adapters.common import split_of
        from relgrade.adapters.contract import read_frame
        from relgrade.eventlog import log_queries

        path = cfg.resolve(cfg.engagement.log_path)
        extra = log_queries(path, cfg.dataset.encoding)
        extra = extra[~extra["query_id"].isin(set(queries["query_id"].astype(str)))]
        if len(extra):
            queries = pd.concat([queries, extra.assign(split=extra["text"].map(split_of))], ignore_index=True)
        log = read_frame(path, cfg.dataset.encoding)
        from relgrade.adapters.common import query_id_of

        qid = log["query_id"].astype(str) if "query_id" in log.columns else log["query"].astype(str).map(query_id_of)
        searches = pd.DataFrame({"q": qid, "s": log["search_id"]}).drop_duplicates().groupby("q").size()
        derived = traffic_segments(queries, searches, cfg)
    else:
        derived = query_segments(queries["query_id"], cfg.simulation)
    given = queries["segment"] if "segment" in queries.columns else pd.Series(pd.NA, index=queries.index)
    queries["segment"] = given.where(given.notna(), pd.Series(derived.values, index=queries.index)).astype(str).values
    out = {
        "catalog": conform(raw["catalog"], "catalog"),
        "queries": conform(queries, "queries"),
        "judgments": conform(raw["judgments"], "judgments"),
    }
    return out
