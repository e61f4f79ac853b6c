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
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.mining import union as U
from relgrade.mining.channels import (
    BehavioralChannel,
    Channel,
    DenseChannel,
    ExternalChannel,
    LexicalChannel,
)

log = logging.getLogger("relgrade.mining")

ProgressCallback = Callable[[str, int, int, float, float], None]


class Progress:
    """Per-channel progress: logs ``done/total, q/s, ETA`` at most every ``every_s``
    seconds (and at the end) and forwards each update to ``callback``."""

    def __init__(self, channel: str, every_s: float = 5.0, callback: ProgressCallback | None = None, phase: str = "search"):
        self.channel, self.every_s, self.callback, self.phase = channel, every_s, callback, phase
        self.t0 = time.perf_counter()
        self.t_last = -1e9
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self.lock:
            now = time.perf_counter()
            el = max(now - self.t0, 1e-9)
            rate = done / el
            eta = (total - done) / rate if rate > 0 else float("inf")
            if now - self.t_last >= self.every_s or done >= total:
                self.t_last = now
                log.info("mining %s %s: %d/%d (%.0f/s, ETA %.0fs)", self.channel, self.phase, done, total, rate, eta)
            if self.callback is not None:
                self.callback(self.channel, done, total, rate, eta)


def default_snapshot(cfg: RelgradeConfig) -> pd.Timestamp:
    """``mining.snapshot_ts``, or the end of the simulated log."""
    if cfg.mining.snapshot_ts is not None:
        return U.utc_timestamp(cfg.mining.snapshot_ts)
    sim = cfg.simulation
    return U.utc_timestamp(sim.start_date + timedelta(days=sim.days))


def channel_names(cfg: RelgradeConfig, external_path: str | Path | None = None) -> list[str]:
    names = [c for c in cfg.mining.channels if c != "external"]
    if external_path or cfg.mining.external_path or "external" in cfg.mining.channels:
        names.append("external")
    return names


def embedding_cache_dir(cfg: RelgradeConfig) -> Path:
    m = cfg.mining
    return cfg.resolve(m.dense_cache_dir) if m.dense_cache_dir else cfg.paths.root / "cache" / "embeddings"


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
    if name == "lexical":
        return LexicalChannel(k1=m.lexical_k1, b=m.lexical_b, batch_size=m.query_batch_size)
    if name == "dense":
        return DenseChannel(
            batch_size=m.dense_batch_size, max_seq_length=m.dense_max_seq_length, precision=m.dense_precision,
            exact_max_items=m.dense_exact_max_items, ann=m.dense_ann, hnsw_m=m.dense_hnsw_m,
            hnsw_ef_construction=m.dense_hnsw_ef_construction, hnsw_ef_search=m.dense_hnsw_ef_search,
            ivf_nlist=m.dense_ivf_nlist, ivf_nprobe=m.dense_ivf_nprobe, cache_dir=embedding_cache_dir(cfg),
            threads=m.dense_threads, query_batch_size=m.query_batch_size,
        )
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
    snapshot_ts = default_snapshot(cfg) if snapshot_ts is None else U.utc_timestamp(snapshot_ts)
    ch = make_channel(channel_name, cfg, events, snapshot_ts, external_path, queries)
    every = cfg.mining.progress_every_s
    if isinstance(ch, DenseChannel):
        ch.fit(catalog, progress=Progress(channel_name, every, progress, phase="encode items"))
    else:
        ch.fit(catalog)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = ch.search(queries, cfg.mining.k, progress=Progress(channel_name, every, progress))
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


def union_path(cfg: RelgradeConfig, snapshot_ts: datetime | str | pd.Timestamp) -> Path:
    ts = U.utc_timestamp(snapshot_ts)
    return cfg.paths.root / "mining" / f"union_{ts.strftime('%Y%m%dT%H%M%SZ')}.parquet"


def write_union(cfg: RelgradeConfig, union: pd.DataFrame, snapshot_ts: datetime | str | pd.Timestamp | None = None) -> Path:
    from relgrade.io import write_parquet_atomic

    ts = snapshot_ts if snapshot_ts is not None else union["snapshot_ts"].iloc[0]
    return write_parquet_atomic(union, union_path(cfg, ts))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    ts = default_snapshot(cfg) if snapshot_ts is None else U.utc_timestamp(snapshot_ts)
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
