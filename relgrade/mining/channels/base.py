"""What every retrieval channel shares: the result frame (query_id, item_id, rank,
score), the catalog and query frames it reads, and the :class:`Channel` interface."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import pandas as pd

from relgrade.contract import ContractError

log = logging.getLogger("relgrade.mining")

RESULT_COLUMNS = ["query_id", "item_id", "rank", "score"]
ProgressFn = Callable[[int, int], None]  # (queries done, queries total)



def empty_results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query_id": pd.Series([], dtype=object),
            "item_id": pd.Series([], dtype=object),
            "rank": pd.Series([], dtype=np.int64),
            "score": pd.Series([], dtype=np.float64),
        }
    )


def item_texts(catalog: pd.DataFrame) -> pd.Series:
    """The text a channel indexes per item: the title, with the brand in front when the
    source has one that the title does not already contain."""
    title = catalog["title"].fillna("").astype(str)
    if "brand" not in catalog.columns:
        return title.reset_index(drop=True)
    brand = catalog["brand"].fillna("").astype(str)
    add = (brand != "").to_numpy() & np.array([b.lower() not in t.lower() for b, t in zip(brand, title)], dtype=bool)
    return pd.Series(np.where(add, brand + " " + title, title)).reset_index(drop=True)


def catalog_frame(catalog: pd.DataFrame) -> pd.DataFrame:
    if "item_id" not in catalog.columns or "title" not in catalog.columns:
        raise ContractError(f"catalog needs item_id and title; got {list(catalog.columns)}")
    cat = catalog.drop_duplicates("item_id").reset_index(drop=True).copy()
    cat["item_id"] = cat["item_id"].astype(str)
    return cat


def query_frame(queries: pd.DataFrame) -> pd.DataFrame:
    if "query_id" not in queries.columns or "text" not in queries.columns:
        raise ContractError(f"queries need query_id and text; got {list(queries.columns)}")
    q = queries[["query_id", "text"]].drop_duplicates("query_id").reset_index(drop=True).copy()
    q["query_id"] = q["query_id"].astype(str)
    q["text"] = q["text"].fillna("").astype(str)
    return q


def result_frame(qids: list[np.ndarray], iids: list[np.ndarray], ranks: list[np.ndarray], scores: list[np.ndarray]) -> pd.DataFrame:
    if not qids:
        return empty_results()
    return pd.DataFrame(
        {
            "query_id": np.concatenate(qids).astype(object),
            "item_id": np.concatenate(iids).astype(object),
            "rank": np.concatenate(ranks).astype(np.int64),
            "score": np.concatenate(scores).astype(np.float64),
        }
    )


class Channel(ABC):
    """One retriever. ``fit`` once per catalog, then ``search`` any query frame."""

    name: str = "channel"
    letter: str = "?"

    def __init__(self) -> None:
        self.stats: dict[str, object] = {}

    @abstractmethod
    def fit(self, catalog: pd.DataFrame) -> "Channel":
        """Prepare the channel for this catalog (item_id, title, ...); returns self."""

    @abstractmethod
    def search(self, queries: pd.DataFrame, k: int, progress: ProgressFn | None = None) -> pd.DataFrame:
        """Top-``k`` items per query: ``query_id, item_id, rank`` (1-based, no gaps),
        ``score`` (higher is better). A query with no hit has no rows."""
