"""Point-in-time retrieval through Feast against a raw DuckDB ASOF join (lower bound),
and Feast's Spark offline store against its DuckDB store (``--spark``).

Every feature view (the (query, item) views and the query-keyed attributes view) with
about ``--feature-rows`` rows each (several timestamps per key), entity frames whose
times fall before, between and after the feature rows. Every path returns one row per
entity row with the latest feature values stamped at or before the entity time (and
within the TTL); the benchmark checks they agree, then reports rows/s and peak RSS of
each path (median of --repeats runs, each in a fresh subprocess so peak RSS is per path;
for Spark that is the Python driver's, the JVM's is reported beside it), and the ratios.

    .venv/bin/python benchmarks/bench_feast_pit.py            # writes benchmarks/results/feast_pit.json
    .venv/bin/python benchmarks/bench_feast_pit.py --spark --sizes 100000 --out benchmarks/results/feast_pit_spark.json
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


def spark_cfg(root: Path):
    from relgrade.config import load_config

    return load_config("quick", overrides={"data_root": str(root), "feast": {"offline_store": "spark"}})


def make_data(root: Path, feature_rows: int, sizes: list[int], spark: bool = False, seed: int = 0) -> None:
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
        keys = list(fs.view_keys(view))
        reps = 4
        base = pairs[keys].drop_duplicates().reset_index(drop=True)
        df = base.loc[base.index.repeat(reps)].reset_index(drop=True)
        days = rng.integers(0, 56, len(df))
        df["event_timestamp"] = (t0 + pd.to_timedelta(days, unit="D")).astype("datetime64[us, UTC]")
        df = df.drop_duplicates([*keys, "event_timestamp"]).reset_index(drop=True)
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
    if spark:  # a second data root over the same Parquet files, registered with Spark sources
        sroot = root / "spark"
        sroot.mkdir(exist_ok=True)
        (sroot / "features").symlink_to(cfg.paths.features, target_is_directory=True)
        fs.apply_definitions(spark_cfg(sroot))
    for n in sizes:
        idx = rng.integers(0, len(pairs), n)
        ent = pairs.iloc[idx].reset_index(drop=True)
        ent["event_timestamp"] = (t0 + pd.to_timedelta(rng.integers(-5 * 86400, 70 * 86400, n), unit="s")).astype("datetime64[us, UTC]")
        write_parquet_atomic(ent, root / f"entities_{n}.parquet")


def duckdb_asof(root: Path, ent: pd.DataFrame) -> pd.DataFrame:
    """The raw ASOF join: per view, the latest row at or before the entity time, its values
    kept only within the view's TTL (``feast.view_ttl_days``, else ``feast.ttl_days``)."""
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
        ttl_days = cfg.feast.view_ttl_days.get(view, cfg.feast.ttl_days)
        on = " AND ".join(f"ent.{key} = {alias}.{key}" for key in fs.view_keys(view))
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{path}') {alias} ON {on} "
            f"AND ent.event_timestamp >= {alias}.event_timestamp"
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
    jvm_mb = None
    t = time.perf_counter()
    if path == "feast":
        out = fs.historical_features(cfg, ent)
    elif path == "feast_spark":
        out = fs.historical_features(spark_cfg(root / "spark"), ent)
        from pyspark.sql import SparkSession

        jvm = SparkSession.getActiveSession().sparkContext._jvm.java.lang.Runtime.getRuntime()
        jvm_mb = round((jvm.totalMemory() - jvm.freeMemory()) / 2**20, 1)
    else:
        out = duckdb_asof(root, ent)
    dt = time.perf_counter() - t
    probe = out[["retrieval_prior", "grade", "clicks_28d", "n_attributes"]].astype("float64").to_numpy()
    return {
        "jvm_used_mb": jvm_mb,
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
    ap.add_argument("--spark", action="store_true", help="also Feast's Spark offline store (local[2])")
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
        sizes = [int(x) for x in a.sizes.split(",")]
        make_data(root, a.feature_rows, sizes, a.spark)
        print(f"data ready in {time.perf_counter() - t:.1f}s", flush=True)
        results = {}
        paths = ("duckdb_asof", "feast", *(("feast_spark",) if a.spark else ()))
        for n in sizes:
            runs = {p: [] for p in paths}
            for r in range(a.repeats):
                for path in paths:  # alternate, so drift hits every path
                    out = subprocess.run([sys.executable, __file__, "--_one", str(root), "duckdb" if path == "duckdb_asof" else path, str(n)],
                                         capture_output=True, text=True, check=True)
                    runs[path].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"n={n} run {r + 1} {path}: {runs[path][-1]['seconds']:.2f}s", flush=True)
            def agree(p, q):
                return all(np.allclose(x["checksum"], y["checksum"]) and x["nulls"] == y["nulls"]
                           for x, y in zip(runs[p], runs[q]))
            summary = {}
            for path, rs in runs.items():
                med = statistics.median(x["seconds"] for x in rs)
                summary[path] = {
                    "median_seconds": round(med, 3),
                    "rows_per_s": round(n / med),
                    "median_peak_rss_mb": round(statistics.median(x["peak_rss_mb"] for x in rs), 1),
                    "seconds": [round(x["seconds"], 3) for x in rs],
                    "rows_out": rs[0]["rows_out"],
                    **({"median_jvm_used_mb": round(statistics.median(x["jvm_used_mb"] for x in rs), 1)}
                       if rs[0].get("jvm_used_mb") is not None else {}),
                }
            summary["feast_over_duckdb_time"] = round(summary["feast"]["median_seconds"] / summary["duckdb_asof"]["median_seconds"], 2)
            if a.spark:
                summary["spark_over_duckdb_store_time"] = round(
                    summary["feast_spark"]["median_seconds"] / summary["feast"]["median_seconds"], 2)
            summary["results_agree"] = {f"{p}_vs_duckdb_asof": bool(agree(p, "duckdb_asof")) for p in paths[1:]}
            results[str(n)] = summary
            print(json.dumps({n: summary}), flush=True)
    doc = {
        "benchmark": "feast point-in-time retrieval vs raw DuckDB ASOF join",
        "feature_rows_per_view": a.feature_rows,
        "views": len(__import__("relgrade.featurestore", fromlist=["x"]).view_names()),
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
