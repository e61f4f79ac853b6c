"""Your own data, in relgrade's own column names (``relgrade contract`` prints them), as
Parquet or CSV (``.csv``, ``.csv.gz``, ``.tsv``, ``.parquet``). docs/own_data.md.

=================== ========================================================================
file                columns
=================== ========================================================================
``catalog_path``    ``item_id, title`` and, optionally, ``description, brand, category,
                    attributes`` (a JSON object)
``judgments_path``  ``item_id``; the query as ``query`` (text) or ``query_id`` (with a
                    queries file); the judgment as ``grade`` (0..3) or ``label`` (your
                    scale, mapped by ``label_map`` or ``label_cuts``); optionally
                    ``judged_at`` (UTC) - else ``dataset.judged_at``
``queries_path``    optional: ``query_id, text`` and, optionally, ``split``
                    (train | dev | test); without it queries come from the judgments'
                    texts and the log's
=================== ========================================================================

Grades from a label:

* ``label_map`` (categorical labels): ``{"Exact": 3, "Partial": 1, "Irrelevant": 0}``;
  an unmapped label is an error naming it;
* ``label_cuts`` (numeric labels on any scale): increasing cut points; the grade is the
  number of cuts at or below the label, so ``[1.5, 2.0, 2.5]`` on a 1..3 mean rating is
  Home Depot's rule (< 1.5 -> 0, < 2.0 -> 1, < 2.5 -> 2, else 3) and ``[1, 2, 3]`` on a
  0..4 scale maps 0 -> 0, 1 -> 1, 2 -> 2, 3 and 4 -> 3. ``raw_score`` keeps the number, so
  the grading report also measures RMSE on your scale. ``label_range: [low, high]``
  declares the scale: a numeric label outside it is refused, naming its line.

Rules: ids are strings; a query's id is ``q`` + the first 16 hex of the sha1 of its
normalized text unless the queries file gives one; splits follow relgrade's split rule
(sha1 of the normalized text mod 10: 0 test, 1 dev, else train) unless the queries file
has a ``split`` column; a judgment whose item is not in the catalog, or whose query id is
not in the queries file, is an error with the count; the same (query, item) judged twice
is an error unless both rows carry the same grade (then it is one judgment, counted in a
warning).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.adapters.common import decode_strict, query_id_of, read_bytes, require_columns, split_of
from relgrade.contract import ContractError

log = logging.getLogger("relgrade.ingest")


def read_frame(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A contract file as strings (CSV/TSV, gzipped or not) or its own types (Parquet)."""
    import io

    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise ContractError(f"input file not found: {path}")
    if name.endswith((".parquet", ".pq")):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ContractError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".zip")):
        data = read_bytes(path) if name.endswith(".zip") else path.read_bytes()
        if name.endswith(".gz"):
            import gzip

            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise ContractError(f"{path}: not a readable gzip file ({exc})") from None
        if not data.strip():
            raise ContractError(f"{path}: empty file")
        text = decode_strict(data, encoding, path)
        sep = "\t" if ".tsv" in name else ","
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.ParserError as exc:
            raise ContractError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    else:
        raise ContractError(f"{path}: expected .csv, .csv.gz, .tsv or .parquet")
    if len(df) == 0:
        raise ContractError(f"{path}: no data rows")
    return df


def row_place(path: Path, index) -> str:
    """Where data row ``index`` (0-based, as read) sits in its file: its line in a text
    file (the header is line 1), its row in a Parquet file."""
    name = Path(path).name.lower()
    return f"row {int(index) + 1}" if name.endswith((".parquet", ".pq")) else f"line {int(index) + 2}"


def check_label_range(labels: pd.Series, label_range: list[float] | None, path: Path) -> None:
    """Refuse a numeric label outside the declared scale ``dataset.label_range``, naming
    the first one's line."""
    if not label_range:
        return
    lo, hi = float(label_range[0]), float(label_range[1])
    num = pd.to_numeric(labels, errors="coerce")
    out = num.notna() & ~num.between(lo, hi)
    if out.any():
        first = out[out].index[0]
        raise ContractError(f"{path}: {int(out.sum())} label(s) outside dataset.label_range [{lo:g}, {hi:g}], "
                            f"first on {row_place(path, first)}: {labels.loc[first]!r}; fix the label, or declare "
                            "your scale in dataset.label_range")


