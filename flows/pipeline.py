"""The pipeline flow: every stage in order (docs/architecture.md). Each stage is cached
on its inputs, so rerunning the pipeline skips finished work and gives the same result."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.assemble import assemble_flow
from flows.attributes import attributes_flow
from flows.evaluate import evaluate_flow
from flows.grade import grade_flow
from flows.ingest import ingest_flow
from flows.materialize import materialize_flow
from flows.mine import mine_flow
from flows.runtime import get_config
from flows.simulate import simulate_flow
from flows.train import train_flow

from flows.stages import STAGES  # noqa: E402  (re-exported)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(profile: str = "default", overrides: dict | None = None, until: str = "evaluate",
                  config_file: str | None = None) -> dict[str, Any]:
    """Run the stages in order, up to and including ``until``. ``config_file``: your own
    config (as ``relgrade --config``; a deployment passes it as a parameter)."""
    import os

    if until not in STAGES:
        raise ValueError(f"until must be one of {STAGES}, got {until!r}")
    if config_file:
        os.environ["RELGRADE_CONFIG"] = str(config_file)
    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    flows = {
        "ingest": ingest_flow,
        "simulate": simulate_flow,
        "materialize": materialize_flow,
        "mine": mine_flow,
        "attributes": attributes_flow,
        "grade": grade_flow,
        "assemble": assemble_flow,
        "train": train_flow,
        "evaluate": evaluate_flow,
    }
    from relgrade.numerics import numerics
    from relgrade.util import Stopwatch, peak_rss_mb, utc_now, write_json_atomic

    result: dict[str, Any] = {}
    clock = Stopwatch()
    for stage in STAGES[: STAGES.index(until) + 1]:
        with clock(stage):
            result[stage] = flows[stage](profile, overrides)
    p = cfg.paths
    write_json_atomic(p.pipeline_run, {"profile": cfg.profile, "finished_at": utc_now().isoformat(timespec="seconds"),
                                       "stage_seconds": {k: round(v, 1) for k, v in clock.laps.items()},
                                       "total_seconds": round(clock.total, 1),
                                       "peak_rss_mb": round(peak_rss_mb(), 1), "until": until,
                                       "numerics": numerics(cfg)})
    result["locations"] = {
        "feature_store": str(p.feast / "feature_store.yaml"),
        "offline_features": str(p.features),
        "data_docs": str(p.data_docs / "index.html"),
        "validation_pages": str(p.validation_pages / "index.html"),
        "reports": str(p.reports),
        "student_model": str(p.model("student")),
        "logs": str(p.logs),
        "prefect_home": str(p.prefect_home),
    }
    logger.info("pipeline done: %s", result["locations"])
    return result
