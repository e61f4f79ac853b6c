"""Mining one snapshot: channels -> per-channel top-K -> union -> feature batch.

The pieces are separate so an orchestrator can run the channels as concurrent tasks::

    frames = {name: fit_and_search(name, cfg, catalog, queries, events, snapshot_ts)
              for name in channel_names(cfg)}           # one task per channel
    union = build_union(frames, cfg, snapshot_ts)
    batch = to_feature_batch(union)                     # -> validation gate -> publish

:func:`mine` does all of it in-process (sequentially, or on threads with
``concurrent=True``). Progress goes to the ``relgrade.mining`` logger, one line per
channel every ``mining.progress_every_s`` seconds with queries/s and ETA, and to an
optional ``progress(channel, done, total, rate_qps, eta_s)`` callable.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.mining import union as U
from relgrade.util import Progress, peak_rss_mb, utc_timestamp
from relgrade.views import RETRIEVAL_PRIOR_FV
from relgrade.mining.channels import (
    BehavioralChannel,
    Channel,
    DenseChannel,
    ExternalChannel,
    LexicalChannel,
)

log = logging.getLogger("relgrade.mining")

ProgressCallback = Callable[[str, int, int, float, float], None]


def _progress(channel: str, every_s: float, callback: ProgressCallback | None, phase: str = "search") -> Progress:
    """A channel's progress line (``mining <channel> <phase>``), each update forwarded to
    ``callback(channel, done, total, rate, eta)``."""
    forward = None if callback is None else (lambda d, t, r, e: callback(channel, d, t, r, e))
    return Progress(f"mining {channel} {phase}", 0, every_s, log, callback=forward)


def default_snapshot(cfg: RelgradeConfig) -> pd.Timestamp:
    """``mining.snapshot_ts``, or the end of the simulated log."""
    if cfg.mining.snapshot_ts is not None:
        return utc_timestamp(cfg.mining.snapshot_ts)
    sim = cfg.simulation
    return utc_timestamp(sim.start_date + timedelta(days=sim.days))


def channel_names(cfg: RelgradeConfig, external_path: str | Path | None = None) -> list[str]:
    names = [c for c in cfg.mining.channels if c != "external"]
    if external_path or cfg.mining.external_path or "external" in cfg.mining.channels:
        names.append("external")
    return names


def embedding_cache_dir(cfg: RelgradeConfig) -> Path:
    m = cfg.mining
    return cfg.resolve(m.dense_cache_dir) if m.dense_cache_dir else cfg.paths.cache / "embeddings"


def _make_index_channel(name: str, cfg: RelgradeConfig) -> Channel:
    m = cfg.mining
    if name == "lexical":
        return LexicalChannel(k1=m.lexical_k1, b=m.lexical_b, batch_size=m.query_batch_size)
    return DenseChannel(
        batch_size=m.dense_batch_size, max_seq_length=m.dense_max_seq_length, precision=m.dense_precision,
        exact_max_items=m.dense_exact_max_items, ann=m.dense_ann, hnsw_m=m.dense_hnsw_m,
        hnsw_ef_construction=m.dense_hnsw_ef_construction, hnsw_ef_search=m.dense_hnsw_ef_search,
        ivf_nlist=m.dense_ivf_nlist, ivf_nprobe=m.dense_ivf_nprobe, cache_dir=embedding_cache_dir(cfg),
        threads=m.dense_threads, query_batch_size=m.query_batch_size, device=channel_device(cfg),
    )


def channel_device(cfg: RelgradeConfig) -> str:
    """Where the dense channel's bi-encoder runs: the configured ``device``; on Ray, the
    workers' (a GPU only when each reserves one, ``ray.gpus_per_worker``)."""
    if cfg.engine == "ray" and not cfg.ray.gpus_per_worker:
        return "cpu"
    return cfg.device


