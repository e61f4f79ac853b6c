"""Evaluate flow: every model (student, click-trained, base MiniLM, BM25) on the
held-out human grades -> <data_root>/reports/evaluation/report.{html,json}."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.runtime import cached, get_config, stage_key, stage_lock
from relgrade.config import RelgradeConfig
from training.evaluate import default_models, evaluate
from training.index import INDEX_FILE


def _key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]

    inputs = [*(cfg.paths.table(t) for t in ("catalog", "queries", "judgments")), cfg.paths.test_scores]
    for spec in default_models(cfg).values():
        if spec["kind"] == "trained":
            inputs += [spec["path"] / "model.safetensors", spec["path"] / INDEX_FILE]
    return stage_key("evaluate", cfg, ["evaluation", "training", "mining"], inputs)


@task(name="evaluate", cache_key_fn=_key, persist_result=True)
def evaluate_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    logger = get_run_logger()
    rep = evaluate(cfg)
    summary = {
        "stage": "evaluate", "queries": rep["queries"], "report": rep["paths"],
        "metrics": {m: {k: v["all"]["mean"] for k, v in d.items()} for m, d in rep["models"].items()},
        "targets": rep["targets"],
    }
    for t in rep["targets"]:
        logger.info("target %s: %s (goal %s) -> %s", t["target"], t["measured"], t["goal"], "met" if t["met"] else "MISSED")
    return summary


@flow(name="evaluate", log_prints=True)
def evaluate_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Evaluate every model on the held-out human grades and write the report."""
    cfg = get_config(profile, overrides)
    with stage_lock(cfg, "evaluate"):
        summary = cached(evaluate_stage, [cfg.paths.report("evaluation") / "report.json", cfg.paths.report("evaluation") / "report.html"])(cfg)
    _artifacts(summary)
    return summary


def _artifacts(summary: dict[str, Any]) -> None:
    """``evaluate-metrics`` (every model's mean metrics on the held-out queries) and
    ``evaluate-report`` (the targets, met or missed, and where the report is)."""
    from flows.runtime import stage_artifacts

    table = [{"model": m, **vals} for m, vals in summary["metrics"].items()]
    md = "\n".join(f"- {t['target']}: {t['measured']} (goal {t['goal']}): {'met' if t['met'] else 'MISSED'}"
                   for t in summary["targets"])
    stage_artifacts("evaluate", table, summary["report"], md)
