"""Materialize flow: staged feature batches -> validation gate -> Feast offline store
(atomic merge) -> online store. A batch that fails validation lands nowhere."""
from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.runtime import get_config, retry_io_only
from relgrade import featurestore as fs
from relgrade.config import RelgradeConfig
from relgrade.io import read_parquet
from validation.gate import validate
from validation.suites import GateContext


def gate_for(cfg: RelgradeConfig, view: str):
    """The validation callable publish() runs before writing anything."""
    catalog = read_parquet(cfg.paths.table("catalog"), columns=["item_id"])
    queries = read_parquet(cfg.paths.table("queries"), columns=["query_id"])
    ctx = GateContext(
        item_ids=pd.Index(catalog["item_id"]),
        query_ids=pd.Index(queries["query_id"]),
        max_future_skew_seconds=cfg.validation.max_future_skew_seconds,
    )
    return lambda batch: validate(batch, view, cfg, ctx)


@task(name="apply-feast-definitions", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_io_only)
def apply_task(cfg: RelgradeConfig) -> str:
    fs.apply_definitions(cfg)
    return str(cfg.paths.feast / "feature_store.yaml")


@task(name="publish-view", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_io_only)
def publish_task(cfg: RelgradeConfig, view: str) -> dict[str, Any]:
    staged = cfg.paths.staging(view)
    batch = read_parquet(staged)
    return fs.publish(cfg, view, batch, gate_for(cfg, view))


@flow(name="materialize", log_prints=True)
def materialize_flow(profile: str = "default", overrides: dict | None = None,
                     views: list[str] | None = None) -> list[dict[str, Any]]:
    """Publish every staged view (or the named ones) into Feast, offline and online."""
    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    apply_task(cfg)
    todo = views or [v for v in fs.view_names() if cfg.paths.staging(v).exists()]
    if not todo:
        logger.warning("nothing staged under %s", cfg.paths.features / "staging")
    out = [publish_task(cfg, v) for v in todo]
    for r in out:
        logger.info("published %s: %d rows (offline table %d rows)", r["view"], r["rows"], r["offline_rows"])
    return out