def make_channel(
    name: str,
    cfg: RelgradeConfig,
    events: pd.DataFrame | None = None,
    snapshot_ts: datetime | str | pd.Timestamp | None = None,
    external_path: str | Path | None = None,
    queries: pd.DataFrame | None = None,
) -> Channel:
    """A configured, unfitted channel. ``behavioral`` needs ``events`` and
    ``snapshot_ts`` (it keeps only events strictly before it); ``external`` needs a path
    (argument or ``mining.external_path``)."""
    m = cfg.mining
    if name in ("lexical", "dense"):  # engine: ray encodes and searches on Ray (relgrade/engine.py)
        ch = _make_index_channel(name, cfg)
        ch.engine = cfg if cfg.engine == "ray" else None
        return ch
    if name == "behavioral":
        if snapshot_ts is None:
            raise ValueError("the behavioral channel needs snapshot_ts (it must not see the future)")
        return BehavioralChannel(
            events, snapshot_ts, query_texts=queries,
            click_weight=m.behavioral_click_weight, add_to_cart_weight=m.behavioral_add_to_cart_weight,
            order_weight=m.behavioral_order_weight, half_life_days=m.behavioral_half_life_days,
            lookback_days=m.behavioral_lookback_days, neighbors=m.behavioral_neighbors,
            min_similarity=m.behavioral_min_similarity, neighbor_weight=m.behavioral_neighbor_weight,
        )
    if name == "external":
        path = external_path or m.external_path
        if not path:
            raise ValueError("the external channel needs external_path (argument or mining.external_path)")
        return ExternalChannel(cfg.resolve(str(path)))
    raise ValueError(f"unknown channel {name!r}")


def fit_and_search(
    channel_name: str,
    cfg: RelgradeConfig,
    catalog: pd.DataFrame,
    queries: pd.DataFrame,
    events: pd.DataFrame | None = None,
    snapshot_ts: datetime | str | pd.Timestamp | None = None,
    external_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    stats: dict | None = None,
) -> pd.DataFrame:
    """Build, fit and run one channel: its top-K frame ``query_id, item_id, rank,
    score``. Timings and channel stats go into ``stats`` when given (and the log)."""
    t0 = time.perf_counter()
    snapshot_ts = default_snapshot(cfg) if snapshot_ts is None else utc_timestamp(snapshot_ts)
    ch = make_channel(channel_name, cfg, events, snapshot_ts, external_path, queries)
    every = cfg.mining.progress_every_s
    if isinstance(ch, DenseChannel):
        ch.fit(catalog, progress=_progress(channel_name, every, progress, phase="encode items"))
    else:
        ch.fit(catalog)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = ch.search(queries, cfg.mining.k, progress=_progress(channel_name, every, progress))
    t_search = time.perf_counter() - t1
    st = {
        "channel": channel_name, "k": cfg.mining.k, "queries": int(queries["query_id"].nunique()),
        "rows": int(len(res)), "queries_with_hits": int(res["query_id"].nunique()) if len(res) else 0,
        "fit_s": round(t_fit, 3), "search_s": round(t_search, 3), "total_s": round(t_fit + t_search, 3),
        **{f"channel_{k}": v for k, v in ch.stats.items()},
    }
    st["queries_per_s"] = round(st["queries"] / max(st["total_s"], 1e-9), 1)
    if isinstance(ch, DenseChannel):
        st["ann_recall"] = ch.ann_recall(queries, cfg.mining.k, sample=cfg.mining.dense_recall_sample)
    log.info("mining %s: %d rows for %d/%d queries in %.1fs (%.0f q/s end to end)", channel_name, st["rows"],
             st["queries_with_hits"], st["queries"], st["total_s"], st["queries_per_s"])
    if stats is not None:
        stats.update(st)
    return res


def build_union(results: dict[str, pd.DataFrame], cfg: RelgradeConfig, snapshot_ts: datetime | str | pd.Timestamp) -> pd.DataFrame:
    """The snapshot's union table with prior, categories and levels (config weights)."""
    m = cfg.mining
    return U.build_union(results, snapshot_ts, weights=m.prior_weights, rank_constant=m.prior_rank_constant,
                         agreement_weight=m.prior_agreement_weight, near_top_rank=m.near_top_rank, high_rank=m.high_rank)


