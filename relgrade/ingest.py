"""Ingest stage: adapter -> data contract. Pure logic; the ingest flow validates and
writes what this returns."""
from __future__ import annotations

import pandas as pd

from relgrade.adapters import load_dataset
from relgrade.config import RelgradeConfig
from relgrade.contract import conform
from relgrade.simulate import query_segments

CONTRACT_TABLES = ("catalog", "queries", "judgments")


def build_tables(cfg: RelgradeConfig) -> dict[str, pd.DataFrame]:
    """catalog, queries (with split and segment) and judgments, conformed."""
    raw = load_dataset(cfg.dataset)
    queries = raw["queries"].copy()
    queries["segment"] = query_segments(queries["query_id"], cfg.simulation).values
    out = {
        "catalog": conform(raw["catalog"], "catalog"),
        "queries": conform(queries, "queries"),
        "judgments": conform(raw["judgments"], "judgments"),
    }
    return out
