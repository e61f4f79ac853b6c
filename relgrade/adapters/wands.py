"""Wayfair ANnotation DataSet (WANDS, ECIR 2022; MIT).

Three tab-separated files (WANDS's ``dataset/`` folder):

* ``query.csv``: ``query_id, query, query_class``
* ``product.csv``: ``product_id, product_name, product_class, category hierarchy,
  product_description, product_features, rating_count, average_rating, review_count``
  (the README spells the fourth column ``category_hierarchy``; the released file's header
  says ``category hierarchy`` with a space; both are accepted)
* ``label.csv``: ``id, query_id, product_id, label`` with label in
  {Exact, Partial, Irrelevant}

Grades
------
WANDS has three levels; relgrade's scale has four (0..3):

============== =====
label          grade
============== =====
``Exact``      3
``Partial``    1
``Irrelevant`` 0
============== =====

``Partial`` means "somewhat relevant" (the product matches part of the query, e.g. the
right type but a wrong attribute). It maps to 1, not 2, so that the binary "relevant" cut
used everywhere (grade >= 2) means Exact only, and the graded metrics still rank a
Partial above an Irrelevant. ``raw_label`` keeps the word, ``raw_score`` is null,
``source`` is ``wands``.

Rules
-----
* ids: ``"wands:" + <source id>`` for queries and items (WANDS ids are small integers
  that would collide with other sources).
* queries: the judged queries only (every query referenced by ``label.csv``), split by
  relgrade's split rule on the query text.
* catalog: the judged products only. ``category`` is the category hierarchy with
  ``" / "`` turned into ``" > "``; ``attributes`` is a JSON object
  ``{"product_class", "rating_count", "average_rating", "review_count", "features"}``
  where ``features`` parses WANDS's ``key:value|key:value`` string (keys and values
  stripped, parts without a key dropped, the first value of a repeated key kept).
* a label naming a query or product absent from the other files, a duplicated query or
  product id, or an unknown label word is a :class:`ContractError`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from relgrade.adapters.common import categorical_judgments, queries_frame, read_table_text, require_columns
from relgrade.contract import ContractError

SOURCE = "wands"
PREFIX = "wands:"
GRADE = {"Exact": 3, "Partial": 1, "Irrelevant": 0}
QUERY_COLUMNS = ["query_id", "query"]
PRODUCT_COLUMNS = ["product_id", "product_name"]
LABEL_COLUMNS = ["query_id", "product_id", "label"]
_RATINGS = ("rating_count", "average_rating", "review_count")


def parse_features(s) -> dict[str, str]:
    """``"a:1|b : x y| : orphan"`` -> ``{"a": "1", "b": "x y"}``."""
    out: dict[str, str] = {}
    if s is None or (isinstance(s, float) and s != s):
        return out
    for part in str(s).split("|"):
        if ":" not in part:
            continue
        k, v = part.split(":", 1)
        k, v = k.strip(), v.strip()
        if k:
            out.setdefault(k, v)
    return out


def category_path(s) -> str | None:
    if s is None or (isinstance(s, float) and s != s) or not str(s).strip():
        return None
    return str(s).strip().replace(" / ", " > ")


def _number(v):
    if v is None or (isinstance(v, float) and v != v):
        return None
    f = float(v)
    return int(f) if f.is_integer() else f


def _unique_ids(df: pd.DataFrame, col: str, path: Path) -> None:
    dup = df[col].duplicated()
    if dup.any():
        raise ContractError(f"{path}: {int(dup.sum())} duplicated {col}(s), e.g. {df.loc[dup, col].iloc[0]!r}")


def _missing(ids: pd.Series, known: set, what: str, path: Path) -> None:
    missing = sorted(set(ids) - known, key=lambda x: (len(x), x))
    if missing:
        raise ContractError(f"{path}: {len(missing)} labelled {what} id(s) not found in the {what} file, e.g. {missing[:5]}")


def load(
    query_path: Path,
    products_path: Path,
    labels_path: Path,
    encoding: str = "utf-8",
    judged_at=None,
) -> dict[str, pd.DataFrame]:
    """The contract tables from WANDS's three files (the rules: this module's docstring)."""
    query_path, products_path, labels_path = Path(query_path), Path(products_path), Path(labels_path)
    q, p, lab = _read_files(query_path, products_path, labels_path, encoding)
    labels = lab["label"].str.strip()
    _unique_ids(q, "query_id", query_path)
    _unique_ids(p, "product_id", products_path)

    unknown = sorted(set(labels) - set(GRADE))
    if unknown:
        raise ContractError(f"{labels_path}: unknown label value(s) {unknown[:5]}; expected one of {sorted(GRADE)}")
    _missing(lab["query_id"], set(q["query_id"]), "query", labels_path)
    _missing(lab["product_id"], set(p["product_id"]), "product", labels_path)

    judged_q = q[q["query_id"].isin(set(lab["query_id"]))].reset_index(drop=True)
    queries = queries_frame(judged_q["query"], PREFIX + judged_q["query_id"])
    catalog = _catalog(p[p["product_id"].isin(set(lab["product_id"]))].reset_index(drop=True), products_path)
    judgments = categorical_judgments(PREFIX + lab["query_id"], PREFIX + lab["product_id"], labels, GRADE, SOURCE, judged_at)
    return {"catalog": catalog, "queries": queries, "judgments": judgments}


def _read_files(query_path: Path, products_path: Path, labels_path: Path, encoding: str):
    """The query, product and label tables, their needed columns present and non-empty, ids stripped."""
    q = read_table_text(query_path, encoding, sep="\t")
    require_columns(q, QUERY_COLUMNS, query_path)
    p = read_table_text(products_path, encoding, sep="\t")
    if "category_hierarchy" not in p.columns and "category hierarchy" in p.columns:
        p = p.rename(columns={"category hierarchy": "category_hierarchy"})
    require_columns(p, PRODUCT_COLUMNS, products_path)
    lab = read_table_text(labels_path, encoding, sep="\t")
    require_columns(lab, LABEL_COLUMNS, labels_path)

    for df, cols, path in ((q, QUERY_COLUMNS, query_path), (p, ["product_id"], products_path), (lab, LABEL_COLUMNS, labels_path)):
        for c in cols:
            if df[c].isna().any():
                raise ContractError(f"{path}: {int(df[c].isna().sum())} empty value(s) in column {c!r}")
    q["query_id"] = q["query_id"].str.strip()
    p["product_id"] = p["product_id"].str.strip()
    lab["query_id"] = lab["query_id"].str.strip()
    lab["product_id"] = lab["product_id"].str.strip()
    return q, p, lab


def _catalog(prod: pd.DataFrame, products_path: Path) -> pd.DataFrame:
    """The judged products as catalog rows: category path and the attributes JSON (class, ratings, features)."""
    for c in ("product_class", "category_hierarchy", "product_description", "product_features", *_RATINGS):
        if c not in prod.columns:
            prod[c] = None
    ratings = {}
    for c in _RATINGS:
        num = pd.to_numeric(prod[c], errors="coerce")
        bad = num.isna() & prod[c].notna()
        if bad.any():
            raise ContractError(f"{products_path}: {int(bad.sum())} non-numeric {c} value(s), e.g. {prod.loc[bad, c].iloc[0]!r}")
        ratings[c] = num
    attributes = []
    for i, row in enumerate(prod.itertuples(index=False)):
        attrs = {
            "product_class": None if pd.isna(row.product_class) else row.product_class,
            **{c: _number(ratings[c].iloc[i]) for c in _RATINGS},
            "features": parse_features(row.product_features),
        }
        attributes.append(json.dumps(attrs, ensure_ascii=False, sort_keys=True))
    return pd.DataFrame(
        {
            "item_id": PREFIX + prod["product_id"],
            "title": prod["product_name"],
            "description": prod["product_description"],
            "brand": None,
            "category": prod["category_hierarchy"].map(category_path),
            "attributes": attributes,
        }
    )
