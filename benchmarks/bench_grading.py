"""Benchmark: the grading stage's teachers and cascade on one data root whose grade
stage has run (teachers cached under models/teachers/).

* pairs/s of stage 1 (features + GBM) and of each cross-encoder stage, medians over
  repetitions, against each stage's modelled cost (``cost_s_per_million`` in the config,
  the numbers the budgeted thresholds assume);
* cross-encoder inference: stock ``CrossEncoder.predict`` (batch 32) against the fp32
  fast path (tokenize once, length-sorted batches of ``infer_batch_size``, inference
  mode), with 1 and 2 threads, in the same run: same scores within 1e-4 absolute on
  logits; and the int8 dynamic-quantized path against the fp32 fast path: speed,
  largest logit difference, share of pairs whose grade changes;
* the cascade at the configured budget on one union chunk: pairs/s and the share of
  pairs reaching each stage;
* the dev quality-against-compute curve of the threshold search (its Pareto frontier and
  the chosen point), the teacher training times and the grade stage's peak RSS (both
  from the stage's manifest).

    .venv/bin/python benchmarks/bench_grading.py --profile quick --data-root /tmp/gq [--pairs 1000] [--reps 3]

Writes benchmarks/results/grading.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TOL = 1e-4


def _median_time(fn, reps: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--pairs", type=int, default=1000, help="pairs per cross-encoder timing")
    ap.add_argument("--stage1-pairs", type=int, default=50000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "grading.json"))
    a = ap.parse_args()

    import torch

    from relgrade.config import load_config
    from relgrade.grading import stage as S
    from relgrade.grading.calibration import decide_grade
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.label import load_cascade
    from relgrade.util import peak_rss_mb

    cfg = load_config(a.profile, overrides={"data_root": a.data_root} if a.data_root else None)
    g = cfg.grading
    manifest = json.loads((cfg.paths.grading / "manifest.json").read_text())
    inp = S.load_inputs(cfg)
    t0 = time.perf_counter()
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    fit_s = time.perf_counter() - t0
    cascade, prior, _ = load_cascade(cfg)
    teachers = cascade.teachers
    rng = np.random.default_rng(0)
    u = inp.union
    res: dict = {"profile": a.profile, "data_root": str(cfg.paths.root), "union_pairs": len(u), "reps": a.reps,
                 "threads_config": g.threads, "featurizer_fit_s": fit_s, "tolerance_abs_logit": TOL,
                 "machine": {"cpus": os.cpu_count(), "load_average_1m_start": os.getloadavg()[0]}}
    # ---- stage 1
    s1 = u.iloc[rng.choice(len(u), min(a.stage1_pairs, len(u)), replace=False)].reset_index(drop=True)
    sec, _ = _median_time(lambda: teachers[0].logits_from_features(fz.transform(s1)), a.reps)
    stages = {g.stages[0].name: {"pairs_per_s": len(s1) / sec, "s_per_million": 1e6 * sec / len(s1),
                                 "modelled_s_per_million": g.stages[0].cost_s_per_million}}
    # ---- cross-encoders
    sub = u.iloc[rng.choice(len(u), min(a.pairs, len(u)), replace=False)].reset_index(drop=True)
    q, it = fz.texts(sub)
    for s_cfg, teacher in zip(g.stages[1:], teachers[1:]):
        rows = {}
        fp32 = teacher.ce
        for threads in (1, 2):
            teacher.threads = threads
            torch.set_num_threads(threads)
            sp, plain = _median_time(lambda: teacher.logits_plain(q, it), a.reps)
            sf, fast = _median_time(lambda: teacher.logits_texts(q, it, model=fp32), a.reps)
            rows[f"threads_{threads}"] = {
                "plain_predict_pairs_per_s": len(q) / sp, "fast_path_pairs_per_s": len(q) / sf, "speedup": sp / sf,
                "max_abs_logit_diff": float(np.abs(plain - fast).max()),
                "within_tolerance": bool(np.abs(plain - fast).max() <= TOL)}
        teacher.threads = g.threads
        torch.set_num_threads(g.threads)
        qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
        sf, fast = _median_time(lambda: teacher.logits_texts(q, it, model=fp32), a.reps)
        si, i8 = _median_time(lambda: teacher.logits_texts(q, it, model=qmodel), a.reps)
        p_fast, p_i8 = teacher.proba_from_logits(fast), teacher.proba_from_logits(i8)
        rows["int8_dynamic"] = {
            "pairs_per_s": len(q) / si, "speedup_vs_fast_fp32": sf / si,
            "max_abs_logit_diff": float(np.abs(i8 - fast).max()),
            "grade_changed_share": float((decide_grade(p_fast, g.grade_rule) != decide_grade(p_i8, g.grade_rule)).mean()),
            "used": bool(s_cfg.int8)}
        used = rows["int8_dynamic"]["pairs_per_s"] if s_cfg.int8 else rows[f"threads_{g.threads}"]["fast_path_pairs_per_s"]
        stages[s_cfg.name] = {"pairs_per_s": used, "s_per_million": 1e6 / used,
                              "modelled_s_per_million": s_cfg.cost_s_per_million, "inference": rows,
                              "layers": teacher.layers, "max_seq_length": teacher.max_seq_length}
    res["stages"] = stages
    # ---- the cascade at the configured budget on one union chunk
    chunk = u.iloc[: min(len(u), g.chunk_size)].reset_index(drop=True)
    sec, out = _median_time(lambda: cascade.grade(chunk, fz, g.max_share), a.reps)
    res["cascade_union_chunk"] = {"pairs": len(chunk), "pairs_per_s": len(chunk) / sec,
                                  "s_per_million": 1e6 * sec / len(chunk),
                                  "reach_share": {str(k): float((out.stage >= k).mean()) for k in range(1, len(teachers) + 1)},
                                  "budget_s_per_million": g.compute_budget_s_per_million}
    res["quality_per_compute"] = manifest["budget_curve"]
    res["teacher_training_s"] = {k: v.get("train_s") for k, v in manifest["teachers"].items()}
    res["grade_stage"] = {"timings_s": manifest["timings_s"], "peak_rss_mb": manifest["peak_rss_mb"],
                          "union_measured_s_per_million": manifest["union"]["measured_s_per_million"]}
    res["peak_rss_mb_benchmark"] = peak_rss_mb()
    res["machine"]["load_average_1m_end"] = os.getloadavg()[0]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: v for k, v in res.items() if k != "quality_per_compute"}, indent=1, default=float))


if __name__ == "__main__":
    main()
