"""Grade flow: the mining union -> teacher cascade (trained on train-split judgments,
calibrated on dev) -> chunked, checkpointed grading of every union pair ->
``relevance_grade_fv`` and the grade-refined ``retrieval_prior_fv`` through the
validation gate -> ``grading/grades.parquet`` -> report ``reports/grading/``.

The task is cached on its inputs (stage_key: config sections, input file digests, code
version) and skipped on rerun while its outputs exist. Inside, trained teachers are
cached by config + data digest under ``models/teachers/`` and finished chunks under
``grading/chunks/<key>/`` are never regraded, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from prefect import flow, get_run_logger, task

from flows.runtime import cached, get_config, retry_io_only, stage_key, write_stage_manifest
from relgrade.config import RelgradeConfig

VIEW = "relevance_grade_fv"
PRIOR_VIEW = "retrieval_prior_fv"
SECTIONS = ["grading", "mining", "simulation"]  # mining + simulation: which union (snapshot)


def _inputs(cfg: RelgradeConfig) -> list:
    from relgrade.grading.run import union_file

    return [cfg.paths.table("catalog"), cfg.paths.table("queries"), cfg.paths.table("judgments"), union_file(cfg)]


def _outputs(cfg: RelgradeConfig) -> list:
    from relgrade.grading.run import grades_path, report_dir

    return [grades_path(cfg), report_dir(cfg) / "report.json", report_dir(cfg) / "report.html",
            cfg.paths.feature_source(VIEW)]


def _key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    if parameters.get("stop_after") is not None:
        return None
    # inputs only: the first run stores its result under the key a rerun looks up; while
    # an output is missing the flow refreshes the entry instead (see grade_flow)
    return stage_key("grade", cfg, SECTIONS, _inputs(cfg))


def run_grading(cfg: RelgradeConfig, stop_after: int | None = None, log: logging.Logger | None = None) -> dict[str, Any]:
    """The whole stage in-process (the task body; tests call it directly too)."""
    from flows.materialize import gate_for
    from relgrade import featurestore as fs
    from relgrade.grading import run as R
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.report import write_report
    from relgrade.io import read_parquet, write_parquet_atomic
    from relgrade.mining.run import peak_rss_mb
    from relgrade.mining.union import to_feature_batch

    log = log or logging.getLogger("relgrade.grading")
    t0 = time.perf_counter()
    inp = R.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    t_feat = time.perf_counter() - t0
    t1 = time.perf_counter()
    teachers = R.train_or_load_teachers(cfg, fz, inp)
    t_teach = time.perf_counter() - t1
    t1 = time.perf_counter()
    cal = R.calibrate(cfg, fz, inp, teachers)
    t_cal = time.perf_counter() - t1
    cascade = R.make_cascade(cfg, teachers, cal)
    t1 = time.perf_counter()
    raw, gstats = R.grade_union(cfg, fz, inp, cascade, cal, stop_after=stop_after)
    t_grade = time.perf_counter() - t1
    grades, refined = R.finish_grades(cfg, inp, raw)
    n = len(grades)
    union_stats = {
        "pairs": n,
        "escalated_to_stage2": float((grades["deciding_stage"] >= 2).mean()),
        "escalated_to_stage3": float((grades["deciding_stage"] >= 3).mean()),
        "deciding_stage_counts": {str(k): int(v) for k, v in grades["deciding_stage"].value_counts().sort_index().items()},
        "grade_counts": {str(k): int(v) for k, v in grades["grade"].value_counts().sort_index().items()},
        "level_counts": {str(k): int(v) for k, v in grades["difficulty_level"].value_counts().sort_index().items()},
        "category_counts": {str(k): int(v) for k, v in grades["category"].value_counts().items()},
        "pairs_per_s": n / max(t_grade, 1e-9),
        **gstats,
    }
    summary = {
        "stage": "grade", "snapshot_ts": inp.snapshot_ts.isoformat(), "union_file": str(inp.union_file),
        "grades": None, "grade_rule": cfg.grading.grade_rule,
        "thresholds": cal.thresholds, "temperatures": cal.temperatures, "costs_per_1k_s": cal.costs_per_1k_s,
        "threshold_search": {k: v for k, v in cal.threshold_search.items() if k != "grid"},
        "metrics": cal.metrics, "union": union_stats,
        "teachers": {
            f"stage{s}": {"version": t.version, "train_s": t.train_s, "trained_now": teachers.trained.get(s)}
            for s, t in ((1, teachers.gbm), (2, teachers.ce2), (3, teachers.ce3))
        } | {"stage2_stack": {"version": teachers.st2.version, "train_s": None, "trained_now": None},
             "stage3_ensemble": {"version": teachers.ens.version, "train_s": None, "trained_now": None}},
        "llm_judge": {"enabled": cfg.grading.llm_judge.enabled, "failed_pairs": gstats.get("llm_failed", 0)},
        "timings_s": {"features": t_feat, "teachers": t_teach, "calibration": t_cal, "grading": t_grade},
        "peak_rss_mb": peak_rss_mb(),
    }
    # the report first (it is evidence, not a contract), then free the models and the
    # feature matrices: Feast's online materialization of ~2M rows peaks at ~15-18 GB
    files = write_report(R.report_dir(cfg), summary, cal.reliability, grades, inp.queries, inp.catalog)
    summary["report"] = {k: str(v) for k, v in files.items()}
    snapshot_ts = inp.snapshot_ts
    del fz, teachers, cascade, raw, inp
    import gc

    gc.collect()
    # gate + publish both views before the grades file lands (a rejected batch lands nowhere)
    t1 = time.perf_counter()
    pub = fs.publish(cfg, VIEW, R.to_grade_batch(grades), gate_for(cfg, VIEW))
    log.info("published %s: %d rows in %.0fs", VIEW, pub["rows"], time.perf_counter() - t1)
    pub_prior = fs.publish(cfg, PRIOR_VIEW, to_feature_batch(refined, snapshot_ts), gate_for(cfg, PRIOR_VIEW))
    t_pub = time.perf_counter() - t1
    if cal.test_scores is not None:  # evidence for the evaluation (the teacher as a judged-set ranker)
        write_parquet_atomic(cal.test_scores, R.test_scores_path(cfg))
    path = write_parquet_atomic(grades, R.grades_path(cfg))
    summary["grades"] = str(path)
    summary["published"] = {VIEW: pub, PRIOR_VIEW: pub_prior}
    summary["timings_s"].update(publish=t_pub, total=time.perf_counter() - t0)
    summary["peak_rss_mb"] = peak_rss_mb()
    files = write_report(R.report_dir(cfg), summary, cal.reliability, grades, read_parquet(cfg.paths.table("queries")),
                         read_parquet(cfg.paths.table("catalog")))
    write_stage_manifest(R.grading_dir(cfg) / "manifest.json", json.loads(json.dumps(summary, default=float)))
    c = cal.metrics["cascade"]
    log.info("graded %d pairs in %.0fs (stage 2: %.1f%%, stage 3: %.1f%%); test QWK %.4f, RMSE %.4f; report %s",
             n, summary["timings_s"]["total"], 100 * union_stats["escalated_to_stage2"],
             100 * union_stats["escalated_to_stage3"], c["qwk"], c["rmse_raw"], files["html"])
    return summary


@task(name="grade-union", cache_key_fn=_key, persist_result=True, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_io_only)
def grade_stage(cfg: RelgradeConfig, stop_after: int | None = None) -> dict[str, Any]:
    """Teachers -> calibration -> chunked cascade over the union -> gated publish -> report.
    A retry after an I/O error reuses the cached teachers and finished chunks."""
    return run_grading(cfg, stop_after, get_run_logger())


@flow(name="grade", log_prints=True)
def grade_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Grade every mined (query, item) pair with the calibrated teacher cascade and
    publish relevance_grade_fv (plus the grade-refined retrieval_prior_fv)."""
    cfg = get_config(profile, overrides)
    return cached(grade_stage, _outputs(cfg))(cfg)
