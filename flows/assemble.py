"""Assemble flow: gated engagement (published to Feast through the validation gate) ->
point-in-time training set through Feast -> validation gate (suite ``training_set``) ->
training set, list form and manifest (all or none) -> data-quality report, registered as
a Prefect artifact of the flow run."""
from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.runtime import cached, get_config, read_stage_manifest, io_task, stage_key, stage_lock
from relgrade.config import RelgradeConfig
from relgrade.views import GATED_ENGAGEMENT_FV, QUERY_ATTRIBUTES_FV, RELEVANCE_GRADE_FV, RETRIEVAL_PRIOR_FV

VIEW = GATED_ENGAGEMENT_FV


def _inputs(cfg: RelgradeConfig) -> list:
    from relgrade.mining.stage import default_snapshot

    p = cfg.paths
    return [p.table("queries"), p.table("catalog"), p.table("judgments"), p.table("events"),
            cfg.paths.union(default_snapshot(cfg)), p.feature_source(RETRIEVAL_PRIOR_FV),
            p.feature_source(RELEVANCE_GRADE_FV), p.feature_source(QUERY_ATTRIBUTES_FV)]


def _key(context, parameters) -> str | None:
    from relgrade.assemble.build import output_paths
    from relgrade.io import file_digest

    cfg: RelgradeConfig = parameters["cfg"]
    out = output_paths(cfg)
    if cfg.assemble.refresh_engagement:
        # the gated rows live in gated_engagement_fv: if anything rewrote that table since
        # this stage published (e.g. a materialize rerun), rebuild
        man = read_stage_manifest(out["manifest"]) or {}
        eng = cfg.paths.feature_source(VIEW)
        recorded = (man.get("feature_views", {}).get(VIEW) or {}).get("offline_digest")
        if not eng.exists() or recorded != file_digest(eng):
            return None
    return stage_key("assemble", cfg, ["assemble", "engagement", "mining"], _inputs(cfg))


@task(name="publish-gated-engagement")
def publish_gated_task(cfg: RelgradeConfig, batch: pd.DataFrame) -> dict[str, Any]:
    from validation.gate import gate_for
    from relgrade.featurestore import publish

    return publish(cfg, VIEW, batch, gate_for(cfg, VIEW))


@task(name="assemble", cache_key_fn=_key, persist_result=True)
def assemble_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    from relgrade.assemble.stage import run

    logger = get_run_logger()
    summary = run(cfg, publish_gated=lambda b: io_task(publish_gated_task, cfg)(cfg, b))
    logger.info("training set: %d rows, %d queries, %.1fs; Spearman with the human grade: %s",
                summary["rows"]["trainset"], summary["rows"]["queries"], summary["timings"]["total_s"],
                {k: (None if v is None else round(v, 3)) for k, v in summary["spearman_with_human_grade"].items()})
    return summary


def _artifacts(summary: dict[str, Any]) -> None:
    from flows.runtime import stage_artifacts

    table = [{"metric": "training rows", "value": summary["rows"]["trainset"]},
             {"metric": "training queries", "value": summary["rows"]["queries"]},
             {"metric": "rows with a gated preference", "value": summary["rows"].get("with_preference")},
             {"metric": "share of graded shown pairs passing the gate", "value": summary.get("gate_pass_share")}]
    table += [{"metric": f"Spearman with the human grade: {k}", "value": v}
              for k, v in summary["spearman_with_human_grade"].items()]
    stage_artifacts("assemble", table, {"html": summary["paths"]["report_html"], "json": summary["paths"]["report_json"]},
                    f"Cut {summary['cut_ts']}, content hash `{summary['content_hash'][:16]}`.")


@flow(name="assemble", log_prints=True)
def assemble_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Gate engagement by grade, assemble the point-in-time training set with blended
    targets, validate it, write it with its manifest and the data-quality report."""
    cfg = get_config(profile, overrides)
    from relgrade.assemble.build import output_paths

    with stage_lock(cfg, "assemble"):
        summary = cached(assemble_stage, output_paths(cfg).values())(cfg)
    _artifacts(summary)
    return summary
