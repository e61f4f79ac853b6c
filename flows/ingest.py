"""Ingest flow: adapter -> contract -> validation gate -> contract Parquet (all or none)."""
from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.runtime import cached, get_config, io_task, stage_key, stage_lock, write_stage_manifest
from relgrade.config import RelgradeConfig
from relgrade.ingest import CONTRACT_TABLES, build_tables
from relgrade.io import frame_digest, write_tables_atomic
from validation.gate import gate_context, validate


def _ingest_key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    d = cfg.dataset
    files = (d.catalog_path, d.judgments_path, d.queries_path) if d.adapter == "contract" else \
        (d.path, d.products_path, d.labels_path)
    if cfg.engagement.source == "log":  # the log adds its queries and gives the segments
        files = (*files, cfg.engagement.log_path)
    inputs = [cfg.resolve(p) for p in files if p]
    return stage_key("ingest", cfg, ["dataset", "simulation", "engagement"], inputs)


@task(name="read-and-conform")
def read_and_conform(cfg: RelgradeConfig) -> dict[str, pd.DataFrame]:
    return build_tables(cfg)


def validate_contract_tables(tables: dict[str, pd.DataFrame], cfg: RelgradeConfig) -> list:
    """Every table through its suite; referential integrity against the batch's own
    catalog and queries. Raises ValidationFailed on the first failing table."""
    ctx = gate_context(cfg, tables["catalog"], tables["queries"])
    return [validate(tables[name], name, cfg, ctx) for name in CONTRACT_TABLES]


@task(name="ingest", cache_key_fn=_ingest_key, persist_result=True)
def ingest_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    logger = get_run_logger()
    tables = io_task(read_and_conform, cfg)(cfg)
    reports = validate_contract_tables(tables, cfg)
    write_tables_atomic({cfg.paths.table(n): tables[n] for n in CONTRACT_TABLES})
    manifest = {
        "stage": "ingest",
        "adapter": cfg.dataset.adapter,
        "rows": {n: len(tables[n]) for n in CONTRACT_TABLES},
        "digests": {n: frame_digest(tables[n]) for n in CONTRACT_TABLES},
        "paths": {n: str(cfg.paths.table(n)) for n in CONTRACT_TABLES},
        "validation": [r.summary().splitlines()[0] for r in reports],
    }
    write_stage_manifest(cfg.paths.contract / "ingest_manifest.json", manifest, cfg)
    logger.info("ingested %s", manifest["rows"])
    return manifest


@flow(name="ingest", log_prints=True)
def ingest_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Read the configured dataset, conform it to the contract, validate, write."""
    cfg = get_config(profile, overrides)
    outputs = [cfg.paths.table(t) for t in CONTRACT_TABLES]
    with stage_lock(cfg, "ingest"):
        return cached(ingest_stage, outputs)(cfg)
