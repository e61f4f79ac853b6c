"""Rules every adapter shares, fixed so results compare across runs and tools."""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import pandas as pd

from relgrade.contract import ContractError

_WS = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """Lowercase, collapse whitespace runs to one space, strip."""
    return _WS.sub(" ", str(text).lower()).strip()


def split_bucket(text: str) -> int:
    return int(hashlib.sha1(normalize_query(text).encode("utf-8")).hexdigest(), 16) % 10


def split_of(text: str) -> str:
    """bucket 0 -> test, 1 -> dev, 2..9 -> train."""
    b = split_bucket(text)
    return "test" if b == 0 else "dev" if b == 1 else "train"


def query_id_of(text: str) -> str:
    return "q" + hashlib.sha1(normalize_query(text).encode("utf-8")).hexdigest()[:16]


def read_bytes(path: Path) -> bytes:
    """File bytes; a .zip holding exactly one member is read transparently. A file that
    is not a zip, or a truncated or corrupt one, is bad input (a ContractError naming
    the file), never an I/O error to retry."""
    import zlib

    path = Path(path)
    if not path.exists():
        raise ContractError(f"input file not found: {path}")
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise ContractError(f"{path}: expected one file in the zip, found {members}")
                data = zf.read(members[0])
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ContractError(f"{path}: not a readable zip archive ({type(exc).__name__}: {exc}); "
                                "give the CSV itself or a zip holding it") from None
    else:
        data = path.read_bytes()
    if not data.strip():
        raise ContractError(f"{path}: empty file")
    return data


def decode_strict(data: bytes, encoding: str, source: Path) -> str:
    """Decode, naming the first offending line (1-based) when the bytes do not fit.

    A single-byte encoding (latin-1, cp1252) decodes any bytes, so a UTF-8 file read with
    it turns "è" into "Ã¨" without an error. Non-ASCII bytes that form valid UTF-8
    throughout are, in practice, UTF-8: such a file is decoded as UTF-8 with a warning."""
    import logging

    if encoding.lower().replace("_", "-") in ("latin-1", "latin1", "iso-8859-1", "cp1252", "windows-1252"):
        if not data.isascii():
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                n = sum(1 for ch in text if ord(ch) > 127)
                logging.getLogger("relgrade.ingest").warning(
                    "%s: dataset.encoding is %s, but the file is valid UTF-8 with %d non-ASCII characters: "
                    "decoded as UTF-8 (set dataset.encoding: utf-8 to silence this)", source, encoding, n)
                return text
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ContractError(
            f"{source}: line {line} is not valid {encoding} (byte {data[exc.start:exc.start + 1]!r} "
            f"at offset {exc.start}); fix the file or set dataset.encoding"
        ) from exc


def read_table_text(path: Path, encoding: str, sep: str = ",", **kw) -> pd.DataFrame:
    text = decode_strict(read_bytes(path), encoding, Path(path))
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""], **kw)
    except pd.errors.EmptyDataError as exc:
        raise ContractError(f"{path}: empty file") from exc
    except pd.errors.ParserError as exc:
        raise ContractError(f"{path}: cannot parse as {sep!r}-separated text: {exc}") from exc
    if df.empty:
        raise ContractError(f"{path}: no data rows")
    return df


def require_columns(df: pd.DataFrame, cols: list[str], source: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ContractError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")


def queries_frame(texts: pd.Series, ids: pd.Series | None = None) -> pd.DataFrame:
    """queries table (segment left for the ingest stage) from query texts."""
    q = pd.DataFrame({"text": texts.astype(str)})
    q["query_id"] = ids.astype(str).values if ids is not None else q["text"].map(query_id_of)
    q = q.drop_duplicates("query_id").reset_index(drop=True)
    q["split"] = q["text"].map(split_of)
    return q[["query_id", "text", "split"]]


def categorical_judgments(query_ids, item_ids, labels: pd.Series, grade_of: dict, source: str, judged_at) -> pd.DataFrame:
    """judgments table for sources whose labels are categories (ESCI's E/S/C/I, WANDS's
    Exact/Partial/Irrelevant): grade from ``grade_of``, no numeric raw score."""
    return pd.DataFrame(
        {
            "query_id": query_ids,
            "item_id": item_ids,
            "grade": labels.map(grade_of).astype("int64"),
            "raw_label": labels,
            "raw_score": pd.Series([float("nan")] * len(labels), dtype="float64", index=labels.index),
            "source": source,
            "judged_at": judged_at,
        }
    )
