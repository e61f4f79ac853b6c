"""Grade flow: the mining union -> teachers (train judgments + negatives) -> calibration
and budget thresholds (dev) -> evaluation (test, probe) -> chunked, checkpointed grading
of every union pair -> ``relevance_grade_fv`` and the grade-refined
``retrieval_prior_fv`` through the validation gate, with ``grading/grades.parquet``, as
one transaction -> report ``reports/grading/``.

Logic: ``relgrade/grading/stage.py``. The stage is skipped on rerun while its manifest
holds the same key (config sections, input digests, code version) and every output
exists. Inside, trained teachers are cached by settings + data digest under
``models/teachers/`` and finished chunks under ``grading/chunks/<key>/`` are never
regraded, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import gc
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import transaction

from flows.runtime import finish_stage, get_config, io_task, stage_artifacts, stage_done, stage_key, stage_lock
from flows.tasks import publish_view, write_outputs
from relgrade.config import RelgradeConfig
from relgrade.views import RELEVANCE_GRADE_FV, RETRIEVAL_PRIOR_FV

VIEW = RELEVANCE_GRADE_FV
PRIOR_VIEW = RETRIEVAL_PRIOR_FV
SECTIONS = ["grading", "mining", "simulation"]  # mining + simulation: which union (snapshot)


def _inputs(cfg: RelgradeConfig) -> list:
    p = cfg.paths
    attrs = [p.query_attributes, p.tagger / "lexicon.json"] if (cfg.grading.attribute_features
                                                                   or cfg.grading.attribute_text) else []
    return [p.table("catalog"), p.table("queries"), p.table("judgments"), p.union(cfg.snapshot_ts), *attrs]


def _outputs(cfg: RelgradeConfig) -> list:
    p = cfg.paths
    return [p.grades, p.test_scores, p.report("grading") / "report.json", p.report("grading") / "report.html",
            p.feature_source(VIEW)]


@task(name="load-and-featurize", cache_policy=NO_CACHE)
def prepare_task(cfg: RelgradeConfig):
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.stage import load_inputs, teacher_pairs

    inp = load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    return inp, fz, teacher_pairs(cfg, fz, inp, "train"), teacher_pairs(cfg, fz, inp, "dev")


@task(name="train-teacher", task_run_name="train-{name}", cache_policy=NO_CACHE)
def train_teacher_task(cfg: RelgradeConfig, fz, train, k: int, name: str):
    from relgrade.grading.stage import train_teacher

    return train_teacher(cfg, fz, train, k)


@task(name="calibrate-and-fit-thresholds", cache_policy=NO_CACHE)
def calibrate_task(cfg: RelgradeConfig, fz, inp, teachers, dev):
    from relgrade.grading.stage import calibrate

    return calibrate(cfg, fz, inp, teachers, dev)


@task(name="evaluate-on-test-and-probe", cache_policy=NO_CACHE)
def evaluate_task(cfg: RelgradeConfig, fz, inp, cascade, cal, prior):
    from relgrade.grading.stage import evaluate

    return evaluate(cfg, fz, inp, cascade, cal, prior)


@task(name="grade-union-chunks", cache_policy=NO_CACHE)
def grade_union_task(cfg: RelgradeConfig, fz, inp, cascade, cal, stop_after: int | None):
    from relgrade.grading.stage import grade_union

    return grade_union(cfg, fz, inp, cascade, cal, stop_after=stop_after)


@task(name="grading-report", cache_policy=NO_CACHE)
def report_task(cfg: RelgradeConfig, summary: dict, ev: dict, grades, union, queries, catalog) -> dict:
    from relgrade.grading.report import write_report

    return write_report(cfg.paths.report("grading"), summary, ev, grades, union, queries, catalog)


def train_teachers(cfg: RelgradeConfig, fz, train) -> tuple[list, dict]:
    """Every stage of ``grading.stages`` as a task, in order; (teachers, what each did)."""
    teachers, trained = [], {}
    for k, s in enumerate(cfg.grading.stages):
        t1 = time.perf_counter()
        t, now = train_teacher_task(cfg, fz, train, k, s.name)
        teachers.append(t)
        trained[s.name] = {"version": t.version, "trained_now": now, "train_s": t.train_s,
                           "seconds": time.perf_counter() - t1}
    return teachers, trained


def publish(cfg: RelgradeConfig, grades, refined, evidence, snapshot, test_scores) -> dict:
    """Both views and the grade files land together, or none does (one transaction)."""
    from relgrade.grading.stage import to_grade_batch
    from relgrade.mining.union import to_feature_batch

    with transaction():
        pub = io_task(publish_view, cfg)(cfg, VIEW, to_grade_batch(grades), evidence=evidence.for_gate(grades))
        pub_prior = io_task(publish_view, cfg)(cfg, PRIOR_VIEW, to_feature_batch(refined, snapshot))
        write_outputs(cfg, {cfg.paths.grades: grades, cfg.paths.test_scores: test_scores})
    return {VIEW: pub, PRIOR_VIEW: pub_prior}


def run_grading(cfg: RelgradeConfig, stop_after: int | None = None) -> dict[str, Any]:
    """The stage's tasks in order; returns the manifest."""
    from relgrade.grading import stage as S
    from relgrade.grading.probes import union_evidence
    from relgrade.util import Stopwatch, peak_rss_mb

    clock = Stopwatch()
    with clock("prepare"):
        inp, fz, train, dev = io_task(prepare_task, cfg)(cfg)
    with clock("teachers"):
        teachers, trained = train_teachers(cfg, fz, train)
    with clock("calibration"):
        cal = calibrate_task(cfg, fz, inp, teachers, dev)
        cascade = S.build_cascade(cfg, cal, fz, inp)
    with clock("grading"):
        raw, gstats = io_task(grade_union_task, cfg)(cfg, fz, inp, cascade, cal, stop_after)
    prior = S.estimate_prior(cfg, raw, cal)
    with clock("evaluation"):
        ev = evaluate_task(cfg, fz, inp, cascade, cal, prior)
    grades, refined = S.finish_grades(cfg, inp, raw, prior)
    evidence = union_evidence(cfg, inp, grades, ev["probe"])
    summary = S.summarize(cfg, inp, cal, ev, grades, gstats, trained, prior, evidence)
    summary["cascade_dir"] = str(S.save_cascade(cfg, cal, prior))
    del fz, teachers, cascade, raw, train, dev
    gc.collect()  # Feast's online writes of ~2M rows need the memory the models held
    with clock("publish"):
        summary["published"] = publish(cfg, grades, refined, evidence, inp.snapshot_ts, ev["test_scores"])
    summary["timings_s"] = {**clock.laps, "total": clock.total}
    summary["peak_rss_mb"] = peak_rss_mb()
    summary["report"] = report_task(cfg, summary, ev, grades, inp.union, inp.queries, inp.catalog)
    c = summary["metrics"]["cascade"]
    get_run_logger().info("graded %d pairs in %.0fs; test (judged population) QWK %.4f, RMSE %.4f; random-pair "
                          "probe %.1f%% grade 0; report %s", len(grades), clock.total, c["qwk"],
                          c.get("rmse_raw") or c["rmse_grade"], 100 * summary["probe"]["grade_0_share"],
                          summary["report"]["html"])
    return summary


@flow(name="grade", log_prints=True)
def grade_flow(profile: str = "default", overrides: dict | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Grade every mined (query, item) pair with the calibrated teacher cascade and
    publish relevance_grade_fv (plus the grade-refined retrieval_prior_fv)."""
    cfg = get_config(profile, overrides)
    with stage_lock(cfg, "grade"):
        key = stage_key("grade", cfg, SECTIONS, _inputs(cfg))
        manifest = cfg.paths.grading / "manifest.json"
        done = stage_done(manifest, key, _outputs(cfg), cfg, [VIEW, PRIOR_VIEW]) if stop_after is None else None
        if done is not None:
            return done
        summary = run_grading(cfg, stop_after)
        stage_artifacts("grade", summary.pop("artifact_table"), summary["report"])
        summary.pop("calibration_grid", None)
        return finish_stage(manifest, summary, key, cfg, [VIEW, PRIOR_VIEW])
