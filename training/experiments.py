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

import numpy as np
import pandas as pd

from relgrade.config import REPO_ROOT, RelgradeConfig
from training.args import CLICK, HARDNEG, STUDENT, experiment_runs, pipeline_runs
from training.evaluate import default_models, evaluate
from training.metrics import check_targets, metric_names, paired_comparison
from training.report import render_html
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
    rep = evaluate(cfg, models, out_dir=cfg.paths.report("experiments"), title="Baselines, ablations and data scaling",
                   update_card=False)
    metrics = {m: {k: v["all"] for k, v in d.items()} for m, d in rep["models"].items()}
    scaling = []
    for r in trained.values():
        if r.name == "student" or r.name.startswith("scaling_"):
            s = read_summary(r.output_dir) or {}
            graded = (s.get("data") or {}).get("graded_rows")
            # how much of the graded pool the step budget actually draws: when it is a
            # small share at every fraction, the runs vary the pool, not the data seen
            seen = sum(int(st.get("examples") or 0) for st in s.get("stages") or [])
            scaling.append({"model": r.name, "graded_fraction": r.graded_fraction, "graded_rows": graded,
                            "examples_seen": seen, "examples_per_graded_row": (seen / graded) if graded else None,
                            **{k: v["mean"] for k, v in metrics[r.name].items()}})
    scaling.sort(key=lambda x: x["graded_fraction"])
    # step budget: student / click-trained at each multiplier (1x = the train stage's pair)
    pairs = []
    for m in [1.0] + [x for x in cfg.training.budget_multipliers if x != 1.0]:
        a, b, c = (STUDENT, CLICK, HARDNEG) if m == 1.0 else tuple(f"{n}_budget_{m:g}x" for n in (STUDENT, CLICK, HARDNEG))
        if a in metrics and b in metrics:
            pairs.append((m, a, b, c if c in metrics else None))
    budget = []
    if pairs:
        pq = pd.read_parquet(Path(rep["paths"]["json"]).with_name("per_query.parquet"))
        per_query = {name: g.drop(columns="model").reset_index(drop=True) for name, g in pq.groupby("model", sort=False)}
        budget = budget_comparison(per_query, pairs, cfg)
        rep["step_budget"] = budget  # the report gains its step-budget section (written below)
    drift = retrieval_drift(cfg, models)
    rep["retrieval_drift"] = drift
    Path(rep["paths"]["json"]).write_text(json.dumps({k: v for k, v in rep.items() if k != "paths"}, indent=1, default=str))
    Path(rep["paths"]["html"]).write_text(render_html(rep), encoding="utf-8")
    summary = {
        "profile": cfg.profile, "generated_at": rep["generated_at"], "split": rep["split"], "queries": rep["queries"],
        "queries_with_grade0": rep["queries_with_grade0"], "bootstrap": rep["bootstrap"],
        "runs": {name: {"description": r.description, "target_column": r.target_column, "use_curriculum": r.use_curriculum,
                        "graded_fraction": r.graded_fraction, "budget_multiplier": r.budget_multiplier}
                 for name, r in trained.items()},
        "metrics": metrics, "by_segment": rep["models"], "comparisons_vs_student": rep["comparisons"],
        "targets": rep["targets"], "data_scaling": scaling, "step_budget": budget, "retrieval_drift": drift,
        "report": rep["paths"],
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    if results_file:
        p = Path(results_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(summary, indent=1, default=str))
        summary["results_file"] = str(p)
    return summary


def budget_comparison(per_query: dict[str, pd.DataFrame], pairs: list[tuple[float, str, str, str | None]],
                      cfg: RelgradeConfig) -> list[dict]:
    """Per step budget ``(multiplier, student run, click-trained run, peer run or None)``:
    the student against its click-trained twin trained with the same budget (paired
    bootstrap ratios and the evaluation targets), against the peer recipe of the same
    budget where it was trained, and against the best click-trained model of *any*
    budget per metric (highest mean, lowest for embarrassing@k), so that a baseline that
    gets worse with more steps cannot flatter the student."""
    names = metric_names(cfg)
    clicks = [b for _, _, b, _ in pairs]
    refs = [o for o in ("base", "bm25") if o in per_query]
    rows = []
    for m, a, b, c in pairs:
        same = paired_comparison(per_query[a], per_query[b], cfg)
        peer = paired_comparison(per_query[a], per_query[c], cfg) if c else {}
        agg = {"comparisons": {b: same, **{o: paired_comparison(per_query[a], per_query[o], cfg) for o in refs}}}
        best = {}
        for mname, col in names.items():
            means = {c: per_query[c][col].mean() for c in clicks}
            means = {c: v for c, v in means.items() if pd.notna(v)}
            if not means:
                continue
            pick = (min if mname.startswith("emb") else max)(means, key=means.get)
            comp = paired_comparison(per_query[a], per_query[pick], cfg).get(mname)
            if comp:
                best[mname] = {"click_trained": pick, **comp}
        rows.append({
            "budget_multiplier": m, "student": a, "click_trained": b, "hardneg_human": c,
            **{mname: {"student": v["student"], "click_trained": v["other"], "ratio": v["ratio"], "ratio_ci": v["ratio_ci"]}
               for mname, v in same.items()},
            "vs_hardneg_human": {mname: {"hardneg_human": v["other"], "ratio": v["ratio"], "ratio_ci": v["ratio_ci"]}
                                 for mname, v in peer.items()},
            "targets": check_targets(agg, cfg, click=b, label=a, click_label=b),
            "vs_best_click_trained": best,
        })
    return rows


def drift_stats(topk: list[set[int]], appeal: np.ndarray, title_chars: np.ndarray) -> dict:
    """Query-independent traits of a model's full-catalog top k, pooled over queries."""
    flat = np.fromiter((i for t in topk for i in t), dtype=np.int64)
    if len(flat) == 0:
        return {"title_appeal_z": None, "title_chars": None, "distinct_items": 0, "distinct_share": None}
    return {"title_appeal_z": float(appeal[flat].mean()), "title_chars": float(title_chars[flat].mean()),
            "distinct_items": int(len(np.unique(flat))), "distinct_share": float(len(np.unique(flat)) / len(appeal))}


def retrieval_drift(cfg: RelgradeConfig, models: dict[str, dict]) -> dict:
    """What each model's full-catalog top k leans toward beyond the query: the
    simulator's title appeal (the one click driver a model can read from the text: brand
    and title length; popularity and price are hidden hashes), the mean title length,
    and how many distinct catalog items all test queries' top k cover together (a model
    that drifts toward query-independent "clicky" items covers fewer). Catalog means for
    reference. Only meaningful when the engagement was simulated (the bundled data)."""
    from relgrade.simulate import item_attributes
    from training.evaluate import load_eval_data, score_base, score_bm25, score_trained

    k = cfg.evaluation.recall_k
    ed = load_eval_data(cfg)
    cat = pd.DataFrame({"item_id": [str(i) for i in ed.item_ids], "title": ed.item_texts})
    appeal = item_attributes(cat, cfg.simulation)["title_appeal"].reindex(cat["item_id"]).to_numpy(dtype=float)
    chars = np.array([len(t) for t in ed.item_texts], dtype=float)
    out = {"k": k, "catalog": {"title_appeal_z": float(appeal.mean()), "title_chars": float(chars.mean()),
                               "items": int(len(appeal))}, "models": {}}
    for name, spec in models.items():
        if spec["kind"] == "trained":
            sc = score_trained(Path(spec["path"]), ed, cfg, k)
        elif spec["kind"] == "base":
            sc = score_base(ed, cfg, k)
        elif spec["kind"] == "bm25":
            sc = score_bm25(ed, cfg, k)
        else:
            continue
        out["models"][name] = drift_stats(sc.topk, appeal, chars)
        log.info("retrieval drift %s: %s", name, out["models"][name])
    return out