def write_union(cfg: RelgradeConfig, union: pd.DataFrame, snapshot_ts: datetime | str | pd.Timestamp | None = None) -> Path:
    from relgrade.io import write_parquet_atomic

    ts = snapshot_ts if snapshot_ts is not None else union["snapshot_ts"].iloc[0]
    return write_parquet_atomic(union, cfg.paths.union(ts))


def mine(
    cfg: RelgradeConfig,
    catalog: pd.DataFrame,
    queries: pd.DataFrame,
    events: pd.DataFrame | None,
    snapshot_ts: datetime | str | pd.Timestamp | None = None,
    external_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    concurrent: bool = False,
) -> dict:
    """Mine one snapshot. Returns ``{"snapshot_ts", "results": {channel: frame},
    "union", "feature_batch", "stats"}``; nothing is written (the flow publishes)."""
    t0 = time.perf_counter()
    ts = default_snapshot(cfg) if snapshot_ts is None else utc_timestamp(snapshot_ts)
    names = channel_names(cfg, external_path)
    if "behavioral" in names and events is None:
        log.warning("mining: no events given; the behavioral channel is skipped")
        names.remove("behavioral")
    stats: dict[str, dict] = {n: {} for n in names}

    def run(name: str) -> pd.DataFrame:
        return fit_and_search(name, cfg, catalog, queries, events, ts, external_path, progress, stats[name])

    if concurrent and len(names) > 1:
        with ThreadPoolExecutor(max_workers=len(names)) as ex:
            futs = {n: ex.submit(run, n) for n in names}
            results = {n: f.result() for n, f in futs.items()}
    else:
        results = {n: run(n) for n in names}
    t1 = time.perf_counter()
    union = build_union(results, cfg, ts)
    batch = U.to_feature_batch(union, ts)
    t_union = time.perf_counter() - t1
    summary = {
        "snapshot_ts": ts.isoformat(), "k": cfg.mining.k, "channels": names, "queries": int(queries["query_id"].nunique()),
        "items": int(catalog["item_id"].nunique()), "union_rows": int(len(union)), "union_s": round(t_union, 3),
        "total_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
        "agreement_counts": {str(k): int(v) for k, v in union["agreement"].value_counts().sort_index().items()},
        "category_counts": {str(k): int(v) for k, v in union["category"].value_counts().items()},
        "level_counts": {str(k): int(v) for k, v in union["difficulty_level"].value_counts().sort_index().items()},
    }
    log.info("mining snapshot %s: %d union rows from %s in %.1fs", summary["snapshot_ts"], len(union), names, summary["total_s"])
    return {"snapshot_ts": ts, "results": results, "union": union, "feature_batch": batch,
            "stats": {"channels": stats, "summary": summary}}


# --------------------------------------------------------------------------- the stage's steps (flows/mine.py)
def external_source(cfg: RelgradeConfig, external_path: str | Path | None = None) -> Path | None:
    """The external channel's file: the one given, else ``mining.external_path``."""
    p = external_path or cfg.mining.external_path
    return cfg.resolve(str(p)) if p else None


def channel_inputs(cfg: RelgradeConfig, channel: str, external_path: str | Path | None = None) -> list[Path]:
    """The files one channel reads (its cache key)."""
    p = cfg.paths
    inputs = [p.table("catalog"), p.table("queries")]
    if channel == "behavioral":
        inputs.append(p.table("events"))
    if channel == "external":
        inputs.append(external_source(cfg, external_path))
    return inputs


def run_channel(cfg: RelgradeConfig, channel: str, snapshot_ts, external_path: str | Path | None = None) -> dict:
    """Fit one channel on the catalog, take its top-K for every query and write the frame
    to ``Paths.channel``; returns ``{"channel", "path", "stats"}``."""
    from relgrade.io import read_parquet, write_parquet_atomic

    p = cfg.paths
    catalog, queries = read_parquet(p.table("catalog")), read_parquet(p.table("queries"))
    events = read_parquet(p.table("events")) if channel == "behavioral" else None
    stats: dict = {}
    res = fit_and_search(channel, cfg, catalog, queries, events, snapshot_ts, external_source(cfg, external_path),
                         stats=stats)
    path = write_parquet_atomic(res, p.channel(snapshot_ts, channel))
    log.info("channel %s: %d rows for %d queries in %.1fs -> %s", channel, len(res), stats.get("queries_with_hits", 0),
             stats.get("total_s", 0.0), path)
    return {"channel": channel, "path": str(path), "stats": stats}


