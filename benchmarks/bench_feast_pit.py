"""Point-in-time retrieval through Feast against a raw DuckDB ASOF join (lower bound).

Three (query, item) feature views with about ``--feature-rows`` rows each (several
timestamps per pair), entity frames of 100k and 1M rows whose times fall before, between
and after the feature rows. Both paths return one row per entity row with the latest
feature values stamped at or before the entity time (and within the TTL); the benchmark
checks they agree, then reports rows/s and peak RSS of each path (median of --repeats
runs, each in a fresh subprocess so peak RSS is per path), and the ratio Feast / DuckDB.

    .venv/bin/python benchmarks/bench_feast_pit.py            # writes benchmarks/results/feast_pit.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(root: Path, feature_rows: int, seed: int = 0) -> None:
    """Feature Parquet for the three views under <root>/features and entity frames."""
    from relgrade.config import load_config
    from relgrade import featurestore as fs
    from relgrade.io import write_parquet_atomic

    cfg = load_config("quick", overrides={"data_root": str(root)})
    rng = np.random.default_rng(seed)
    n_pairs = feature_rows // 4
    q = rng.integers(0, 20_000, n_pairs)
    i = rng.integers(0, 60_000, n_pairs)
    pairs = pd.DataFrame({"query_id": [f"q{x}" for x in q], "item_id": [f"i{x}" for x in i]}).drop_duplicates()
    t0 = pd.Timestamp("2026-07-01", tz="UTC")
    for view in fs.view_names():
        schema = fs.view_arrow_schema(view)
        reps = 4
        df = pairs.loc[pairs.index.repeat(reps)].reset_index(drop=True)
        days = rng.integers(0, 56, len(df))
        df["event_timestamp"] = (t0 + pd.to_timedelta(days, unit="D")).astype("datetime64[us, UTC]")
        df = df.drop_duplicates(["query_id", "item_id", "event_timestamp"]).reset_index(drop=True)
        for f in schema:
            if f.name in df.columns:
                continue
            if str(f.type) == "double":
                df[f.name] = rng.random(len(df))
            elif str(f.type) == "int64":
                df[f.name] = rng.integers(1, 5, len(df))
            else:
                df[f.name] = rng.choice(["a", "b", "c"], len(df))
        write_parquet_atomic(df[[f.name for f in schema]], cfg.paths.feature_source(view))
    fs.apply_definitions(cfg)
    for n in (100_000, 1_000_000):
        idx = rng.integers(0, len(pairs), n)
        ent = pairs.iloc[idx].reset_index(drop=True)
        ent["event_timestamp"] = (t0 + pd.to_timedelta(rng.integers(-5 * 86400, 70 * 86400, n), unit="s")).astype("datetime64[us, UTC]")
        write_parquet_atomic(ent, root / f"entities_{n}.parquet")


def duckdb_asof(root: Path, ent: pd.DataFrame, ttl_days: int) -> pd.DataFrame:
    import duckdb

    from relgrade import featurestore as fs
    from relgrade.config import load_config

    cfg = load_config("quick", overrides={"data_root": str(root)})
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    e = ent.reset_index(drop=True).copy()
    e["_row"] = np.arange(len(e))
    con.register("ent", e)
    sel, joins = ["ent.*"], []
    for k, view in enumerate(fs.view_names()):
        feats = [n for n in fs.view_columns(view) if n not in ("query_id", "item_id", "event_timestamp")]
        path = cfg.paths.feature_source(view)
        alias = f"v{k}"
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{path}') {alias} ON ent.query_id = {alias}.query_id "
            f"AND ent.item_id = {alias}.item_id AND ent.event_timestamp >= {alias}.event_timestamp"
        )
        for f in feats:
            sel.append(
                f"CASE WHEN {alias}.event_timestamp >= ent.event_timestamp - INTERVAL {ttl_days} DAY "
                f"THEN {alias}.{f} END AS {f}"
            )
    sql = f"SELECT {', '.join(sel)} FROM ent {' '.join(joins)} ORDER BY _row"
    return con.execute(sql).df().drop(columns="_row")


def run_one(root: Path, path: str, n: int) -> dict:
    """One measured run (called in a fresh subprocess)."""
    import resource

    from relgrade import featurestore as fs
    from relgrade.config import load_config

    cfg = load_config("quick", overrides={"data_root": str(root)})
    ent = pd.read_parquet(root / f"entities_{n}.parquet")
    t = time.perf_counter()
    if path == "feast":
        out = fs.historical_features(cfg, ent)
    else:
        out = duckdb_asof(root, ent, cfg.feast.ttl_days)
    dt = time.perf_counter() - t
    probe = out[["retrieval_prior", "grade", "clicks_28d"]].astype("float64").to_numpy()
    return {
        "seconds": dt,
        "rows_out": len(out),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": [float(np.nansum(probe[:, j])) for j in range(probe.shape[1])],
        "nulls": int(np.isnan(probe).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feature-rows", type=int, default=1_000_000, help="about this many rows per feature view")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "feast_pit.json"))
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if a._one:
        print(json.dumps(run_one(Path(a._one[0]), a._one[1], int(a._one[2]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-feast-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_data(root, a.feature_rows)
        print(f"data ready in {time.perf_counter() - t:.1f}s", flush=True)
        results = {}
        for n in [int(x) for x in a.sizes.split(",")]:
            runs = {"feast": [], "duckdb_asof": []}
            for r in range(a.repeats):
                for path in ("duckdb_asof", "feast"):  # alternate, so drift hits both
                    out = subprocess.run([sys.executable, __file__, "--_one", str(root), "feast" if path == "feast" else "duckdb", str(n)],
                                         capture_output=True, text=True, check=True)
                    runs[path].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"n={n} run {r + 1} {path}: {runs[path][-1]['seconds']:.2f}s", flush=True)
            agree = all(np.allclose(x["checksum"], y["checksum"]) and x["nulls"] == y["nulls"]
                        for x, y in zip(runs["feast"], runs["duckdb_asof"]))
            summary = {}
            for path, rs in runs.items():
                med = statistics.median(x["seconds"] for x in rs)
                summary[path] = {
                    "median_seconds": round(med, 3),
                    "rows_per_s": round(n / med),
                    "median_peak_rss_mb": round(statistics.median(x["peak_rss_mb"] for x in rs), 1),
                    "seconds": [round(x["seconds"], 3) for x in rs],
                    "rows_out": rs[0]["rows_out"],
                }
            summary["feast_over_duckdb_time"] = round(summary["feast"]["median_seconds"] / summary["duckdb_asof"]["median_seconds"], 2)
            summary["results_agree"] = bool(agree)
            results[str(n)] = summary
            print(json.dumps({n: summary}), flush=True)
    doc = {
        "benchmark": "feast point-in-time retrieval vs raw DuckDB ASOF join",
        "feature_rows_per_view": a.feature_rows,
        "views": 3,
        "repeats": a.repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "results": results,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
