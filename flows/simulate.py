"""Engagement flow: contract tables -> the search log (simulated, or your own with
``engagement.source: log``) through the ``events`` suite -> windowed engagement features
staged for materialization. Nothing is written unless the log and the features pass."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.runtime import cached, get_config, stage_key, stage_lock, write_stage_manifest
from relgrade.config import RelgradeConfig
from relgrade.engagement import engagement_features
from relgrade.featurestore import conform_features
from relgrade.io import frame_digest, read_parquet, write_tables_atomic
from relgrade.simulate import simulate
from validation.gate import gate_context, validate
from relgrade.views import GATED_ENGAGEMENT_FV

VIEW = GATED_ENGAGEMENT_FV


def _key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    inputs = [cfg.paths.table(t) for t in ("catalog", "queries", "judgments")]
    sections = ["simulation", "engagement"]
    if cfg.engagement.source == "log":  # the log file, and the cut it must end before
        inputs.append(cfg.resolve(cfg.engagement.log_path))
        sections.append("mining")
    return stage_key("simulate", cfg, sections, inputs)


@task(name="simulate", cache_key_fn=_key, persist_result=True)
def simulate_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    logger = get_run_logger()
    catalog = read_parquet(cfg.paths.table("catalog"))
    queries = read_parquet(cfg.paths.table("queries"))
    judgments = read_parquet(cfg.paths.table("judgments"))
    if cfg.engagement.source == "log":
        from relgrade.eventlog import read_log

        events = read_log(cfg.resolve(cfg.engagement.log_path), cfg.dataset.encoding)
        cut = cfg.snapshot_ts
    else:
        events = simulate(catalog, queries, judgments, cfg.simulation)
        cut = None
    ctx = gate_context(cfg, catalog, queries, cut=cut)
    validate(events, "events", cfg, ctx)
    feats = conform_features(VIEW, engagement_features(events, queries))
    validate(feats, VIEW, cfg, ctx)
    write_tables_atomic({cfg.paths.table("events"): events, cfg.paths.staging(VIEW): feats})
    manifest = {
        "stage": "simulate",
        "source": cfg.engagement.source,
        "events": len(events),
        "searches": int(events["search_id"].nunique()),
        "ctr": float(events["click"].mean()),
        "feature_rows": len(feats),
        "digests": {"events": frame_digest(events), VIEW: frame_digest(feats)},
    }
    write_stage_manifest(cfg.paths.contract / "simulate_manifest.json", manifest, cfg)
    logger.info("simulated %d impressions (%d searches, CTR %.3f); %d engagement feature rows",
                manifest["events"], manifest["searches"], manifest["ctr"], manifest["feature_rows"])
    return manifest


@flow(name="simulate-engagement", log_prints=True)
def simulate_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Simulate the search log for the ingested catalog (or read your own log) and stage
    engagement features."""
    cfg = get_config(profile, overrides)
    with stage_lock(cfg, "simulate"):
        return cached(simulate_stage, [cfg.paths.table("events"), cfg.paths.staging(VIEW)])(cfg)
