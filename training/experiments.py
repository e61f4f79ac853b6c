"""Baselines, ablations and data scaling as one command (``relgrade experiments``).

1. the student and the click-trained baseline of the train stage (trained here when
   their folders are missing);
2. ablations: ``no_curriculum`` (every stage on all five levels) and ``grades_only``
   (target = teacher expected grade / 3; no prior, no engagement);
3. data scaling: the student recipe on 10% and 30% of the teacher-graded pairs (100% is
   the student itself);
4. step budget: the student and the click-trained baseline again with every stage's
   examples multiplied (``training.budget_multipliers``, default 2x);
5. one evaluation of every model plus the base MiniLM, BM25 and the teacher reference
   (when the grade stage has run) on the held-out human
   grades (same bootstrap resamples for all), written to
   ``<data_root>/reports/experiments/report.{html,json}``, and a compact summary to
   ``benchmarks/results/training_experiments.json``.

Not part of the default pipeline: each extra model costs a training run and a catalog
encoding.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from relgrade.config import REPO_ROOT, RelgradeConfig
from training.args import experiment_runs, experiments_dir, pipeline_runs
from training.evaluate import default_models, evaluate
from training.index import INDEX_FILE
from training.student import read_summary, train

log = logging.getLogger("training.experiments")

RESULTS_FILE = REPO_ROOT / "benchmarks" / "results" / "training_experiments.json"


def run_experiments(cfg: RelgradeConfig, only: list[str] | None = None, reuse: bool = True,
                    results_file: str | Path | None = RESULTS_FILE) -> dict:
    t0 = time.perf_counter()
    runs = pipeline_runs(cfg) + experiment_runs(cfg)
    if only:
        runs = [r for r in runs if r.name in set(only) or r.name in ("student", "click_trained")]
    trained = {}
    for r in runs:
        have = (r.output_dir / INDEX_FILE).exists() and read_summary(r.output_dir) is not None
        if reuse and have:
            log.info("%s: reusing %s", r.name, r.output_dir)
        else:
            train(cfg, r)
        trained[r.name] = r
    models = {name: {"kind": "trained", "path": r.output_dir} for name, r in trained.items()}
    models["base"] = {"kind": "base"}
    models["bm25"] = {"kind": "bm25"}
    # the teacher reference, as in the evaluate stage (left out there when grading has not run)
    models.update({n: spec for n, spec in default_models(cfg).items() if spec["kind"] == "teacher"})
    rep = evaluate(cfg, models, out_dir=experiments_dir(cfg), title="Baselines, ablations and data scaling",
                   update_card=False)
    metrics = {m: {k: v["all"] for k, v in d.items()} for m, d in rep["models"].items()}
    scaling = []
    for r in trained.values():
        if r.name == "student" or r.name.startswith("scaling_"):
            s = read_summary(r.output_dir) or {}
            scaling.append({"model": r.name, "graded_fraction": r.graded_fraction,
                            "graded_rows": (s.get("data") or {}).get("graded_rows"),
                            **{k: v["mean"] for k, v in metrics[r.name].items()}})
    scaling.sort(key=lambda x: x["graded_fraction"])
    # step budget: student / click-trained at each multiplier (1x = the train stage's pair)
    budget = []
    for m in [1.0] + [x for x in cfg.training.budget_multipliers if x != 1.0]:
        a, b = ("student", "click_trained") if m == 1.0 else (f"student_budget_{m:g}x", f"click_trained_budget_{m:g}x")
        if a in metrics and b in metrics:
            row = {"budget_multiplier": m, "student": a, "click_trained": b}
            for k in metrics[a]:
                sa, sb = metrics[a][k]["mean"], metrics[b][k]["mean"]
                row[k] = {"student": sa, "click_trained": sb,
                          "ratio": None if sa is None or not sb else sa / sb}
            budget.append(row)
    summary = {
        "profile": cfg.profile, "generated_at": rep["generated_at"], "split": rep["split"], "queries": rep["queries"],
        "queries_with_grade0": rep["queries_with_grade0"], "bootstrap": rep["bootstrap"],
        "runs": {name: {"description": r.description, "target_column": r.target_column, "use_curriculum": r.use_curriculum,
                        "graded_fraction": r.graded_fraction, "budget_multiplier": r.budget_multiplier}
                 for name, r in trained.items()},
        "metrics": metrics, "by_segment": rep["models"], "comparisons_vs_student": rep["comparisons"],
        "targets": rep["targets"], "data_scaling": scaling, "step_budget": budget, "report": rep["paths"],
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    if results_file:
        p = Path(results_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(summary, indent=1, default=str))
        summary["results_file"] = str(p)
    return summary
