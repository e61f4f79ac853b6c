"""Amazon Shopping Queries Dataset (ESCI, KDD Cup 2022; Apache-2.0).

Inputs
------
* examples: parquet with ``example_id, query, query_id, product_id, product_locale,
  esci_label, small_version, large_version, split`` (one row per judged query-product
  pair).
* products: either JSON lines or parquet.

  - JSON lines, one object a line, in either of two shapes:
    flat records ``{"product_id"|"id", "product_title"|"title",
    "product_description"|"description", "product_brand"|"brand",
    "product_bullet_point"|"bullets", "product_color"|"color",
    "product_locale"|"locale"}``, or Vespa put-documents
    ``{"put": "id:<ns>:<type>::<id>", "fields": {"id", "title", "description", ...}}``
    (the id falls back to the part of ``put`` after ``::``).
  - parquet (``*.parquet``): the official ``shopping_queries_dataset_products`` table
    (same ``product_*`` column names as the flat records).

Grades
------
ESCI labels each pair with one letter; relgrade's graded scale is

====== ============ =====
label  meaning      grade
====== ============ =====
``E``  Exact        3
``S``  Substitute   2
``C``  Complement   1
``I``  Irrelevant   0
====== ============ =====

so the binary "relevant" cut at grade >= 2 means Exact or Substitute. ``raw_label`` keeps
the letter, ``raw_score`` is null (ESCI has no numeric label), ``source`` is ``esci``.

Rules
-----
* ``locale`` (default ``"us"``) keeps only examples with that ``product_locale`` (and
  products with that locale when the products file carries one). ``None`` keeps all
  locales; a product id judged in two locales then collides and is rejected.
* ids: ``query_id = "esci:" + <source query_id>``, ``item_id = "esci:" + <product_id>``,
  so ids never collide with other sources.
* split: always relgrade's split rule on the query text (``split_of``), never the
  source's own ``split`` column, so splits compare across sources.
* catalog: the judged products only (the products file is shared by every locale).
  A judged product missing from the products file is a :class:`ContractError` naming the
  count and a few ids (referential integrity). ``description``/``brand``/... values that
  are empty or the literal string ``"None"`` (written by Vespa feed converters for nulls)
  become null. ``attributes`` is a JSON object of bullets, color and locale.
* bytes: a line that is not valid ``encoding`` or not valid JSON is a ContractError
  naming the line number.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from relgrade.adapters.common import categorical_judgments, decode_strict, queries_frame, read_bytes, require_columns
from relgrade.contract import ContractError

SOURCE = "esci"
PREFIX = "esci:"
GRADE = {"E": 3, "S": 2, "C": 1, "I": 0}
EXAMPLE_COLUMNS = ["query", "query_id", "product_id", "esci_label"]

# contract-ish name -> accepted source keys (flat record / Vespa fields / official parquet)
_PRODUCT_KEYS = {
    "id": ("product_id", "id"),
    "title": ("product_title", "title"),
    "description": ("product_description", "description"),
    "brand": ("product_brand", "brand"),
    "bullets": ("product_bullet_point", "bullets", "bullet_point"),
    "color": ("product_color", "color"),
    "locale": ("product_locale", "locale"),
}
_OPTIONAL_TEXT = ("description", "brand", "bullets", "color", "locale")
_NULL_STRINGS = {"", "None", "none", "null", "nan", "NaN"}


def _pick(rec: dict, name: str):
    for k in _PRODUCT_KEYS[name]:
        if k in rec and rec[k] is not None:
            return rec[k]
    return None


def _clean_optional(v):
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN
        return None
    s = str(v)
    return None if s.strip() in _NULL_STRINGS else s


def read_examples(path: Path) -> pd.DataFrame:
    data = read_bytes(path)
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for non-parquet bytes
        raise ContractError(f"{path}: cannot read as parquet: {exc}") from exc
    if df.empty:
        raise ContractError(f"{path}: no data rows")
    return df


def _record_from_json(obj, line: int, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise ContractError(f"{path}: line {line}: expected a JSON object, got {type(obj).__name__}")
    if "fields" in obj:  # Vespa put/update document
        fields = obj["fields"]
        if not isinstance(fields, dict):
            raise ContractError(f"{path}: line {line}: 'fields' is not a JSON object")
        rec = dict(fields)
        if _pick(rec, "id") is None:
            doc_id = obj.get("put") or obj.get("update") or obj.get("id")
            if isinstance(doc_id, str) and "::" in doc_id:
                rec["id"] = doc_id.split("::", 1)[1]
        return rec
    return obj


def read_products(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Products as a frame with columns id, title, description, brand, bullets, color,
    locale (raw source ids, no prefix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        data = read_bytes(path)
        try:
            raw = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:
            raise ContractError(f"{path}: cannot read as parquet: {exc}") from exc
        if raw.empty:
            raise ContractError(f"{path}: no data rows")
        if not any(k in raw.columns for k in _PRODUCT_KEYS["id"]):
            raise ContractError(f"{path}: missing column 'product_id'; found {list(raw.columns)}")
        out = {}
        for name, keys in _PRODUCT_KEYS.items():
            col = next((k for k in keys if k in raw.columns), None)
            out[name] = raw[col] if col is not None else pd.Series([None] * len(raw), index=raw.index)
        df = pd.DataFrame(out).reset_index(drop=True)
        lines = pd.Series(range(1, len(df) + 1))
    else:
        text = decode_strict(read_bytes(path), encoding, path)
        rows, lines_l = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ContractError(f"{path}: line {n} is not valid JSON: {exc.msg} (column {exc.colno})") from exc
            rec = _record_from_json(obj, n, path)
            if _pick(rec, "id") is None:
                raise ContractError(f"{path}: line {n}: product has no id (expected one of product_id, id)")
            rows.append({name: _pick(rec, name) for name in _PRODUCT_KEYS})
            lines_l.append(n)
        if not rows:
            raise ContractError(f"{path}: empty file")
        df = pd.DataFrame(rows, columns=list(_PRODUCT_KEYS))
        lines = pd.Series(lines_l)
    df["id"] = df["id"].astype(str).str.strip()
    df["title"] = df["title"].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    for c in _OPTIONAL_TEXT:
        df[c] = df[c].map(_clean_optional)
    df["_line"] = lines.values
    return df


def _attributes(row) -> str | None:
    attrs = {k: row[k] for k in ("bullets", "color", "locale") if row[k] is not None}
    return json.dumps(attrs, ensure_ascii=False, sort_keys=True) if attrs else None


def load(
    examples_path: Path,
    products_path: Path,
    encoding: str = "utf-8",
    judged_at=None,
    locale: str | None = "us",
) -> dict[str, pd.DataFrame]:
    """The contract tables from an examples file and a products file (the rules: this module's docstring)."""
    examples_path, products_path = Path(examples_path), Path(products_path)
    ex = _locale_examples(examples_path, locale)

    labels = ex["esci_label"].astype(str).str.strip()
    unknown = sorted(set(labels) - set(GRADE))
    if unknown:
        raise ContractError(f"{examples_path}: unknown esci_label value(s) {unknown[:5]}; expected one of {sorted(GRADE)}")

    src_qid = ex["query_id"].astype(str).str.strip()
    texts = ex["query"].astype(str)
    n_texts = texts.groupby(src_qid).nunique()
    if (n_texts > 1).any():
        bad = n_texts[n_texts > 1].index[:5].tolist()
        raise ContractError(f"{examples_path}: query_id(s) {bad} carry more than one query text")
    qids = PREFIX + src_qid
    queries = queries_frame(texts, qids)

    pids = ex["product_id"].astype(str).str.strip()
    products = _judged_products(products_path, encoding, locale, pids)
    catalog = pd.DataFrame(
        {
            "item_id": PREFIX + products["id"],
            "title": products["title"],
            "description": products["description"],
            "brand": products["brand"],
            "category": None,
            "attributes": [_attributes(r) for r in products.to_dict("records")],
        }
    )
    judgments = categorical_judgments(qids, PREFIX + pids, labels, GRADE, SOURCE, judged_at)
    return {"catalog": catalog, "queries": queries, "judgments": judgments}


def _locale_examples(examples_path: Path, locale: str | None) -> pd.DataFrame:
    """The examples of ``locale`` (all with None), the needed columns present and never null."""
    ex = read_examples(examples_path)
    require_columns(ex, EXAMPLE_COLUMNS + (["product_locale"] if locale is not None else []), examples_path)
    for c in EXAMPLE_COLUMNS:
        if ex[c].isna().any():
            raise ContractError(f"{examples_path}: {int(ex[c].isna().sum())} null value(s) in column {c!r}")
    if locale is not None:
        found = sorted(ex["product_locale"].dropna().astype(str).unique())
        ex = ex[ex["product_locale"].astype(str) == locale]
        if ex.empty:
            raise ContractError(f"{examples_path}: no examples for locale {locale!r}; locales present: {found}")
    return ex.reset_index(drop=True)


def _judged_products(products_path: Path, encoding: str, locale: str | None, pids: pd.Series) -> pd.DataFrame:
    """One record per judged product of the locale; conflicting records or a judged product missing refused."""
    products = read_products(products_path, encoding)
    if locale is not None:
        products = products[products["locale"].isna() | (products["locale"] == locale)]
    products = products[products["id"].isin(set(pids))]
    content = ["id", "title", "description", "brand", "bullets", "color", "locale"]
    products = products.drop_duplicates(content)
    dup = products["id"].duplicated(keep=False)
    if dup.any():
        ids = products.loc[dup, "id"].unique()[:5].tolist()
        raise ContractError(
            f"{products_path}: product id(s) {ids} have conflicting records "
            f"(lines {products.loc[dup, '_line'].head(6).tolist()}); pass a single locale"
        )
    missing = sorted(set(pids) - set(products["id"]))
    if missing:
        raise ContractError(
            f"{products_path}: {len(missing)} judged product(s) missing from the products file, "
            f"e.g. {missing[:5]}"
        )
    return products.reset_index(drop=True)
