"""Parquet I/O with the contract's conventions: UTC microsecond timestamps, atomic writes."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def normalize_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    """Cast every datetime column to ``datetime64[us, UTC]`` (DuckDB rejects ns stamps)."""
    out = df
    for col in df.columns:
        dtype = df[col].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            s = df[col]
            if getattr(dtype, "tz", None) is None:
                s = s.dt.tz_localize("UTC")
            if out is df:
                out = df.copy()
            out[col] = s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return out


def write_parquet_atomic(data: pd.DataFrame | pa.Table, path: Path) -> Path:
    """Write to a temp file beside ``path`` then rename: readers never see half a file."""
    return write_tables_atomic({Path(path): data})[0]


def write_tables_atomic(tables: dict[Path, pd.DataFrame | pa.Table]) -> list[Path]:
    """Write several files as one unit: every file goes to a temp name first; only when
    all are written are they renamed into place. A failure leaves the old files as-is."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in tables.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(
                normalize_timestamps(data), preserve_index=False
            )
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            staged.append((tmp, path))
            pq.write_table(table, tmp, compression="zstd")
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return [p for _, p in staged]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first")
    return pq.read_table(path, columns=columns).to_pandas()


def frame_digest(df: pd.DataFrame) -> str:
    """Order-independent content hash of a frame (sha256 over sorted row hashes)."""
    row_hashes = pd.util.hash_pandas_object(df, index=False).to_numpy()
    row_hashes.sort()
    h = hashlib.sha256(row_hashes.tobytes())
    h.update(",".join(map(str, df.columns)).encode())
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    """Content hash of every file under ``folder`` (relative names and bytes)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(file_digest(p).encode())
    return h.hexdigest()
