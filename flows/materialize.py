"""Materialize flow: staged feature batches -> validation gate -> Feast offline store
(atomic merge) -> online store. A batch that fails validation lands nowhere.

A staged batch is published once: a rerun finds its digest in
``features/staging/materialized.json`` and skips it. Re-publishing it would put back
values that a later stage has since refreshed for the same keys (assemble writes the
gated engagement at the cut, the very key of the simulated log's last day), and the
feature store must never go back to an earlier writer's values."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.runtime import get_config, io_task, stage_lock
from relgrade import featurestore as fs
from relgrade.config import RelgradeConfig
from relgrade.io import read_parquet
from validation.gate import gate_for


@task(name="apply-feast-definitions")
def apply_task(cfg: RelgradeConfig) -> str:
    fs.apply_definitions(cfg)
    return str(cfg.paths.feast / "feature_store.yaml")


def _ledger(cfg: RelgradeConfig):
    return cfg.paths.features / "staging" / "materialized.json"


@task(name="publish-view", task_run_name="publish-{view}")
def publish_task(cfg: RelgradeConfig, view: str) -> dict[str, Any]:
    from flows.runtime import read_stage_manifest, write_stage_manifest
    from relgrade.io import file_digest

    staged = cfg.paths.staging(view)
    digest = file_digest(staged)
    done = read_stage_manifest(_ledger(cfg)) or {}
    if done.get(view, {}).get("staged_digest") == digest and cfg.paths.feature_source(view).exists():
        get_run_logger().info("%s: this staged batch was published on %s: skipped", view, done[view].get("at"))
        return {**done[view]["result"], "skipped": True}
    res = fs.publish(cfg, view, read_parquet(staged), gate_for(cfg, view))
    from relgrade.util import utc_now

    done[view] = {"staged_digest": digest, "at": utc_now().isoformat(), "result": res}
    write_stage_manifest(_ledger(cfg), done)
    return res


@flow(name="materialize", log_prints=True)
def materialize_flow(profile: str = "default", overrides: dict | None = None,
                     views: list[str] | None = None) -> list[dict[str, Any]]:
    """Publish every staged view (or the named ones) into Feast, offline and online."""
    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    io_task(apply_task, cfg)(cfg)
    todo = views or [v for v in fs.view_names() if cfg.paths.staging(v).exists()]
    if not todo:
        logger.warning("nothing staged under %s", cfg.paths.features / "staging")
    with stage_lock(cfg, "materialize"):
        out = [io_task(publish_task, cfg)(cfg, v) for v in todo]
    for r in out:
        logger.info("published %s: %d rows (offline table %d rows)", r["view"], r["rows"], r["offline_rows"])
    return out
