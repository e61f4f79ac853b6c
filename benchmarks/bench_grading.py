"""Benchmark: the grading stage's teachers and cascade on one data root whose grade
stage has run (teachers cached under models/teachers/).

* pairs/s of stage 1 (features + GBM), stage 2 (3-layer cross-encoder), stage 3
  (6-layer cross-encoder + ensemble) and the whole cascade (union chunk, with the
  configured escalation caps), medians over repetitions;
* cross-encoder inference: stock ``CrossEncoder.predict`` (batch 32) against the fp32
  fast path (tokenize once, length-sorted batches of ``infer_batch_size``, inference
  mode), with 1 and 2 threads, in the same run: same scores within 1e-4 absolute on
  logits; and the int8 dynamic-quantized path (``grading.ce_int8``) against the fp32 fast
  path: speed, largest logit difference, share of pairs whose grade changes;
* teacher training times (from the cached teachers' metadata) and peak RSS.

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
    from relgrade.grading import run as R
    from relgrade.grading.calibration import decide_grade
    from relgrade.grading.features import PairFeaturizer
    from relgrade.mining.run import peak_rss_mb

    cfg = load_config(a.profile, overrides={"data_root": a.data_root} if a.data_root else None)
    g = cfg.grading
    inp = R.load_inputs(cfg)
    t0 = time.perf_counter()
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    fit_s = time.perf_counter() - t0
    t = R.train_or_load_teachers(cfg, fz, inp)
    cal = R.calibrate(cfg, fz, inp, t)
    rng = np.random.default_rng(0)
    u = inp.union
    res: dict = {"profile": a.profile, "data_root": str(cfg.paths.root), "union_pairs": len(u), "reps": a.reps,
                 "threads_config": g.threads, "featurizer_fit_s": fit_s, "tolerance_abs_logit": TOL}

    # ---- stage 1
    s1 = u.iloc[rng.choice(len(u), min(a.stage1_pairs, len(u)), replace=False)].reset_index(drop=True)
    sec, _ = _median_time(lambda: t.gbm.logits_from_features(fz.transform(s1)), a.reps)
    res["stage1_pairs_per_s"] = len(s1) / sec
    # ---- cross-encoders
    sub = u.iloc[rng.choice(len(u), min(a.pairs, len(u)), replace=False)].reset_index(drop=True)
    q, it = fz.texts(sub)
    ce_rows = {}
    for name, teacher in (("stage2", t.ce2), ("stage3_ce", t.ce3)):
        rows = {}
        for threads in (1, 2):
            teacher.threads = threads
            torch.set_num_threads(threads)
            sp, plain = _median_time(lambda: teacher.logits_plain(q, it), a.reps)
            fp32 = teacher.ce
            sf, fast = _median_time(lambda: teacher.logits_texts(q, it, model=fp32), a.reps)
            rows[f"threads_{threads}"] = {
                "plain_predict_pairs_per_s": len(q) / sp, "fast_path_pairs_per_s": len(q) / sf, "speedup": sp / sf,
                "max_abs_logit_diff": float(np.abs(plain - fast).max()), "within_tolerance": bool(np.abs(plain - fast).max() <= TOL),
            }
        # int8 dynamic quantization of the Linear layers (a copy; same fast path)
        teacher.threads = g.threads
        torch.set_num_threads(g.threads)
        fp32 = teacher.ce
        qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
        sf, fast = _median_time(lambda: teacher.logits_texts(q, it, model=fp32), a.reps)
        si, i8 = _median_time(lambda: teacher.logits_texts(q, it, model=qmodel), a.reps)
        p_fast, p_i8 = teacher.proba_from_logits(fast), teacher.proba_from_logits(i8)
        rows["int8_dynamic"] = {
            "pairs_per_s": len(q) / si, "speedup_vs_fast_fp32": sf / si,
            "max_abs_logit_diff": float(np.abs(i8 - fast).max()),
            "grade_changed_share": float((decide_grade(p_fast, g.grade_rule) != decide_grade(p_i8, g.grade_rule)).mean()),
            "used": bool(g.ce_int8),  # grading.ce_int8: the path the cascade runs
        }
        ce_rows[name] = rows
    res["cross_encoders"] = ce_rows
    res["stage2_pairs_per_s"] = ce_rows["stage2"][f"threads_{g.threads}"]["fast_path_pairs_per_s"]
    ce3 = ce_rows["stage3_ce"][f"threads_{g.threads}"]["fast_path_pairs_per_s"]
    # stage 3 alone pays stage 1 + stage 2 + the third cross-encoder
    res["stage3_alone_pairs_per_s"] = 1.0 / (1 / res["stage1_pairs_per_s"] + 1 / res["stage2_pairs_per_s"] + 1 / ce3)
    # ---- cascade on one union chunk with the configured caps
    cas = R.make_cascade(cfg, t, cal)
    chunk = u.iloc[: min(len(u), g.chunk_size)].reset_index(drop=True)
    caps = (g.max_share_stage2, g.max_share_stage3, None)
    sec, out = _median_time(lambda: cas.grade(chunk, fz, caps), a.reps)
    res["cascade_union_chunk"] = {"pairs": len(chunk), "pairs_per_s": len(chunk) / sec,
                                  "escalated_to_stage2": float((out.stage >= 2).mean()),
                                  "escalated_to_stage3": float((out.stage >= 3).mean())}
    res["cascade_uncapped_test_compute_share_of_stage3"] = cal.metrics["cascade"]["compute_share_of_stage3"]
    res["teacher_training_s"] = {f"stage{s}": tt.train_s for s, tt in ((1, t.gbm), (2, t.ce2), (3, t.ce3))}
    res["teacher_steps"] = {"stage2": g.ce_steps, "stage3": g.ce3_steps, "batch_size": g.ce_batch_size}
    res["peak_rss_mb"] = peak_rss_mb()
    res["load_average_1m"] = os.getloadavg()[0]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
