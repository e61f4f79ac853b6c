"""The label-budget experiment as a flow: the pipeline once per share of the train
queries' judgments kept, each on a data root of its own (training/label_budget.py says what
is compared; a rerun skips every finished stage of every root)."""
from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.pipeline import pipeline_flow
from flows.runtime import get_config
from relgrade.io import read_parquet
from relgrade.label_budget import budget_stats, visible_judgments
from training.label_budget import FRACTIONS, RESULTS_FILE, fraction_overrides, write


@flow(name="label-budget", log_prints=False)
def label_budget_flow(profile: str = "default", overrides: dict | None = None,
                      fractions: list[float] | None = None, results_file: str | None = str(RESULTS_FILE)) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = get_config(profile, overrides)
    fractions = sorted(set(fractions or FRACTIONS) | {1.0})
    t0 = time.perf_counter()
    budget = {}
    for f in fractions:
        ov = fraction_overrides(cfg, f, overrides)
        logger.info("label budget %.0f%%: the pipeline on %s", 100 * f, ov["data_root"])
        pipeline_flow(profile, ov)
        fc = get_config(profile, ov)
        q, j = read_parquet(fc.paths.table("queries")), read_parquet(fc.paths.table("judgments"))
        budget[f] = budget_stats(j, visible_judgments(j, q, f), q, f)
        logger.info("label budget %.0f%%: %s", 100 * f, budget[f])
    return write(cfg, fractions, budget, time.perf_counter() - t0, results_file)
