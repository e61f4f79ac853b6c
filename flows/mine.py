"""Mine flow: contract tables (+ the simulated log) -> one concurrent task per retrieval
channel (top-K per query, ``Paths.channel``) -> union table (``Paths.union``) with prior,
categories and levels, and ``retrieval_prior_fv`` through the validation gate, as one
transaction -> report ``reports/mining/`` and the snapshot's manifest.

Logic: ``relgrade/mining/stage.py``. Every task is cached on its inputs (stage_key:
config sections, input file digests, code version) and skipped on rerun while its
outputs exist.
"""
from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.transactions import transaction

from flows.runtime import (cached, get_config, io_task, read_stage_manifest, stage_artifacts, stage_key, stage_lock,
                           write_stage_manifest)
from flows.tasks import publish_view, write_outputs
from relgrade.config import RelgradeConfig
from relgrade.views import RETRIEVAL_PRIOR_FV as VIEW
from relgrade.mining import stage as S

SECTIONS = ["mining", "simulation"]  # simulation: the default snapshot is the end of the log


def _tag(snapshot_ts) -> str:
    return S.utc_timestamp(snapshot_ts).strftime("%Y%m%dT%H%M%SZ")


def _channel_key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    ch, snap, ext = parameters["channel"], parameters["snapshot_ts"], parameters.get("external_path")
    return stage_key(f"mine-{ch}-{_tag(snap)}", cfg, SECTIONS, S.channel_inputs(cfg, ch, ext))


@task(name="mine-channel", task_run_name="mine-{channel}", cache_key_fn=_channel_key, persist_result=True)
def channel_task(cfg: RelgradeConfig, channel: str, snapshot_ts: str, external_path: str | None = None) -> dict[str, Any]:
    """Fit one channel on the catalog, take its top-K for every query, write the frame."""
    return S.run_channel(cfg, channel, snapshot_ts, external_path)


def _union_key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    snap = parameters["snapshot_ts"]
    return stage_key(f"mine-union-{_tag(snap)}", cfg, SECTIONS, S.union_inputs(cfg, snap, parameters["channel_runs"]))


@task(name="mine-union-publish-report", cache_key_fn=_union_key, persist_result=True)
def union_task(cfg: RelgradeConfig, snapshot_ts: str, channel_runs: dict[str, dict]) -> dict[str, Any]:
    """Union of the channel frames -> union Parquet and retrieval_prior_fv (validated
    before anything is written; both land or neither does) -> report and manifest."""
    t0 = time.perf_counter()
    union, batch = S.union_of_runs(cfg, snapshot_ts, channel_runs)
    t_union = time.perf_counter() - t0
    with transaction():
        pub = io_task(publish_view, cfg)(cfg, VIEW, batch)
        write_outputs(cfg, {cfg.paths.union(snapshot_ts): union})
    run_stats = {"channels": {c: r["stats"] for c, r in channel_runs.items()}, "union_s": round(t_union, 3),
                 "validate_and_publish_s": round(time.perf_counter() - t0 - t_union, 3)}
    rep = S.report(cfg, union, run_stats)
    manifest = S.manifest(cfg, snapshot_ts, union, pub, rep, run_stats)
    write_stage_manifest(cfg.paths.mining_manifest(snapshot_ts), manifest, cfg)
    return manifest


def _artifacts(manifest: dict) -> None:
    rep = manifest["report"]
    uv = rep.get("union_vs_best_single") or {}
    table = [{"metric": "union pairs", "value": manifest["union_rows"]},
             {"metric": "queries", "value": manifest["queries"]}]
    table += [{"metric": f"{rep['split']} recall@{manifest['k']} {c}", "value": v} for c, v in rep["recall"].items()]
    if uv:
        table.append({"metric": f"{rep['split']} union recall minus best single channel", "value": uv.get("absolute_gain")})
    stage_artifacts("mine", table, rep)


@flow(name="mine", log_prints=True)
def mine_flow(profile: str = "default", overrides: dict | None = None, external_path: str | None = None) -> dict[str, Any]:
    """Mine one snapshot: every channel as a concurrent task, then union, publish, report."""
    cfg = get_config(profile, overrides)
    snap = S.default_snapshot(cfg).isoformat()
    names = S.channel_names(cfg, external_path)
    if "behavioral" in names and not cfg.paths.table("events").exists():
        raise FileNotFoundError(f"{cfg.paths.table('events')} does not exist: run `relgrade simulate` first "
                                "(or drop 'behavioral' from mining.channels)")
    get_run_logger().info("mining snapshot %s: channels %s, K=%d", snap, names, cfg.mining.k)
    with stage_lock(cfg, "mine"):
        futures = {c: cached(io_task(channel_task, cfg), [cfg.paths.channel(snap, c)]).submit(cfg, c, snap, external_path)
                   for c in names}
        runs = {c: f.result() for c, f in futures.items()}
        manifest = cached(union_task, S.union_outputs(cfg, snap))(cfg, snap, runs)
    _artifacts(manifest)
    return manifest


def last_manifest(cfg: RelgradeConfig) -> dict | None:
    return read_stage_manifest(cfg.paths.mining_manifest(S.default_snapshot(cfg)))


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(mine_flow(sys.argv[1] if len(sys.argv) > 1 else "default"), indent=1, default=str)[:4000])