def union_inputs(cfg: RelgradeConfig, snapshot_ts, channels) -> list[Path]:
    p = cfg.paths
    return [p.channel(snapshot_ts, c) for c in sorted(channels)] + [p.table(t) for t in ("catalog", "queries", "judgments")]


def union_outputs(cfg: RelgradeConfig, snapshot_ts) -> list[Path]:
    p = cfg.paths
    r = p.report("mining")
    return [p.union(snapshot_ts), p.feature_source(RETRIEVAL_PRIOR_FV), p.mining_manifest(snapshot_ts),
            r / "report.json", r / "report.html"]


def union_of_runs(cfg: RelgradeConfig, snapshot_ts, channel_runs: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The union table of the channel frames ``channel_runs`` wrote, and its
    ``retrieval_prior_fv`` batch."""
    from relgrade.io import read_parquet

    results = {c: read_parquet(r["path"]) for c, r in channel_runs.items()}
    union = build_union(results, cfg, snapshot_ts)
    log.info("union: %d rows (%d queries)", len(union), union["query_id"].nunique())
    return union, U.to_feature_batch(union, snapshot_ts)


def report(cfg: RelgradeConfig, union: pd.DataFrame, run_stats: dict) -> dict:
    """The mining report (reports/mining/report.{html,json}) on ``mining.report_split``."""
    from relgrade.io import read_parquet
    from relgrade.mining.report import mining_report

    p, m = cfg.paths, cfg.mining
    rep = mining_report(union, read_parquet(p.table("judgments")), read_parquet(p.table("queries")),
                        read_parquet(p.table("catalog"), columns=["item_id", "title"]), k=m.k,
                        out_dir=p.report("mining"), split=m.report_split, stats=run_stats,
                        positive_grade=m.positive_grade, near_top_rank=m.near_top_rank, high_rank=m.high_rank,
                        name="report")
    uv = rep["metrics"].get("union_vs_best_single", {})
    if uv:
        log.info("report (%s): union recall@%d %.4f vs best single %s %.4f (+%.4f); %s", m.report_split, m.k,
                 uv["union_recall"] or 0, uv["best_channel"], uv["best_channel_recall"] or 0, uv["absolute_gain"] or 0,
                 rep["html"])
    return rep


def manifest(cfg: RelgradeConfig, snapshot_ts, union: pd.DataFrame, published: dict, rep: dict,
             run_stats: dict) -> dict:
    """The snapshot's manifest (``Paths.mining_manifest``): counts, digests, the published
    view, the report's headline figures."""
    from relgrade.io import frame_digest, read_parquet

    m = cfg.mining
    met = rep["metrics"]
    queries = read_parquet(cfg.paths.table("queries"), columns=["query_id"])

    def counts(col: str, by_index: bool = True) -> dict:
        vc = union[col].value_counts()
        return {str(k): int(v) for k, v in (vc.sort_index() if by_index else vc).items()}

    return {
        "stage": "mine", "snapshot_ts": pd.Timestamp(snapshot_ts).isoformat(), "k": m.k, "engine": cfg.engine,
        "channels": sorted(run_stats["channels"]), "queries": int(queries["query_id"].nunique()),
        "union_rows": int(len(union)), "union_path": str(cfg.paths.union(snapshot_ts)), "feature_view": published,
        "digests": {"union": frame_digest(union)}, "agreement_counts": counts("agreement"),
        "category_counts": counts("category", by_index=False), "level_counts": counts("difficulty_level"),
        "report": {"html": rep["html"], "json": rep["json"], "split": m.report_split,
                   "recall": {c: v[f"recall@{m.k}"]["macro"] for c, v in met["recall"].items()},
                   "union_vs_best_single": met.get("union_vs_best_single", {})},
        "run_stats": run_stats, "peak_rss_mb": round(peak_rss_mb(), 1),
    }
