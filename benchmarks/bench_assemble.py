"""Benchmark: point-in-time assembly of >= 1M training rows through Feast
get_historical_features (the training feature service, 3 views) against a raw DuckDB
ASOF join of the same Parquet tables, in the same run, on the same machine.

Synthetic but shaped like the real stage: N entity rows (queries x items per query) all
stamped at the cut; retrieval_prior_fv one row per pair at the snapshot; relevance_grade_fv
one row per pair at the snapshot plus a re-write after the cut for 10% of pairs (must not
be joined); gated_engagement_fv several daily rows for 60% of pairs. Timing: one
subprocess runs the methods round-robin (1 warm-up round, then R rounds, the order rotated
each round, so load from anything else on the machine hits every method alike); medians.
Memory: each method once more in a fresh subprocess, peak RSS (and minus the RSS with the
inputs loaded). The DuckDB result is compared value for value with Feast's.

Methods: ``duckdb_asof`` (the lower bound), ``feast`` (relgrade.featurestore.historical_features
with the training service), ``assemble`` (the stage's assemble_rows: the Feast join plus
the leakage cross-check, refined levels and targets).

    .venv/bin/python benchmarks/bench_assemble.py [--rows 1000000] [--reps 3]

Writes benchmarks/results/assemble.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VIEWS = ("retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv")
SNAP = pd.Timestamp("2026-08-26", tz="UTC")


def _cfg(root: str):
    from relgrade.config import load_config

    return load_config("quick", overrides={"data_root": root})


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build(root: str, rows: int, per_query: int = 100, seed: int = 0) -> dict:
    from relgrade.featurestore import apply_definitions, definitions, view_arrow_schema
    from relgrade.io import write_parquet_atomic
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cfg = _cfg(root)
    nq = rows // per_query
    q = np.repeat(np.array([f"q{i:06d}" for i in range(nq)], dtype=object), per_query)
    it = np.array([f"i{j:07d}" for j in rng.integers(0, 10 * per_query * 50, size=nq * per_query)], dtype=object)
    ent = pd.DataFrame({"query_id": q, "item_id": it}).drop_duplicates(["query_id", "item_id"]).reset_index(drop=True)
    n = len(ent)
    ts = lambda t, k: pd.Series(np.full(k, t), dtype="datetime64[us, UTC]")  # noqa: E731
    d = definitions()

    def fill(view: str, base: pd.DataFrame) -> pd.DataFrame:
        k = len(base)
        for name, ftype in d.VIEW_SCHEMAS[view]:
            if name in base:
                continue
            t = str(ftype)
            if t == "Int64":
                base[name] = pd.array(rng.integers(0, 50, size=k), dtype="Int64")
            elif t == "Float64":
                base[name] = rng.random(k)
            else:
                base[name] = np.array(["LD-", "L--", "-D-"], dtype=object)[rng.integers(0, 3, size=k)]
        return base

    prior = fill("retrieval_prior_fv", ent.assign(event_timestamp=ts(SNAP, n).to_numpy(),
                                                   difficulty_level=pd.array(rng.integers(1, 6, size=n), dtype="Int64")))
    g = rng.integers(0, 4, size=n)
    grade = fill("relevance_grade_fv", ent.assign(event_timestamp=ts(SNAP, n).to_numpy(), grade=pd.array(g, dtype="Int64"),
                                                  teacher_version="bench-v0"))
    late_idx = rng.choice(n, size=n // 10, replace=False)
    late = grade.iloc[late_idx].copy()
    late["event_timestamp"] = ts(SNAP + pd.Timedelta(days=2), len(late)).to_numpy()
    late["grade"] = pd.array(3 - g[late_idx], dtype="Int64")
    late["teacher_version"] = "bench-late"
    grade = pd.concat([grade, late], ignore_index=True)
    shown = ent.iloc[rng.choice(n, size=int(0.6 * n), replace=False)]
    parts = []
    for days in (20, 7, 0):
        p = shown.sample(frac=0.6 if days else 0.8, random_state=days).copy()
        p["event_timestamp"] = ts(SNAP - pd.Timedelta(days=days), len(p)).to_numpy()
        parts.append(p)
    eng = fill("gated_engagement_fv", pd.concat(parts, ignore_index=True))
    for view, df in (("retrieval_prior_fv", prior), ("relevance_grade_fv", grade), ("gated_engagement_fv", eng)):
        df = df.sort_values(["event_timestamp", "query_id", "item_id"]).reset_index(drop=True)
        cols = [f.name for f in view_arrow_schema(view)]
        write_parquet_atomic(pa.Table.from_pandas(df[cols], schema=view_arrow_schema(view), preserve_index=False),
                             cfg.paths.feature_source(view))
    apply_definitions(cfg)
    ent["event_timestamp"] = ts(SNAP + pd.Timedelta(hours=1), n).to_numpy()
    ent.to_parquet(Path(root) / "entities.parquet", index=False)
    return {"entity_rows": n, "feature_rows": {"retrieval_prior_fv": len(prior), "relevance_grade_fv": len(grade),
                                               "gated_engagement_fv": len(eng)}}


def duckdb_asof(cfg, ent: pd.DataFrame) -> pd.DataFrame:
    """Raw DuckDB ASOF LEFT JOIN of the entity rows with each view (latest row <= the
    entity timestamp, within the view TTL), the lower bound Feast is compared with."""
    import duckdb

    from relgrade.featurestore import definitions

    d = definitions()
    ttl = cfg.feast.ttl_days
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count() or 1}")
    e = ent.assign(_row=np.arange(len(ent)))
    con.register("ent", e)
    sel, joins = ["e.*"], []
    for i, v in enumerate(VIEWS):
        names = [n for n, _ in d.VIEW_SCHEMAS[v]]
        src = str(cfg.paths.feature_source(v)).replace("'", "''")
        sel += [f"CASE WHEN v{i}.event_timestamp >= e.event_timestamp - INTERVAL {ttl} DAY THEN v{i}.{n} END AS {n}" for n in names]
        joins.append(f"ASOF LEFT JOIN read_parquet('{src}') v{i} ON e.query_id = v{i}.query_id AND e.item_id = v{i}.item_id "
                     f"AND e.event_timestamp >= v{i}.event_timestamp")
    sql = f"SELECT {', '.join(sel)} FROM ent e " + " ".join(joins) + " ORDER BY e._row"
    out = con.execute(sql).df()
    con.close()
    return out.drop(columns="_row")


def _methods(root: str, head: int | None = None) -> dict:
    cfg = _cfg(root)
    from relgrade.featurestore import definitions, historical_features

    ent = pd.read_parquet(Path(root) / "entities.parquet")
    ent["event_timestamp"] = pd.to_datetime(ent["event_timestamp"], utc=True)
    if head:
        ent = ent.head(head)
    from relgrade.assemble.build import assemble_rows

    ent_s = ent.assign(split="train")
    queries = pd.DataFrame({"query_id": ent["query_id"].unique()})
    queries["text"], queries["segment"], queries["split"] = "q", "tail", "train"
    catalog = pd.DataFrame({"item_id": ent["item_id"].unique()})
    catalog["title"] = "t"
    return {
        "feast": lambda: historical_features(cfg, ent, definitions().TRAINING_SERVICE),
        "duckdb_asof": lambda: duckdb_asof(cfg, ent),
        "assemble": lambda: assemble_rows(cfg, ent_s, queries, catalog, check_leakage=True)[0],
    }


def child_timing(methods: list[str], root: str, reps: int) -> dict:
    """Round-robin in one process (rotating the order each round) so that load from
    anything else on the machine hits every method alike; one warm-up each first."""
    fns = _methods(root)
    times = {m: [] for m in methods}
    rows = {}
    for r in range(reps + 1):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for m in order:
            t0 = time.perf_counter()
            out = fns[m]()
            dt = time.perf_counter() - t0
            rows[m] = len(out)
            if r > 0:
                times[m].append(dt)
            print(f"  {m} round {r}{' (warm-up)' if r == 0 else ''}: {dt:.2f}s, {len(out) / dt:,.0f} rows/s",
                  file=sys.stderr, flush=True)
            if r == 0 and m in ("feast", "duckdb_asof"):
                cols = ["grade", "retrieval_prior", "ctr_raw_28d", "teacher_version", "impressions_28d"]
                out[cols].to_parquet(Path(root) / f"check_{m}.parquet")
            del out
    return {m: {"rows": rows[m], "times_s": [round(t, 3) for t in times[m]], "median_s": round(float(np.median(times[m])), 3),
                "rows_per_s": round(rows[m] / float(np.median(times[m])))} for m in methods}


def child_rss(method: str, root: str) -> dict:
    """Peak RSS of one run of ``method`` in a fresh process (minus the RSS before it)."""
    _methods(root, head=2000)[method]()  # imports and lazy initialisation first
    fns = _methods(root)
    base = _rss_mb()
    fns[method]()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(base, 1), "peak_rss_delta_mb": round(peak - base, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", default=None)
    ap.add_argument("--root", default=None)
    ap.add_argument("--methods", default="duckdb_asof,feast,assemble")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "assemble.json"))
    a = ap.parse_args()
    if a.child:
        res = child_timing(a.methods.split(","), a.root, a.reps) if a.child == "timing" else child_rss(a.child, a.root)
        print(json.dumps(res))
        return
    root = a.root or tempfile.mkdtemp(prefix="bench_assemble_")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    t0 = time.perf_counter()
    data = build(root, a.rows)
    print(f"built {data} in {time.perf_counter() - t0:.1f}s under {root}", file=sys.stderr, flush=True)
    methods = a.methods.split(",")

    def run_child(*args) -> dict:
        p = subprocess.run([sys.executable, __file__, "--root", root, "--reps", str(a.reps), "--methods", a.methods, *args],
                           capture_output=True, text=True, cwd=REPO)
        sys.stderr.write("\n".join(l for l in p.stderr.splitlines() if " round " in l) + "\n")
        if p.returncode != 0:
            raise SystemExit(f"{args} failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    results = run_child("--child", "timing")
    for m in methods:
        results[m].update(run_child("--child", m))
        print(f"  {m}: peak RSS {results[m]['peak_rss_mb']} MB (+{results[m]['peak_rss_delta_mb']} MB over the loaded inputs)",
              file=sys.stderr, flush=True)
    parity = None
    if "feast" in results and "duckdb_asof" in results:
        f = pd.read_parquet(Path(root) / "check_feast.parquet")
        dd = pd.read_parquet(Path(root) / "check_duckdb_asof.parquet")
        parity = {}
        for c in f.columns:
            x, y = f[c], dd[c]
            if pd.api.types.is_numeric_dtype(x):
                same = np.isclose(pd.to_numeric(x).astype(float), pd.to_numeric(y).astype(float), equal_nan=True)
            else:
                same = (x.fillna("<NA>").astype(str) == y.fillna("<NA>").astype(str)).to_numpy()
            parity[c] = int((~same).sum())
        parity["late_grade_rows_joined"] = int((f["teacher_version"] == "bench-late").sum())
    base = results.get("duckdb_asof", {}).get("median_s")
    doc = {
        "benchmark": "assemble: point-in-time join of the training service (3 views)",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "data": data, "reps": a.reps, "results": results,
        "ratios_vs_duckdb_asof": {m: round(r["median_s"] / base, 3) for m, r in results.items()} if base else None,
        "rss_ratio_vs_duckdb_asof": {m: round(r["peak_rss_mb"] / results["duckdb_asof"]["peak_rss_mb"], 3)
                                     for m, r in results.items()} if base else None,
        "mismatching_values_feast_vs_duckdb": parity,
        "goal": "feast median within 1.5x of the duckdb ASOF median",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: doc[k] for k in ("ratios_vs_duckdb_asof", "rss_ratio_vs_duckdb_asof", "mismatching_values_feast_vs_duckdb")}, indent=1))


if __name__ == "__main__":
    main()
