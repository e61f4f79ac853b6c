"""Mine flow: contract tables (+ the simulated log) -> one concurrent task per retrieval
channel (top-K per query, written to ``mining/channels/<snapshot>/<channel>.parquet``)
-> union table ``mining/union_<snapshot>.parquet`` with prior, categories and levels
-> ``retrieval_prior_fv`` through the validation gate (nothing lands on failure)
-> report ``reports/mining/report.{html,json}`` on the configured split.

Every task is cached on its inputs (stage_key: config sections, input file digests,
code version) and skipped on rerun while its outputs exist.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.runtime import (cached, get_config, read_stage_manifest, retry_io_only, stage_artifacts, stage_key,
                           stage_lock, write_stage_manifest)
from relgrade.config import RelgradeConfig
from relgrade.io import frame_digest, read_parquet, write_parquet_atomic

VIEW = "retrieval_prior_fv"
SECTIONS = ["mining", "simulation"]  # simulation: the default snapshot is the end of the log


# --------------------------------------------------------------------------- paths
def snapshot_tag(snapshot_ts) -> str:
    from relgrade.mining.union import utc_timestamp

    return utc_timestamp(snapshot_ts).strftime("%Y%m%dT%H%M%SZ")


def channel_path(cfg: RelgradeConfig, snapshot_ts, channel: str):
    return cfg.paths.root / "mining" / "channels" / snapshot_tag(snapshot_ts) / f"{channel}.parquet"


def manifest_path(cfg: RelgradeConfig, snapshot_ts):
    return cfg.paths.root / "mining" / f"manifest_{snapshot_tag(snapshot_ts)}.json"


def report_dir(cfg: RelgradeConfig):
    return cfg.paths.reports / "mining"


def _external(cfg: RelgradeConfig, external_path: str | None):
    p = external_path or cfg.mining.external_path
    return cfg.resolve(str(p)) if p else None


def _channel_inputs(cfg: RelgradeConfig, channel: str, external_path: str | None) -> list:
    inputs = [cfg.paths.table("catalog"), cfg.paths.table("queries")]
    if channel == "behavioral":
        inputs.append(cfg.paths.table("events"))
    if channel == "external":
        inputs.append(_external(cfg, external_path))
    return inputs


# --------------------------------------------------------------------------- tasks
def _channel_key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    ch, snap, ext = parameters["channel"], parameters["snapshot_ts"], parameters.get("external_path")
    return stage_key(f"mine-{ch}-{snapshot_tag(snap)}", cfg, SECTIONS, _channel_inputs(cfg, ch, ext))


@task(name="mine-channel", task_run_name="mine-{channel}", cache_key_fn=_channel_key, persist_result=True,
      retries=2, retry_delay_seconds=1, retry_condition_fn=retry_io_only)
def channel_task(cfg: RelgradeConfig, channel: str, snapshot_ts: str, external_path: str | None = None) -> dict[str, Any]:
    """Fit one channel on the catalog, take its top-K for every query, write the frame."""
    from relgrade.mining.run import fit_and_search

    logger = get_run_logger()
    catalog = read_parquet(cfg.paths.table("catalog"))
    queries = read_parquet(cfg.paths.table("queries"))
    events = read_parquet(cfg.paths.table("events")) if channel == "behavioral" else None
    stats: dict[str, Any] = {}
    res = fit_and_search(channel, cfg, catalog, queries, events, snapshot_ts, _external(cfg, external_path),
                         stats=stats)
    path = write_parquet_atomic(res, channel_path(cfg, snapshot_ts, channel))
    logger.info("channel %s: %d rows for %d queries in %.1fs -> %s", channel, len(res),
                stats.get("queries_with_hits", 0), stats.get("total_s", 0.0), path)
    return {"channel": channel, "path": str(path), "stats": stats}


def _union_key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    snap = parameters["snapshot_ts"]
    inputs = [channel_path(cfg, snap, c) for c in sorted(parameters["channel_runs"])]
    inputs += [cfg.paths.table(t) for t in ("catalog", "queries", "judgments")]
    return stage_key(f"mine-union-{snapshot_tag(snap)}", cfg, SECTIONS, inputs)


def _union_outputs(cfg: RelgradeConfig, snap) -> list:
    from relgrade.mining.run import union_path

    return [union_path(cfg, snap), cfg.paths.feature_source(VIEW), manifest_path(cfg, snap),
            report_dir(cfg) / "report.json", report_dir(cfg) / "report.html"]


@task(name="mine-union-publish-report", cache_key_fn=_union_key, persist_result=True)
def union_task(cfg: RelgradeConfig, snapshot_ts: str, channel_runs: dict[str, dict]) -> dict[str, Any]:
    """Union of the channel frames -> union Parquet + retrieval_prior_fv (gated) +
    report. Validation runs before anything is written: a rejected batch lands nowhere."""
    from validation.gate import gate_for
    from relgrade import featurestore as fs
    from relgrade.mining.report import mining_report
    from relgrade.mining.run import build_union, peak_rss_mb, union_path
    from relgrade.mining.union import to_feature_batch

    logger = get_run_logger()
    t0 = time.perf_counter()
    results = {c: read_parquet(r["path"]) for c, r in channel_runs.items()}
    union = build_union(results, cfg, snapshot_ts)
    batch = to_feature_batch(union, snapshot_ts)
    t_union = time.perf_counter() - t0
    logger.info("union: %d rows (%d queries) in %.1fs", len(union), union["query_id"].nunique(), t_union)
    upath = union_path(cfg, snapshot_ts)
    # gate first: a rejected batch raises before anything is written. Then the union
    # file (the grading stage's input: it lands before the slow online materialization),
    # then publish; if publishing fails the union file is removed again (all or none).
    t1 = time.perf_counter()
    batch = fs.conform_features(VIEW, batch)
    gate_for(cfg, VIEW)(batch)
    t_gate = time.perf_counter() - t1
    had_union = upath.exists()
    write_parquet_atomic(union, upath)
    logger.info("validated %d rows in %.1fs; union -> %s; publishing %s", len(batch), t_gate, upath, VIEW)
    try:
        pub = fs.publish(cfg, VIEW, batch, None)  # validated just above
    except BaseException:
        if not had_union:
            upath.unlink(missing_ok=True)
        raise
    t_pub = time.perf_counter() - t1
    logger.info("published %s: %d rows (offline %d) in %.1fs; union -> %s", VIEW, pub["rows"], pub["offline_rows"],
                t_pub, upath)

    catalog = read_parquet(cfg.paths.table("catalog"), columns=["item_id", "title"])
    queries = read_parquet(cfg.paths.table("queries"))
    judgments = read_parquet(cfg.paths.table("judgments"))
    m = cfg.mining
    run_stats = {"channels": {c: r["stats"] for c, r in channel_runs.items()},
                 "union_s": round(t_union, 3), "validate_s": round(t_gate, 3),
                 "validate_and_publish_s": round(t_pub, 3)}
    rep = mining_report(union, judgments, queries, catalog, k=m.k, out_dir=report_dir(cfg), split=m.report_split,
                        stats=run_stats, positive_grade=m.positive_grade, near_top_rank=m.near_top_rank,
                        high_rank=m.high_rank, name="report")
    met = rep["metrics"]
    uv = met.get("union_vs_best_single", {})
    manifest = {
        "stage": "mine",
        "snapshot_ts": pd.Timestamp(snapshot_ts).isoformat(),
        "k": m.k,
        "channels": sorted(channel_runs),
        "queries": int(queries["query_id"].nunique()),
        "union_rows": int(len(union)),
        "union_path": str(upath),
        "feature_view": pub,
        "digests": {"union": frame_digest(union)},
        "agreement_counts": {str(k): int(v) for k, v in union["agreement"].value_counts().sort_index().items()},
        "category_counts": {str(k): int(v) for k, v in union["category"].value_counts().items()},
        "level_counts": {str(k): int(v) for k, v in union["difficulty_level"].value_counts().sort_index().items()},
        "report": {"html": rep["html"], "json": rep["json"], "split": m.report_split,
                   "recall": {c: v[f"recall@{m.k}"]["macro"] for c, v in met["recall"].items()},
                   "union_vs_best_single": uv},
        "run_stats": run_stats,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_stage_manifest(manifest_path(cfg, snapshot_ts), manifest)
    if uv:
        logger.info("report (%s): union recall@%d %.4f vs best single %s %.4f (+%.4f); %s", m.report_split, m.k,
                    uv["union_recall"] or 0, uv["best_channel"], uv["best_channel_recall"] or 0,
                    uv["absolute_gain"] or 0, rep["html"])
    return manifest


# --------------------------------------------------------------------------- flow
@flow(name="mine", log_prints=True)
def mine_flow(profile: str = "default", overrides: dict | None = None, external_path: str | None = None) -> dict[str, Any]:
    """Mine one snapshot: every channel as a concurrent task, then union, publish, report."""
    from relgrade.mining.run import channel_names, default_snapshot

    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    snap = default_snapshot(cfg).isoformat()
    names = channel_names(cfg, external_path)
    if "behavioral" in names and not cfg.paths.table("events").exists():
        raise FileNotFoundError(f"{cfg.paths.table('events')} does not exist: run `relgrade simulate` first "
                                "(or drop 'behavioral' from mining.channels)")
    logger.info("mining snapshot %s: channels %s, K=%d", snap, names, cfg.mining.k)
    with stage_lock(cfg, "mine"):
        futures = {c: cached(channel_task, [channel_path(cfg, snap, c)]).submit(cfg, c, snap, external_path)
                   for c in names}
        runs = {c: f.result() for c, f in futures.items()}
        manifest = cached(union_task, _union_outputs(cfg, snap))(cfg, snap, runs)
    rep = manifest["report"]
    uv = rep.get("union_vs_best_single") or {}
    table = [{"metric": "union pairs", "value": manifest["union_rows"]},
             {"metric": "queries", "value": manifest["queries"]}]
    table += [{"metric": f"{rep['split']} recall@{manifest['k']} {c}", "value": v} for c, v in rep["recall"].items()]
    if uv:
        table.append({"metric": f"{rep['split']} union recall minus best single channel", "value": uv.get("absolute_gain")})
    stage_artifacts("mine", table, rep)
    return manifest


def last_manifest(cfg: RelgradeConfig) -> dict | None:
    from relgrade.mining.run import default_snapshot

    return read_stage_manifest(manifest_path(cfg, default_snapshot(cfg)))


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(mine_flow(sys.argv[1] if len(sys.argv) > 1 else "default"), indent=1, default=str)[:4000])