def grades_from_labels(labels: pd.Series, label_map: dict | None, label_cuts: list[float] | None,
                       path: Path, label_range: list[float] | None = None) -> tuple[pd.Series, pd.Series]:
    """(grade, raw_score) per row from the source's label; numeric labels (``label_cuts``)
    outside ``label_range`` are refused."""
    if label_map:
        lab = labels.astype(str).str.strip()
        grade = lab.map({str(k): int(v) for k, v in label_map.items()})
        bad = grade.isna()
        if bad.any():
            raise ContractError(f"{path}: {int(bad.sum())} label(s) missing from dataset.label_map, e.g. "
                                f"{sorted(lab[bad].unique())[:5]}; known: {sorted(map(str, label_map))}")
        num = pd.to_numeric(labels, errors="coerce")
        return grade.astype("int64"), num.astype("float64") if num.notna().all() else pd.Series(np.nan, index=labels.index)
    if label_cuts:
        num = pd.to_numeric(labels, errors="coerce")
        bad = num.isna()
        if bad.any():
            raise ContractError(f"{path}: {int(bad.sum())} label(s) are not numbers (dataset.label_cuts maps "
                                f"numeric labels), e.g. {labels[bad].iloc[0]!r} on {row_place(path, bad[bad].index[0])}")
        check_label_range(labels, label_range, path)
        cuts = np.asarray(label_cuts, dtype=float)
        grade = np.searchsorted(cuts, num.to_numpy(dtype=float) + 1e-12, side="right")
        return pd.Series(np.clip(grade, 0, 3), index=labels.index, dtype="int64"), num.astype("float64")
    raise ContractError(f"{path}: judgments carry `label` but the config maps none: set dataset.label_map "
                        "(categorical labels) or dataset.label_cuts (numeric ones), or give a `grade` column (0..3)")


SEGMENTS = ("head", "torso", "tail")


def load(catalog_path: Path, judgments_path: Path, queries_path: Path | None = None, encoding: str = "utf-8",
         judged_at=None, label_map: dict | None = None, label_cuts: list[float] | None = None,
         label_range: list[float] | None = None) -> dict[str, pd.DataFrame]:
    """The contract tables from your own files (the rules: this module's docstring)."""
    cat = read_frame(catalog_path, encoding)
    require_columns(cat, ["item_id", "title"], catalog_path)
    cat["item_id"] = cat["item_id"].astype(str)
    dup = cat["item_id"].duplicated()
    if dup.any():
        raise ContractError(f"{catalog_path}: {int(dup.sum())} duplicated item_id(s), e.g. {cat.loc[dup, 'item_id'].iloc[0]!r}")
    j = read_frame(judgments_path, encoding)
    require_columns(j, ["item_id"], judgments_path)
    if "grade" not in j.columns and "label" not in j.columns:
        raise ContractError(f"{judgments_path}: needs a `grade` (0..3) or a `label` column; got {list(j.columns)}")
    if queries_path is not None:
        q = _queries_from_file(queries_path, encoding, j, judgments_path)
    else:
        q = _queries_from_judgments(j, judgments_path)
    grade, raw_label, raw_score = _grades(j, label_map, label_cuts, label_range, judgments_path)
    j = pd.DataFrame({"query_id": j["query_id"].astype(str), "item_id": j["item_id"].astype(str), "grade": grade,
                      "raw_label": raw_label, "raw_score": raw_score, "source": "contract",
                      "judged_at": pd.to_datetime(j["judged_at"], utc=True) if "judged_at" in j.columns else judged_at})
    j = _checked_pairs(j, cat, judgments_path, catalog_path)
    return {"catalog": cat, "queries": q[[c for c in ("query_id", "text", "split", "segment") if c in q.columns]],
            "judgments": j}


