"""A user's production retriever output: a Parquet file of ``query_id`` (or ``query``
text), ``item_id``, ``rank``, ``score``, validated on read."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.contract import ContractError
from relgrade.mining.channels.base import RESULT_COLUMNS, Channel, ProgressFn, catalog_frame, query_frame

log = logging.getLogger("relgrade.mining")


class ExternalChannel(Channel):
    """A user's own retriever output: Parquet with ``query_id`` (or ``query`` text,
    mapped with the contract's query-id rule), ``item_id``, ``rank`` (1-based int) and
    ``score`` (numeric; may be null). Bad input raises :class:`ContractError`."""

    name, letter = "external", "E"

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.table: pd.DataFrame | None = None

    @staticmethod
    def validate(df: pd.DataFrame, source: str = "external") -> pd.DataFrame:
        from relgrade.adapters.common import query_id_of

        cols = set(df.columns)
        if "query_id" not in cols and "query" in cols:
            df = df.assign(query_id=df["query"].astype(str).map(query_id_of))
            cols.add("query_id")
        missing = [c for c in ("query_id", "item_id", "rank", "score") if c not in cols]
        if missing:
            raise ContractError(f"{source}: missing column(s) {missing}; got {sorted(df.columns)} "
                                "(need query_id or query, item_id, rank, score)")
        if len(df) == 0:
            raise ContractError(f"{source}: no rows")
        for c in ("query_id", "item_id", "rank"):
            if df[c].isna().any():
                raise ContractError(f"{source}: {int(df[c].isna().sum())} null value(s) in {c!r}")
        try:
            rank = pd.to_numeric(df["rank"], errors="raise")
            score = pd.to_numeric(df["score"], errors="raise").astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"{source}: rank/score must be numeric: {exc}") from exc
        if (rank != np.floor(rank)).any() or (rank < 1).any():
            raise ContractError(f"{source}: rank must be an integer >= 1")
        bad = np.isinf(score.to_numpy())
        if bad.any():
            raise ContractError(f"{source}: {int(bad.sum())} infinite score(s): give finite scores (or null)")
        out = pd.DataFrame({"query_id": df["query_id"].astype(str).to_numpy(dtype=object),
                            "item_id": df["item_id"].astype(str).to_numpy(dtype=object),
                            "rank": rank.astype(np.int64).to_numpy(), "score": score.to_numpy()})
        dup = out.duplicated(["query_id", "item_id"])
        if dup.any():
            r = out[dup].iloc[0]
            raise ContractError(f"{source}: {int(dup.sum())} duplicated (query_id, item_id) pair(s), "
                                f"e.g. ({r.query_id!r}, {r.item_id!r})")
        return out

    def fit(self, catalog: pd.DataFrame) -> "ExternalChannel":
        if not self.path.exists():
            raise ContractError(f"external retriever output not found: {self.path}")
        try:
            raw = pd.read_parquet(self.path)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise ContractError(f"{self.path}: not a readable Parquet file: {exc}") from exc
        df = self.validate(raw, str(self.path))
        known = df["item_id"].isin(set(catalog_frame(catalog)["item_id"]))
        if not known.any():
            raise ContractError(f"{self.path}: none of its {len(df)} row(s) names an item of the catalog "
                                f"(e.g. {df['item_id'].iloc[0]!r}): an empty channel is not a channel")
        if not known.all():
            log.warning("external channel %s: %d of %d row(s) name items not in the catalog: dropped", self.path,
                        int((~known).sum()), len(df))
        self.table = df[known].reset_index(drop=True)
        self.stats.update(path=str(self.path), rows=len(df), rows_unknown_item=int((~known).sum()),
                          queries=int(self.table["query_id"].nunique()))
        return self

    def search(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        if self.table is None:
            raise RuntimeError("ExternalChannel.search before fit")
        q = query_frame(queries)
        known = self.table["query_id"].isin(set(q["query_id"]))
        if not known.any():
            raise ContractError(f"{self.path}: none of its queries is in the queries table "
                                f"(e.g. {self.table['query_id'].iloc[0]!r}): an empty channel is not a channel")
        if not known.all():
            log.warning("external channel %s: %d row(s) of %d unknown quer(ies) dropped", self.path,
                        int((~known).sum()), self.table.loc[~known, "query_id"].nunique())
        self.stats.update(rows_unknown_query=int((~known).sum()))
        t = self.table[known]
        t = t.assign(_neg=-t["score"].fillna(-np.inf)).sort_values(["query_id", "rank", "_neg", "item_id"], kind="stable")
        t = t.assign(rank=t.groupby("query_id").cumcount() + 1)
        out = t[t["rank"] <= k][RESULT_COLUMNS].reset_index(drop=True)
        out["rank"] = out["rank"].astype(np.int64)
        if progress:
            progress(len(q), len(q))
        return out
