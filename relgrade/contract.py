"""The canonical data contract between pipeline stages.

Every adapter produces these four tables; every later stage reads only these (plus
feature tables). ``conform`` checks structure (columns present, types castable,
timestamps UTC-microsecond) and returns a frame with exactly the contract's columns in
contract order. Content rules (nulls, ranges, uniqueness, referential integrity, future
timestamps) are the job of the expectation suites in ``validation/``, which gate every
write.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
SPLITS = ("train", "dev", "test")
SEGMENTS = ("head", "torso", "tail")
SLOTS = ("organic", "ad")
GRADES = (0, 1, 2, 3)


class ContractError(ValueError):
    """Input does not fit the data contract (structure, type or encoding)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


CATALOG = Table(
    "catalog",
    (
        Column("item_id", pa.string(), doc="stable product id (string)"),
        Column("title", pa.string(), doc="product title"),
        Column("description", pa.string(), True, "long text, when the source has it"),
        Column("brand", pa.string(), True),
        Column("category", pa.string(), True, "category path, ' > ' separated"),
        Column("attributes", pa.string(), True, "JSON object of extra attributes"),
    ),
    key=("item_id",),
    doc="One row per product.",
)

QUERIES = Table(
    "queries",
    (
        Column("query_id", pa.string(), doc="'q' + first 16 hex of sha1(normalized text) unless the source has ids"),
        Column("text", pa.string(), doc="query text as typed"),
        Column("split", pa.string(), doc="train | dev | test, from the split rule"),
        Column("segment", pa.string(), doc="head | torso | tail by simulated traffic share"),
    ),
    key=("query_id",),
    doc="One row per distinct query.",
)

JUDGMENTS = Table(
    "judgments",
    (
        Column("query_id", pa.string()),
        Column("item_id", pa.string()),
        Column("grade", pa.int8(), doc="0 irrelevant .. 3 exact"),
        Column("raw_label", pa.string(), doc="the source's label as written"),
        Column("raw_score", pa.float64(), True, "numeric source label (Home Depot mean rating 1..3)"),
        Column("source", pa.string(), doc="dataset name"),
        Column("judged_at", TS, doc="when the judgment became known (UTC)"),
    ),
    key=("query_id", "item_id"),
    doc="Human relevance judgments.",
)

EVENTS = Table(
    "events",
    (
        Column("event_ts", TS, doc="search time (UTC)"),
        Column("search_id", pa.int64()),
        Column("query_id", pa.string()),
        Column("item_id", pa.string()),
        Column("position", pa.int16(), doc="1-based position on the result page"),
        Column("slot", pa.string(), doc="organic | ad"),
        Column("impression", pa.int8()),
        Column("click", pa.int8()),
        Column("add_to_cart", pa.int8()),
        Column("order", pa.int8()),
    ),
    key=("search_id", "position"),
    doc="One row per impression of an item in a search result page.",
)

TABLES: dict[str, Table] = {t.name: t for t in (CATALOG, QUERIES, JUDGMENTS, EVENTS)}


def _coerce(series: pd.Series, col: Column, table: str) -> pd.Series:
    t = col.type
    try:
        if pa.types.is_timestamp(t):
            s = pd.to_datetime(series, utc=True, errors="raise")
            return s.astype("datetime64[us, UTC]")
        if pa.types.is_string(t):
            mask = series.isna()
            s = series.astype(str)
            if mask.any():
                s = s.astype(object)
                s[mask] = None
            return s.astype(object)
        if pa.types.is_integer(t):
            if series.isna().any():
                # nulls are a content problem: keep them visible to the expectation suite
                return pd.to_numeric(series, errors="raise").astype("Int64")
            num = pd.to_numeric(series, errors="raise")
            if (num != num.round()).any():
                raise ValueError("non-integer values")
            return num.astype(t.to_pandas_dtype())
        if pa.types.is_floating(t):
            return pd.to_numeric(series, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise ContractError(
            f"{table}.{col.name}: cannot convert to {t}: {exc}"
        ) from exc
    raise ContractError(f"{table}.{col.name}: unsupported contract type {t}")


def conform(df: pd.DataFrame, table: str | Table) -> pd.DataFrame:
    """Return ``df`` with exactly the contract's columns, cast to contract types.

    Raises :class:`ContractError` naming every missing column, and any column whose
    values cannot be cast. Extra columns are dropped. An empty frame is an error: an
    empty input file is never a valid batch.
    """
    spec = TABLES[table] if isinstance(table, str) else table
    if not isinstance(df, pd.DataFrame):
        raise ContractError(f"{spec.name}: expected a DataFrame, got {type(df).__name__}")
    missing = [c.name for c in spec.columns if c.name not in df.columns and not c.nullable]
    if missing:
        raise ContractError(
            f"{spec.name}: missing required column(s) {missing}; got {list(df.columns)}"
        )
    if len(df) == 0:
        raise ContractError(f"{spec.name}: empty batch (0 rows)")
    out = {}
    for col in spec.columns:
        if col.name in df.columns:
            out[col.name] = _coerce(df[col.name], col, spec.name).reset_index(drop=True)
        else:
            out[col.name] = pd.Series([None] * len(df), dtype=object)
    return pd.DataFrame(out)


def to_arrow(df: pd.DataFrame, table: str | Table) -> pa.Table:
    """Arrow table with the contract schema (nullability checked by the suites first)."""
    spec = TABLES[table] if isinstance(table, str) else table
    schema = pa.schema([pa.field(c.name, c.type, nullable=True) for c in spec.columns])
    return pa.Table.from_pandas(df[spec.names], schema=schema, preserve_index=False)


def describe_markdown() -> str:
    """The contract as Markdown (docs/contract.md is generated from this)."""
    lines = ["# Data contract", "", "Generated from `relgrade/contract.py`.", ""]
    for t in TABLES.values():
        lines += [f"## `{t.name}`", "", t.doc, "", f"Key: `{', '.join(t.key)}`", ""]
        lines += ["| column | type | nullable | meaning |", "|---|---|---|---|"]
        for c in t.columns:
            lines.append(f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {c.doc} |")
        lines.append("")
    return "\n".join(lines)
