"""The pipeline flow: every stage that exists, in order. Each stage is cached on its
inputs, so rerunning the pipeline skips finished work and gives the same result."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.ingest import ingest_flow
from flows.materialize import materialize_flow
from flows.runtime import get_config
from flows.simulate import simulate_flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    result = {
        "ingest": ingest_flow(profile, overrides),
        "simulate": simulate_flow(profile, overrides),
        "materialize": materialize_flow(profile, overrides),
    }
    p = cfg.paths
    result["locations"] = {
        "feature_store": str(p.feast / "feature_store.yaml"),
        "offline_features": str(p.features),
        "data_docs": str(p.data_docs / "index.html"),
        "reports": str(p.reports),
        "logs": str(p.logs),
        "prefect_home": str(p.prefect_home),
    }
    logger.info("pipeline done: %s", result["locations"])
    return result
