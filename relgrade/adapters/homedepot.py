"""Home Depot Product Search Relevance (Kaggle 2016): id, product_uid, product_title,
search_term, relevance (mean of about three ratings on 1..3). Titles only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.adapters.common import query_id_of, queries_frame, read_table_text, require_columns
from relgrade.contract import ContractError

COLUMNS = ["id", "product_uid", "product_title", "search_term", "relevance"]


def grade_from_rating(r: pd.Series) -> pd.Series:
    """r < 1.5 -> 0; 1.5 <= r < 2.0 -> 1; 2.0 <= r < 2.5 -> 2; r >= 2.5 -> 3."""
    r = r.astype(float)
    # small epsilon so 1.4999.. style float noise (e.g. 4.5/3) lands as written
    g = np.select([r < 1.5 - 1e-9, r < 2.0 - 1e-9, r < 2.5 - 1e-9], [0, 1, 2], default=3)
    return pd.Series(g, index=r.index)


def load(path: Path, encoding: str = "latin-1", judged_at=None) -> dict[str, pd.DataFrame]:
    """The contract tables from the Kaggle file. Rules for what the file gets wrong:

    * a row ``id`` that appears twice with the same content is one row (a warning counts
      them); twice with different content is an error naming the ids;
    * a row with an empty search term has no query to judge: an error with the count;
    * a pair rated under two spellings of one query (``fence  mesh`` / ``fence mesh``)
      is one judgment, the mean of the ratings (a warning counts them)."""
    import logging

    warn = logging.getLogger("relgrade.ingest").warning
    df = read_table_text(path, encoding)
    require_columns(df, COLUMNS, path)
    df = _without_duplicate_rows(df, path, warn)
    rating = _checked_ratings(df, path)
    queries = queries_frame(df["search_term"])
    catalog = (
        df[["product_uid", "product_title"]]
        .rename(columns={"product_uid": "item_id", "product_title": "title"})
        .drop_duplicates("item_id")
        .reset_index(drop=True)
    )
    judgments = _judgments(df, rating, path, warn)
    judgments["source"] = "homedepot"
    judgments["judged_at"] = judged_at
    return {"catalog": catalog, "queries": queries, "judgments": judgments}


def _without_duplicate_rows(df: pd.DataFrame, path: Path, warn) -> pd.DataFrame:
    """Rows whose id repeats with the same content kept once; an id repeated with different content refused."""
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        same = df[dup].drop_duplicates(COLUMNS)
        conflicting = same["id"].duplicated(keep=False)
        if conflicting.any():
            ids = sorted(same.loc[conflicting, "id"].unique())
            raise ContractError(f"{path}: {len(ids)} row id(s) appear more than once with different content "
                                f"(e.g. id {ids[0]}): a row id must identify one judgment; fix or remove them")
        warn("%s: %d exact duplicate row(s) (same id, same content) kept once", path,
             int(df.duplicated(COLUMNS).sum()))
        df = df.drop_duplicates(COLUMNS).reset_index(drop=True)
    return df


def _checked_ratings(df: pd.DataFrame, path: Path) -> pd.Series:
    """The numeric ratings; an empty search term, a non-numeric rating or one off the 1..3 scale refused."""
    empty = df["search_term"].isna() | (df["search_term"].astype(str).str.strip() == "")
    if empty.any():
        first = int(empty.to_numpy().argmax())
        raise ContractError(f"{path}: {int(empty.sum())} row(s) have an empty search_term (first: data row "
                            f"{first + 1}, id {df['id'].iloc[first]}): a judgment needs its query; remove them")
    rating = pd.to_numeric(df["relevance"], errors="coerce")
    bad = rating.isna() & df["relevance"].notna()
    if bad.any():
        raise ContractError(f"{path}: {int(bad.sum())} non-numeric relevance value(s), e.g. {df.loc[bad, 'relevance'].iloc[0]!r}")
    off_scale = rating.notna() & ~rating.between(1.0, 3.0)
    if off_scale.any():
        first = int(off_scale.to_numpy().argmax())
        raise ContractError(
            f"{path}: {int(off_scale.sum())} relevance value(s) outside the 1..3 rating scale, "
            f"e.g. {df['relevance'].iloc[first]!r} on data row {first + 1}"
        )
    return rating


def _judgments(df: pd.DataFrame, rating: pd.Series, path: Path, warn) -> pd.DataFrame:
    """One judgment per (query, item): the mean rating, its grade, the raw labels joined by "|"."""
    pairs = pd.DataFrame(
        {
            # by the normalized text, like queries_frame: "fence  mesh" is "fence mesh"
            "query_id": df["search_term"].astype(str).map(query_id_of),
            "item_id": df["product_uid"],
            "raw_label": df["relevance"],
            "raw_score": rating,
        }
    )
    # A few pairs were rated under two spellings of the same query: one judgment per
    # pair, the mean of the ratings (each already a mean of about three raters).
    merged = int(pairs.duplicated(["query_id", "item_id"]).sum())
    if merged:
        warn("%s: %d judgment(s) rate a pair already rated under another spelling of the same query: "
             "each such pair is one judgment, the mean of its ratings", path, merged)
    judgments = (
        pairs.groupby(["query_id", "item_id"], sort=False, dropna=False)
        .agg(raw_score=("raw_score", "mean"), raw_label=("raw_label", lambda s: "|".join(map(str, s))))
        .reset_index()
    )
    judgments["grade"] = grade_from_rating(judgments["raw_score"]).where(judgments["raw_score"].notna())
    return judgments
