"""A real search log in place of the simulator (``engagement.source: log``).

The file (CSV, CSV.gz or Parquet) holds one row per impression, in the ``events``
contract (``relgrade contract``): ``event_ts`` (UTC), ``search_id``, the query as
``query_id`` or ``query`` (text; its id follows relgrade's rule), ``item_id``,
``position`` (1-based), ``slot`` (organic | ad; default organic), ``impression``
(default 1), ``click``, ``add_to_cart``, ``order`` (0/1; missing columns are 0).

It is conformed here and then goes through the ``events`` suite like the simulated log;
that suite refuses, naming the count of offending rows: a click without an impression
(or a cart without a click, an order without a cart), a position below 1, an unknown
item or query (a query the log gives by text is added to the queries table at ingest),
an event at or after the cut (the mining snapshot), a duplicate
(search_id, position). Nothing is written before it passes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.contract import ContractError, conform

log = logging.getLogger("relgrade.engagement")

DEFAULTS = {"slot": "organic", "impression": 1, "click": 0, "add_to_cart": 0, "order": 0}


def read_log(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The log as an events table (contract types), queries given by text mapped to ids."""
    from relgrade.adapters.common import query_id_of
    from relgrade.adapters.contract import read_frame

    df = read_frame(Path(path), encoding)
    missing = [c for c in ("event_ts", "search_id", "item_id", "position") if c not in df.columns]
    if "query_id" not in df.columns and "query" not in df.columns:
        missing.append("query_id or query")
    if missing:
        raise ContractError(f"{path}: the search log lacks column(s) {missing}; got {list(df.columns)}")
    out = df.copy()
    if "query_id" not in out.columns or out["query_id"].isna().any():
        if "query" not in out.columns:
            raise ContractError(f"{path}: {int(out['query_id'].isna().sum())} row(s) have no query_id and there is no "
                                "`query` column to derive it from")
        empty = out["query"].isna() | (out["query"].astype(str).str.strip() == "")
        if empty.any():
            raise ContractError(f"{path}: {int(empty.sum())} log row(s) have an empty query")
        qid = out["query"].astype(str).map(query_id_of)
        out["query_id"] = out["query_id"].where(out["query_id"].notna(), qid) if "query_id" in out.columns else qid
    for c, v in DEFAULTS.items():
        if c not in out.columns:
            out[c] = v
        else:
            out[c] = out[c].fillna(v)
    for c in ("impression", "click", "add_to_cart", "order"):
        num = pd.to_numeric(out[c], errors="coerce")
        bad = num.isna() | ~num.isin([0, 1])
        if bad.any():
            raise ContractError(f"{path}: {int(bad.sum())} `{c}` value(s) are not 0 or 1, e.g. {out.loc[bad, c].iloc[0]!r}")
        out[c] = num.astype("int64")
    for c in ("position", "search_id"):
        num = pd.to_numeric(out[c], errors="coerce")
        if num.isna().any() or (num != num.round()).any():
            bad = num.isna() | (num != num.round())
            raise ContractError(f"{path}: {int(bad.sum())} `{c}` value(s) are not whole numbers, "
                                f"e.g. {out.loc[bad, c].iloc[0]!r}")
        out[c] = num.astype("int64")
    try:
        out["event_ts"] = pd.to_datetime(out["event_ts"], utc=True)
    except (ValueError, TypeError) as exc:
        raise ContractError(f"{path}: `event_ts` is not a timestamp everywhere ({exc})") from None
    return conform(out.reset_index(drop=True), "events")


def log_queries(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """query_id, text of every query the log names by text (for the queries table)."""
    from relgrade.adapters.common import query_id_of
    from relgrade.adapters.contract import read_frame

    df = read_frame(Path(path), encoding)
    if "query" not in df.columns:
        return pd.DataFrame({"query_id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object)})
    texts = df["query"].dropna().astype(str)
    texts = texts[texts.str.strip() != ""].drop_duplicates()
    return pd.DataFrame({"query_id": texts.map(query_id_of).to_numpy(), "text": texts.to_numpy()}).drop_duplicates(
        "query_id")


def export_log(events: pd.DataFrame, queries: pd.DataFrame, path: Path) -> Path:
    """Write an events table as a log file in this format (with query texts), e.g. the
    simulator's, so that it can be fed back with ``engagement.source: log``."""
    text = dict(zip(queries["query_id"].astype(str), queries["text"].astype(str)))
    out = events.copy()
    out.insert(2, "query", out["query_id"].astype(str).map(text))
    out["event_ts"] = pd.to_datetime(out["event_ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".parquet", ".pq")):
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False, compression="gzip" if path.name.endswith(".gz") else None)
    return path


__all__ = ["read_log", "log_queries", "export_log", "np"]
