"""Scale: mining, grading and point-in-time-join throughput and peak memory per worker,
for the local engine against Ray with 1 and 2 workers and the DuckDB offline store
against Spark, at 1x and 10x.

The 10x world is derived from the bundled one, deterministically: every catalog item
and query gets ``factor - 1`` variants (the text plus one token drawn, with a fixed seed,
from the catalog's own vocabulary). What is measured at each scale:

* **mining**: the lexical channel (BM25 fit on the whole synthetic catalog, then search)
  and the dense channel (FAISS index build on the whole catalog's embeddings, then
  search) for a fixed sample of ``--mining-queries`` queries, so the figure is the cost
  per query against a catalog 1x or 10x the bundled one (a union costs queries x that).
  Variant embeddings are the base item's plus seeded noise (a text encoder's cost does
  not depend on the catalog: it is measured on its own, texts/s, on ``--encode-texts``
  variant titles);
* **grading**: the default profile's saved cascade (a ``bash scripts/run.sh`` data
  root) on ``--grade-pairs`` union pairs (1x) and ten times as many (10x), in the
  stage's own chunks;
* **PIT join**: ``benchmarks/bench_feast_pit.py --spark`` at 1x and 10x its feature and
  entity rows (Feast's DuckDB store against its Spark store, local[2]).

Local runs the stage's code in this process with the stage's threads (2 here); Ray N
runs N workers of one CPU and one torch thread each on a local Ray (``ray.init(num_cpus=
N)``). Every path runs in its own subprocess, so a path's peak RSS is its own; Ray
workers report theirs with their results. The machine (2 cores) bounds what Ray 2 can
gain here: the ratios show the engines' overhead and per-worker scaling, not a cluster.

    .venv/bin/python benchmarks/bench_scale.py     # writes benchmarks/results/scale.json
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PATHS = {"local": None, "ray1": 1, "ray2": 2}


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- the synthetic world
def vocabulary(titles: pd.Series, size: int = 5000) -> np.ndarray:
    from relgrade.mining.tokenize import tokenize_many

    counts: dict[str, int] = {}
    for toks in tokenize_many(titles.tolist()):
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    top = sorted(counts, key=lambda t: (-counts[t], t))[:size]
    return np.array(top, dtype=object)


def synthetic(catalog: pd.DataFrame, queries: pd.DataFrame, factor: int, seed: int = 0):
    """(catalog, queries) ``factor`` times the bundled ones: copy 0 is the original, copy
    r > 0 appends one vocabulary token chosen by a seeded generator."""
    cat = catalog[["item_id", "title"]].drop_duplicates("item_id").reset_index(drop=True)
    q = queries[["query_id", "text"]].drop_duplicates("query_id").reset_index(drop=True)
    if factor == 1:
        return cat, q
    vocab = vocabulary(cat["title"])
    rng = np.random.default_rng(seed)
    cats, qs = [cat], [q]
    for r in range(1, factor):
        tok = vocab[rng.integers(0, len(vocab), len(cat))]
        cats.append(pd.DataFrame({"item_id": cat["item_id"].astype(str) + f"~{r}",
                                  "title": cat["title"].astype(str) + " " + tok}))
        tq = vocab[rng.integers(0, len(vocab), len(q))]
        qs.append(pd.DataFrame({"query_id": q["query_id"].astype(str) + f"~{r}", "text": q["text"].astype(str) + " " + tq}))
    return pd.concat(cats, ignore_index=True), pd.concat(qs, ignore_index=True)


def variant_embeddings(base: np.ndarray, factor: int, seed: int = 0, noise: float = 0.08) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    out = [base]
    for _ in range(1, factor):
        e = base + noise * rng.standard_normal(base.shape).astype(np.float32)
        out.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def ray_cfg(cfg, workers: int):
    r = cfg.ray.model_copy(update={"num_cpus": workers, "workers": workers, "cpus_per_worker": 1.0,
                                   "threads_per_worker": 1, "search_shard_queries": 1000})
    return cfg.model_copy(update={"engine": "ray", "ray": r})


def start_ray(workers: int) -> None:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}})


# --------------------------------------------------------------------------- one measured path (subprocess)
def run_mining(data_root: str, factor: int, path: str, n_queries: int, n_encode: int, k: int) -> dict:
    from relgrade.config import load_config
    from relgrade.io import read_parquet
    from relgrade.mining.channels.base import item_texts
    from relgrade.mining.stage import make_channel

    cfg = load_config("default", overrides={"data_root": data_root})
    p = cfg.paths
    catalog, queries = read_parquet(p.table("catalog")), read_parquet(p.table("queries"))
    cat, qs = synthetic(catalog, queries, factor)
    sample = qs.sample(min(n_queries, len(qs)), random_state=7).reset_index(drop=True)
    workers = PATHS[path]
    if workers:
        start_ray(workers)
        rc = ray_cfg(cfg, workers)
    out = {"factor": factor, "path": path, "items": len(cat), "queries_sampled": len(sample), "k": k}
    # lexical: fit on the whole catalog (in the driver on every path), search the sample
    lex = make_channel("lexical", cfg)
    t0 = time.perf_counter()
    lex.fit(cat)
    out["lexical_fit_s"] = round(time.perf_counter() - t0, 2)
    lex.engine = rc if workers else None
    t0 = time.perf_counter()
    res_l = lex.search(sample, k)
    s = time.perf_counter() - t0
    out["lexical_search_s"], out["lexical_queries_per_s"] = round(s, 2), round(len(sample) / s, 1)
    if workers:  # the same without starting the search workers (a real run amortizes it)
        st = lex.stats["search_ray_start_s"]
        out["lexical_worker_start_s"] = st
        out["lexical_queries_per_s_started"] = round(len(sample) / max(s - st, 1e-9), 1)
    # dense: base embeddings from the data root's cache, variants by seeded noise
    dense = make_channel("dense", cfg)
    base_items = dense.encode(item_texts(catalog_frame(catalog)).tolist(), what="items")
    qbase = query_frame(queries)
    base_q = dense.encode(qbase["text"].tolist(), what="queries")
    item_emb = variant_embeddings(base_items, factor)
    q_emb = variant_embeddings(base_q, factor, seed=11)
    pos = pd.Index(qs["query_id"].astype(str)).get_indexer(sample["query_id"].astype(str))
    dense.item_ids = cat["item_id"].astype(str).to_numpy(dtype=object)
    dense.item_emb = item_emb
    dense.exact = len(cat) <= dense.exact_max_items
    t0 = time.perf_counter()
    dense.index = dense._build_index(item_emb, dense.exact)
    out["dense_index"] = "flat_ip" if dense.exact else dense.ann
    out["dense_index_build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    dense_peak = None
    if workers:
        from relgrade import engine

        res_d, info = engine.search_sharded(rc, dense, query_frame(sample), k, q_emb[pos])
        dense_peak = info["peak_rss_mb"]
    else:
        res_d = dense.search_embeddings(query_frame(sample), q_emb[pos], k)
    s = time.perf_counter() - t0
    out["dense_search_s"], out["dense_queries_per_s"] = round(s, 2), round(len(sample) / s, 1)
    if workers:
        out["dense_worker_start_s"] = info["start_s"]
        out["dense_queries_per_s_started"] = round(len(sample) / max(s - info["start_s"], 1e-9), 1)
    # the encoder on titles it has not seen (no cache); the local model is loaded before
    # the clock starts, a Ray run's figure includes starting its actors (measured apart
    # on 64 texts: encode_start_s)
    from relgrade.mining.channels.dense import load_model

    pool = cat["title"].astype(str)
    texts = (pool.iloc[len(catalog):] if factor > 1 else pool).sample(min(n_encode, len(pool)), random_state=5).tolist()
    texts = [f"{t} {i}" for i, t in enumerate(texts)]  # distinct, unseen
    enc = make_channel("dense", cfg)
    enc.cache_dir = None
    enc.engine = rc if workers else None
    if workers:
        t0 = time.perf_counter()
        enc.encode([f"warm up {i}" for i in range(64)])
        out["encode_start_s"] = round(time.perf_counter() - t0, 2)
    else:
        load_model(enc.model_path, enc.threads)
    t0 = time.perf_counter()
    enc.encode(texts)
    s = time.perf_counter() - t0
    out["encode_texts"], out["encode_s"], out["encode_texts_per_s"] = len(texts), round(s, 2), round(len(texts) / s, 1)
    if workers:  # less the actors' start, as measured on the warm-up call
        out["encode_texts_per_s_started"] = round(len(texts) / max(s - out["encode_start_s"], 1e-9), 1)
    out["rows"] = {"lexical": len(res_l), "dense": len(res_d)}
    out["driver_peak_rss_mb"] = round(peak_mb(), 1)
    if workers:
        out["worker_peak_rss_mb"] = {"lexical_search": lex.stats.get("search_ray_worker_peak_rss_mb"),
                                     "dense_search": dense_peak,
                                     "encode": enc.stats.get("encode_ray_worker_peak_rss_mb")}
    out["digest"] = {"lexical": digest(res_l), "dense": digest(res_d)}
    return out


def catalog_frame(c):
    from relgrade.mining.channels.base import catalog_frame as cf

    return cf(c)


def query_frame(q):
    from relgrade.mining.channels.base import query_frame as qf

    return qf(q)


def digest(df: pd.DataFrame) -> str:
    from relgrade.io import frame_digest

    return frame_digest(df.sort_values(["query_id", "rank"]).reset_index(drop=True)[["query_id", "item_id", "rank"]])


def run_grading(data_root: str, path: str, sizes: list[int]) -> dict:
    from relgrade.config import load_config
    from relgrade.grading.cascade import grade_frame
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.label import load_cascade
    from relgrade.grading.stage import load_inputs

    cfg = load_config("default", overrides={"data_root": data_root})
    g = cfg.grading
    t0 = time.perf_counter()
    inp = load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    cascade, _, _ = load_cascade(cfg)
    setup_s = time.perf_counter() - t0
    workers = PATHS[path]
    if workers:
        start_ray(workers)
        rc = ray_cfg(cfg, workers)
    out = {"path": path, "setup_s": round(setup_s, 1), "chunk_size": g.chunk_size, "sizes": {}}
    for n in sizes:
        pairs = inp.union.sample(min(n, len(inp.union)), random_state=3).sort_values(["query_id", "item_id"])
        pairs = pairs.reset_index(drop=True)
        todo = [(c, lo, min(len(pairs), lo + g.chunk_size)) for c, lo in enumerate(range(0, len(pairs), g.chunk_size))]
        frames, secs, counts, peaks = {}, {}, {}, []

        def on_chunk(r):
            frames[r["chunk"]] = r["frame"]
            for k, v in r["seconds"].items():
                secs[str(k)] = secs.get(str(k), 0.0) + v
            for k, v in r["counts"].items():
                counts[str(k)] = counts.get(str(k), 0) + int(v)
            if "peak_rss_mb" in r:
                peaks.append(r["peak_rss_mb"])

        t0 = time.perf_counter()
        start_s = None
        if workers:
            from relgrade.grading import ray_worker

            start_s = ray_worker.grade_chunks(rc, cascade, fz, pairs, todo, on_chunk)["start_s"]
        else:
            for c, lo, hi in todo:
                part = pairs.iloc[lo:hi]
                res = cascade.grade(part, fz, g.max_share, None)
                on_chunk({"chunk": c, "frame": grade_frame(part, res, cascade.rule), "seconds": res.seconds,
                          "counts": res.counts})
        wall = time.perf_counter() - t0
        grades = pd.concat([frames[c] for c in sorted(frames)], ignore_index=True)
        out["sizes"][str(len(pairs))] = {
            "pairs": len(pairs), "seconds": round(wall, 2), "pairs_per_s": round(len(pairs) / wall, 1),
            "stage_seconds": {k: round(v, 2) for k, v in secs.items()}, "stage_pairs": counts,
            "worker_peak_rss_mb": round(max(peaks), 1) if peaks else None,
            "worker_start_s": start_s,
            "pairs_per_s_started": None if start_s is None else round(len(pairs) / max(wall - start_s, 1e-9), 1),
            "grades_digest": frame_digest_cols(grades)}
    out["driver_peak_rss_mb"] = round(peak_mb(), 1)
    return out


def frame_digest_cols(g: pd.DataFrame) -> str:
    from relgrade.io import frame_digest

    return frame_digest(g[["query_id", "item_id", "grade", "deciding_stage"]])


def subprocess_json(args: list[str], timeout: int = 5400) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, *args, "--_out", out]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{r.stderr[-4000:]}")
    res = json.loads(Path(out).read_text())
    Path(out).unlink(missing_ok=True)
    print(f"  {' '.join(args)}: {time.perf_counter() - t0:.0f}s", flush=True)
    return res


# --------------------------------------------------------------------------- the driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(ROOT / "var" / "default"), help="a default-profile run (scripts/run.sh)")
    ap.add_argument("--factors", default="1,10")
    ap.add_argument("--mining-queries", type=int, default=2000)
    ap.add_argument("--encode-texts", type=int, default=6144)
    ap.add_argument("--grade-pairs", type=int, default=40000, help="1x; 10x grades ten times as many")
    ap.add_argument("--pit-feature-rows", type=int, default=200_000, help="1x rows per feature view")
    ap.add_argument("--pit-entity-rows", type=int, default=25_000, help="1x entity rows")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: mining,grading,pit")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--_mining", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_grading", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._mining:
        res = run_mining(a.data_root, int(a._mining[0]), a._mining[1], a.mining_queries, a.encode_texts, 100)
        Path(a._out).write_text(json.dumps(res))
        return
    if a._grading:
        res = run_grading(a.data_root, a._grading[0], [int(x) for x in a._grading[1].split(",")])
        Path(a._out).write_text(json.dumps(res))
        return
    factors = [int(x) for x in a.factors.split(",")]
    skip = set(filter(None, a.skip.split(",")))
    prev = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    doc = {"benchmark": "scale: local vs Ray 1/2 workers, DuckDB vs Spark, 1x vs 10x", "data_root": a.data_root,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "measured_at": pd.Timestamp.now(tz="UTC").isoformat(), "factors": factors,
           "settings": {"mining_queries": a.mining_queries, "encode_texts": a.encode_texts, "k": 100,
                        "grade_pairs_1x": a.grade_pairs, "pit_feature_rows_1x": a.pit_feature_rows,
                        "pit_entity_rows_1x": a.pit_entity_rows},
           "mining": prev.get("mining", {}), "grading": prev.get("grading", {}), "pit": prev.get("pit", {})}
    def save() -> None:
        doc["summary"] = summarize(doc, factors)
        Path(a.out).write_text(json.dumps(doc, indent=1))

    if "mining" not in skip:
        print("mining", flush=True)
        doc["mining"] = {str(f): {p: subprocess_json(["--data-root", a.data_root, "--mining-queries",
                                                      str(a.mining_queries), "--encode-texts", str(a.encode_texts),
                                                      "--_mining", str(f), p]) for p in PATHS} for f in factors}
        save()
    if "grading" not in skip:
        print("grading", flush=True)
        sizes = ",".join(str(a.grade_pairs * f) for f in factors)
        doc["grading"] = {p: subprocess_json(["--data-root", a.data_root, "--_grading", p, sizes]) for p in PATHS}
        save()
    if "pit" not in skip:
        print("pit", flush=True)
        doc["pit"] = {}
        for f in factors:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as t:
                out = t.name
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_feast_pit.py"), "--spark",
                   "--feature-rows", str(a.pit_feature_rows * f), "--sizes", str(a.pit_entity_rows * f),
                   "--repeats", "3" if f == 1 else "1", "--out", out]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=7200)
            r = json.loads(Path(out).read_text())
            Path(out).unlink(missing_ok=True)
            doc["pit"][str(f)] = {"feature_rows_per_view": r["feature_rows_per_view"], "views": r["views"],
                                  "repeats": r["repeats"], **r["results"][str(a.pit_entity_rows * f)]}
            print(f"  pit {f}x: {time.perf_counter() - t0:.0f}s", flush=True)
            save()
    save()
    print(json.dumps(doc["summary"], indent=1))


def summarize(doc: dict, factors: list[int]) -> dict:
    """The throughput table and the 1x -> 10x growth of each figure."""
    s: dict = {"throughput": [], "growth_1x_to_10x": {},
               "note": "per_s: wall clock of the call, Ray worker start included; per_s_workers_started: less the "
                       "seconds until the workers were up (what a long run approaches)"}
    lo, hi = str(min(factors)), str(max(factors))
    for f, paths in doc.get("mining", {}).items():
        for p, r in paths.items():
            s["throughput"].append({"stage": "mining lexical", "scale": f"{f}x", "path": p,
                                    "per_s": r["lexical_queries_per_s"], "unit": "queries/s",
                                    "per_s_workers_started": r.get("lexical_queries_per_s_started"),
                                    "worker_peak_rss_mb": (r.get("worker_peak_rss_mb") or {}).get("lexical_search"),
                                    "driver_peak_rss_mb": r["driver_peak_rss_mb"]})
            s["throughput"].append({"stage": "mining dense", "scale": f"{f}x", "path": p,
                                    "per_s": r["dense_queries_per_s"], "unit": "queries/s",
                                    "per_s_workers_started": r.get("dense_queries_per_s_started"),
                                    "worker_peak_rss_mb": (r.get("worker_peak_rss_mb") or {}).get("dense_search")})
            s["throughput"].append({"stage": "encode", "scale": f"{f}x", "path": p, "per_s": r["encode_texts_per_s"],
                                    "unit": "texts/s", "per_s_workers_started": r.get("encode_texts_per_s_started"),
                                    "worker_peak_rss_mb": (r.get("worker_peak_rss_mb") or {}).get("encode")})
    for p, r in doc.get("grading", {}).items():
        for n, x in r["sizes"].items():
            s["throughput"].append({"stage": "grading", "scale": f"{n} pairs", "path": p, "per_s": x["pairs_per_s"],
                                    "unit": "pairs/s", "per_s_workers_started": x.get("pairs_per_s_started"), "worker_peak_rss_mb": x["worker_peak_rss_mb"] or
                                    r["driver_peak_rss_mb"]})
    for f, r in doc.get("pit", {}).items():
        for store in ("feast", "feast_spark"):
            if store in r:
                s["throughput"].append({"stage": "PIT join", "scale": f"{f}x", "path": store.replace("feast", "duckdb", 1)
                                        if store == "feast" else "spark", "per_s": r[store]["rows_per_s"],
                                        "unit": "entity rows/s", "seconds": r[store]["median_seconds"],
                                        "driver_peak_rss_mb": r[store]["median_peak_rss_mb"],
                                        "jvm_used_mb": r[store].get("median_jvm_used_mb")})
    g = s["growth_1x_to_10x"]
    m = doc.get("mining", {})
    if lo in m and hi in m:
        for p in PATHS:
            if p in m[lo] and p in m[hi]:
                a_, b_ = m[lo][p], m[hi][p]
                g[f"mining {p}"] = {
                    "lexical_seconds_per_query": round(b_["lexical_queries_per_s"] and
                                                       a_["lexical_queries_per_s"] / b_["lexical_queries_per_s"], 2),
                    "dense_seconds_per_query": round(a_["dense_queries_per_s"] / b_["dense_queries_per_s"], 2),
                    "lexical_fit_s": round(b_["lexical_fit_s"] / max(a_["lexical_fit_s"], 1e-9), 2),
                    "dense_index_build_s": round(b_["dense_index_build_s"] / max(a_["dense_index_build_s"], 1e-9), 2)}
    for p, r in doc.get("grading", {}).items():
        xs = sorted(r["sizes"].values(), key=lambda x: x["pairs"])
        if len(xs) >= 2:
            g[f"grading {p}"] = {"pairs": round(xs[-1]["pairs"] / xs[0]["pairs"], 2),
                                 "seconds": round(xs[-1]["seconds"] / xs[0]["seconds"], 2)}
    pit = doc.get("pit", {})
    if lo in pit and hi in pit:
        for store in ("feast", "feast_spark"):
            g[f"PIT {'duckdb' if store == 'feast' else 'spark'}"] = {
                "rows": round(pit[hi]["feature_rows_per_view"] / pit[lo]["feature_rows_per_view"], 2),
                "seconds": round(pit[hi][store]["median_seconds"] / pit[lo][store]["median_seconds"], 2)}
    # the engines against each other at each scale
    ratios = {}
    gr = doc.get("grading", {})
    if "local" in gr:
        for n in gr["local"]["sizes"]:
            base = gr["local"]["sizes"][n]["pairs_per_s"]
            ratios[f"grading {n} pairs"] = {p: round(gr[p]["sizes"][n]["pairs_per_s"] / base, 2) for p in gr}
    for f, paths in m.items():
        if "local" in paths:
            for key in ("lexical_queries_per_s", "dense_queries_per_s", "encode_texts_per_s"):
                base = paths["local"][key]
                ratios[f"{key} {f}x"] = {p: round(paths[p][key] / base, 2) for p in paths}
    s["throughput_over_local"] = ratios
    s["results_agree"] = {
        "mining": {f: len({paths[p]["digest"]["lexical"] for p in paths}) == 1
                   and len({paths[p]["digest"]["dense"] for p in paths}) == 1 for f, paths in m.items()},
        "grading": {n: len({gr[p]["sizes"][n]["grades_digest"] for p in gr}) == 1
                    for n in (gr.get("local", {}).get("sizes") or {})},
        "pit": {f: r.get("results_agree") for f, r in pit.items()}}
    return s


if __name__ == "__main__":
    main()
