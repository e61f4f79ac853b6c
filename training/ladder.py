"""The ladder from the peer recipe to relgrade (``relgrade ladder``): where does relgrade's
supervision lose?

Same base model, sequence length, batch size and budget (the curriculum's examples in
all) for every rung. Each rung changes one thing from the rung before it:

    rung  model                     positives          negatives               loss
    0     hardneg_human             human grade >= 2   mine_hard_negatives     MNRL   (as a user runs it: few triplets)
    1     ladder_1_peer_full        human grade >= 2   mine_hard_negatives     MNRL   (drawn until the budget)
    2     ladder_2_target_pos       relgrade target    mine_hard_negatives     MNRL
    3     ladder_3_level_neg        relgrade target    relgrade levels 4-5     MNRL
    4     ladder_4_margin_mse       relgrade target    relgrade levels 4-5     MarginMSE on the target margin
    5     student                   the curriculum (three stages over the five levels)

and one side rung, ``ladder_h_level_neg`` (human positives with relgrade's level 4-5
negatives), separates "relgrade's negatives" from "relgrade's positives" when rung 2 and
rung 3 move in opposite directions.

Every model is scored by the evaluation (``reports/ladder/``), each rung is compared with
the rung before it and with the peer recipe on the same query resamples, and the table
goes to ``benchmarks/results/ladder.json``. Models already trained are reused.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from relgrade.config import REPO_ROOT, RelgradeConfig
from relgrade.util import write_json_atomic
from training.args import HARDNEG, STUDENT, TRIPLETS, TrainRun, TripletRecipe, hardneg_run, student_run
from training.evaluate import evaluate
from training.index import INDEX_FILE
from training.metrics import paired_comparison
from training.model_card import read_summary
from training.student import train

log = logging.getLogger("training.ladder")

RESULTS_FILE = REPO_ROOT / "benchmarks" / "results" / "ladder.json"


def _rung(cfg: RelgradeConfig, name: str, recipe: TripletRecipe, description: str) -> TrainRun:
    return TrainRun(name, cfg.training.target_column, cfg.paths.model(name), use_curriculum=False, recipe=TRIPLETS,
                    triplets=recipe, description=description)


def ladder_runs(cfg: RelgradeConfig) -> list[tuple[str, TrainRun, str]]:
    """(rung, run, what changed from the rung before) in ladder order; the side rung last."""
    return [
        ("0", hardneg_run(cfg), "the peer recipe as a user runs it"),
        ("1", _rung(cfg, "ladder_1_peer_full", TripletRecipe("human", "mined", "mnrl", fill=True),
                    "peer recipe, positives drawn until the budget is met"),
         "positives drawn until the budget of triplets is met"),
        ("2", _rung(cfg, "ladder_2_target_pos", TripletRecipe("target", "mined", "mnrl", fill=True),
                    "relgrade-target positives, mine_hard_negatives negatives, MNRL"),
         "positives from relgrade's target instead of human grade >= 2"),
        ("3", _rung(cfg, "ladder_3_level_neg", TripletRecipe("target", "levels", "mnrl", fill=True),
                    "relgrade-target positives, level 4-5 negatives, MNRL"),
         "negatives from relgrade's levels 4-5 instead of mine_hard_negatives"),
        ("4", _rung(cfg, "ladder_4_margin_mse", TripletRecipe("target", "levels", "margin_mse", fill=True),
                    "relgrade-target positives, level 4-5 negatives, MarginMSE on the target margin"),
         "MarginMSE on the target margin instead of MNRL"),
        ("5", student_run(cfg), "the curriculum (the relgrade student)"),
        ("h", _rung(cfg, "ladder_h_level_neg", TripletRecipe("human", "levels", "mnrl", fill=True),
                    "human positives, level 4-5 negatives, MNRL"),
         "side rung: rung 1 with relgrade's level 4-5 negatives"),
    ]


def _examples_and_steps(summary: dict) -> tuple[int, int]:
    st = summary.get("stages") or []
    return sum(int(s.get("examples") or 0) for s in st), sum(int(s.get("steps") or 0) for s in st)


def _ensure_trained(cfg: RelgradeConfig, run: TrainRun, reuse: bool, full_catalog: bool) -> None:
    """Train ``run`` unless its folder is there; a folder trained without the catalog
    index (a judged-only ladder) gets its index when the full-catalog ladder needs it."""
    have = reuse and read_summary(run.output_dir) is not None
    if not have:
        train(cfg, run, build_catalog_index=full_catalog)
    elif full_catalog and not (run.output_dir / INDEX_FILE).exists():
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from training.student import index_catalog

        log.info("%s: indexing the catalog", run.name)
        index_catalog(cfg, SentenceTransformer(str(run.output_dir), device="cpu"), run.output_dir)
    else:
        log.info("%s: reusing %s", run.name, run.output_dir)


def run_ladder(cfg: RelgradeConfig, reuse: bool = True, full_catalog: bool = True,
               results_file: str | Path | None = RESULTS_FILE) -> dict:
    """Train the missing rungs and evaluate them together. ``full_catalog=False``: the
    judged-set metrics only (no catalog index per rung: minutes instead of a catalog
    encoding each; recall is left out)."""
    t0 = time.perf_counter()
    rungs = ladder_runs(cfg)
    # the ladder's own rungs first, the train stage's models (usually reused) last
    for _, run, _ in sorted(rungs, key=lambda r: r[1].name in (HARDNEG, STUDENT)):
        _ensure_trained(cfg, run, reuse, full_catalog)
    models = {run.name: {"kind": "trained", "path": run.output_dir} for _, run, _ in rungs}
    models["base"] = {"kind": "base"}
    rep = evaluate(cfg, models, out_dir=cfg.paths.report("ladder"), title="The ladder from the peer recipe to relgrade",
                   update_card=False, full_catalog=full_catalog)
    pq = pd.read_parquet(Path(rep["paths"]["json"]).with_name("per_query.parquet"))
    per_query = {name: g.drop(columns="model").reset_index(drop=True) for name, g in pq.groupby("model", sort=False)}
    rows, prev = [], None
    for rung, run, change in rungs:
        summ = read_summary(run.output_dir) or {}
        ex, steps = _examples_and_steps(summ)
        # the side rung compares with rung 1, the one it changes
        before = "ladder_1_peer_full" if rung == "h" else prev
        rows.append({
            "rung": rung, "model": run.name, "change": change, "description": run.description,
            "examples": ex, "steps": steps, "data": summ.get("data"),
            "metrics": {m: v["all"] for m, v in rep["models"][run.name].items()},
            "vs_previous": ({"model": before, **paired_comparison(per_query[run.name], per_query[before], cfg)}
                            if before else None),
            "vs_peer": (paired_comparison(per_query[run.name], per_query[HARDNEG], cfg) if run.name != HARDNEG else None),
        })
        if rung != "h":
            prev = run.name
    out = {"profile": cfg.profile, "generated_at": rep["generated_at"], "split": rep["split"], "queries": rep["queries"],
           "queries_with_grade0": rep["queries_with_grade0"], "bootstrap": rep["bootstrap"], "ci": rep["ci"],
           "budget": sum(st.max_examples for st in cfg.training.curriculum), "full_catalog": full_catalog, "rungs": rows,
           "base": {m: v["all"] for m, v in rep["models"]["base"].items()}, "report": rep["paths"],
           "elapsed_s": round(time.perf_counter() - t0, 1)}
    from relgrade.numerics import numerics

    out["numerics"] = numerics(cfg)
    if results_file:
        write_json_atomic(Path(results_file), out)
        out["results_file"] = str(results_file)
    log.info("ladder written to %s", results_file or rep["paths"]["json"])
    return out


def table(result: dict) -> str:
    """The ladder as a Markdown table: means with intervals, examples and steps per rung."""
    names = list(result["rungs"][0]["metrics"])
    head = "| rung | model | examples | steps | " + " | ".join(names) + " | vs previous (NDCG@10 g0 diff) |"
    lines = [head, "|" + "---|" * (5 + len(names))]
    for r in result["rungs"]:
        cells = [f"{r['metrics'][m]['mean']:.4f} [{r['metrics'][m]['lo']:.4f}, {r['metrics'][m]['hi']:.4f}]"
                 if r["metrics"][m].get("mean") is not None else "–" for m in names]
        g0 = next((m for m in names if m.endswith("_g0")), None)
        vp = r.get("vs_previous") or {}
        d = vp.get(g0) if g0 else None
        prev = f"{d['diff']:+.4f} [{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]" if d else "–"
        lines.append(f"| {r['rung']} | {r['model']} | {r['examples']} | {r['steps']} | " + " | ".join(cells) + f" | {prev} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m training.ladder: print the table of the saved result
    print(table(json.loads(RESULTS_FILE.read_text())))