def _queries_from_file(queries_path: Path, encoding: str, j: pd.DataFrame, judgments_path: Path) -> pd.DataFrame:
    """The queries file, checked; sets the judgments' query_id (given, or from the query text) and refuses unknown ones."""
    q = read_frame(queries_path, encoding)
    require_columns(q, ["query_id", "text"], queries_path)
    q["query_id"], q["text"] = q["query_id"].astype(str), q["text"].astype(str)
    empty = q["text"].str.strip() == ""
    if empty.any():
        raise ContractError(f"{queries_path}: {int(empty.sum())} query row(s) have an empty text")
    if "split" not in q.columns:
        q["split"] = q["text"].map(split_of)
    if "segment" in q.columns:  # your own traffic segments: kept; empty ones are derived
        bad = q["segment"].notna() & ~q["segment"].isin(SEGMENTS)
        if bad.any():
            raise ContractError(f"{queries_path}: {int(bad.sum())} segment(s) not one of {SEGMENTS}, "
                                f"e.g. {q.loc[bad, 'segment'].iloc[0]!r}")
    if "query_id" in j.columns and j["query_id"].notna().all():
        j["query_id"] = j["query_id"].astype(str)
    else:
        require_columns(j, ["query"], judgments_path)
        j["query_id"] = j["query"].astype(str).map(query_id_of)
    unknown = ~j["query_id"].isin(set(q["query_id"]))
    if unknown.any():
        raise ContractError(f"{judgments_path}: {int(unknown.sum())} judgment(s) name a query_id missing from "
                            f"{queries_path}, e.g. {j.loc[unknown, 'query_id'].iloc[0]!r}")
    return q


def _queries_from_judgments(j: pd.DataFrame, judgments_path: Path) -> pd.DataFrame:
    """Queries from the judgments' texts (ids and splits by relgrade's rules); sets the judgments' query_id."""
    require_columns(j, ["query"], judgments_path)
    empty = j["query"].isna() | (j["query"].astype(str).str.strip() == "")
    if empty.any():
        raise ContractError(f"{judgments_path}: {int(empty.sum())} judgment(s) have an empty query")
    j["query_id"] = j["query"].astype(str).map(query_id_of)
    q = (pd.DataFrame({"query_id": j["query_id"], "text": j["query"].astype(str)})
         .drop_duplicates("query_id").reset_index(drop=True))
    q["split"] = q["text"].map(split_of)
    return q


def _grades(j: pd.DataFrame, label_map: dict | None, label_cuts: list[float] | None, label_range: list[float] | None,
            judgments_path: Path) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(grade, raw_label, raw_score): from a complete `grade` column, else from `label` by the map or the cuts."""
    if "grade" in j.columns and j["grade"].notna().all():
        g = pd.to_numeric(j["grade"], errors="coerce")
        bad = g.isna() | ~g.isin([0, 1, 2, 3])
        if bad.any():
            raise ContractError(f"{judgments_path}: {int(bad.sum())} grade(s) outside 0..3, e.g. {j.loc[bad, 'grade'].iloc[0]!r}"
                                "; give your own scale as `label` with dataset.label_map or dataset.label_cuts")
        grade = g.astype("int64")
        if "label" in j.columns:
            check_label_range(j["label"], label_range, judgments_path)
        raw_label = j["label"].astype(str) if "label" in j.columns else j["grade"].astype(str)
        raw_score = pd.to_numeric(j["label"], errors="coerce").astype("float64") if "label" in j.columns \
            else pd.Series(np.nan, index=j.index)
    else:
        grade, raw_score = grades_from_labels(j["label"], label_map, label_cuts, judgments_path, label_range)
        raw_label = j["label"].astype(str)
    return grade, raw_label, raw_score


def _checked_pairs(j: pd.DataFrame, cat: pd.DataFrame, judgments_path: Path, catalog_path: Path) -> pd.DataFrame:
    """Refuses items missing from the catalog and pairs judged twice with different grades; same-grade repeats kept once."""
    missing = ~j["item_id"].isin(set(cat["item_id"]))
    if missing.any():
        raise ContractError(f"{judgments_path}: {int(missing.sum())} judgment(s) name an item_id missing from "
                            f"{catalog_path}, e.g. {j.loc[missing, 'item_id'].iloc[0]!r}")
    dup = j.duplicated(["query_id", "item_id"], keep=False)
    if dup.any():
        conflict = j[dup].groupby(["query_id", "item_id"])["grade"].nunique() > 1
        if conflict.any():
            k = conflict[conflict].index[0]
            raise ContractError(f"{judgments_path}: {int(conflict.sum())} (query, item) pair(s) judged twice with "
                                f"different grades, e.g. {k}: keep one judgment per pair")
        log.warning("%s: %d duplicate judgment row(s) with the same grade kept once", judgments_path,
                    int(j.duplicated(["query_id", "item_id"]).sum()))
        j = j.drop_duplicates(["query_id", "item_id"]).reset_index(drop=True)
    return j
