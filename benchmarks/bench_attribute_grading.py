"""The attribute agreement features in the teacher cascade, measured: the grade stage's
own functions run three times on one data root, everything else equal:
``grading.attribute_features`` off, on (the default; the cross-encoders read the same
texts, so these two share their trained checkpoints, and stage 1 and the calibration are
fitted per variant), and on with ``grading.attribute_text`` (the cross-encoders retrain
on titles followed by the agreement text).

Run after the pipeline reached ``grade`` (``relgrade pipeline --until grade``)::

    python benchmarks/bench_attribute_grading.py --profile default

For each variant it reports, into ``benchmarks/results/attribute_grading.json``:

1. the judged test split (human grades of held-out queries): QWK and RMSE of stage 1 and
   of the cascade as published (``relgrade.grading.stage.evaluate``);
2. the union as the cascade grades it (``grade_pairs``, the union's code path) on a
   deterministic sample: the grade mix per best-rank band, the random-pair probe, and
   agreement with the human grade on every union pair of a held-out query that has one,
   and with the blind ratings of unjudged union pairs of dev queries
   (``dataset.blind_ratings_path``): the population the grades are published for, not the
   judged set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from relgrade.config import load_config  # noqa: E402
from relgrade.util import peak_rss_mb, write_json_atomic  # noqa: E402


def _r(x, n=4):
    return None if x is None else round(float(x), n)


def variant(cfg, inp, sample: pd.DataFrame, on: bool, text: bool = False) -> dict:
    from relgrade.grading import stage as S
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.probes import (band_labels, best_rank, blind_agreement, grade_mix, human_grade_of,
                                         judged_agreement, rank_band)

    g = cfg.grading.model_copy(update={"attribute_features": on, "attribute_text": text})
    cfg = cfg.model_copy(update={"grading": g})
    t0 = time.perf_counter()
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    train, dev = S.teacher_pairs(cfg, fz, inp, "train"), S.teacher_pairs(cfg, fz, inp, "dev")
    teachers = [S.train_teacher(cfg, fz, train, k)[0] for k in range(len(g.stages))]
    cal = S.calibrate(cfg, fz, inp, teachers, dev)
    cascade = S.build_cascade(cfg, cal, fz, inp)
    fit_s = time.perf_counter() - t0
    ev = S.evaluate(cfg, fz, inp, cascade, cal, None)
    m = ev["metrics"]
    t1 = time.perf_counter()
    graded = S.grade_pairs(cfg, fz, cascade, sample[["query_id", "item_id"]].reset_index(drop=True), None)
    grade_s = time.perf_counter() - t1
    edges = list(g.probe.rank_bands)
    uni = sample["_uniform"].to_numpy()
    band = rank_band(best_rank(sample[uni]), edges)
    gu = graded[uni].reset_index(drop=True)
    held_out = inp.queries.loc[inp.queries["split"] != "train", "query_id"].astype(str)
    human = human_grade_of(graded, inp.judgments[inp.judgments["query_id"].astype(str).isin(set(held_out))])
    probe = ev["probe"]
    pg = probe["grade"].to_numpy(dtype=int) if probe is not None else np.zeros(0, int)
    stage_share = gu["deciding_stage"].value_counts(normalize=True).sort_index()
    return {
        "attribute_features": on, "attribute_text": text, "stage1_features": len(fz.names), "fit_s": round(fit_s, 1),
        "thresholds": cal.thresholds,
        "test_judged": {k: {"qwk": _r(m[k]["qwk"]), "rmse_grade": _r(m[k]["rmse_grade"]),
                            "binary": _r(m[k].get("binary_agreement", m[k].get("binary")))}
                        for k in ("stage1", "cascade") if k in m},
        "union_sample": {
            "pairs": int(len(sample)), "uniform_pairs": int(uni.sum()), "grade_s": round(grade_s, 1),
            # the uniform part: the union's grade mix as published
            "grade_mix": {k: _r(v) for k, v in gu["grade"].value_counts(normalize=True).sort_index().items()},
            "deciding_stage_share": {str(k): _r(v) for k, v in stage_share.items()},
            "by_best_rank_band": [{kk: (_r(vv) if isinstance(vv, float) else vv) for kk, vv in r.items()}
                                  for r in grade_mix(gu, band, band_labels(edges))],
            "held_out_labelled": {k: (_r(v) if isinstance(v, float) else v)
                                  for k, v in judged_agreement(graded, human, g.positive_grade).items()},
            "blind_rated_unjudged": {k: (_r(v) if isinstance(v, float) else v)
                                     for k, v in ((blind_agreement(cfg, graded) or {}).get("unjudged") or {}).items()},
        },
        "probe_grade_0_share": _r((pg == 0).mean()) if len(pg) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--sample-pairs", type=int, default=40_000, help="unlabelled union pairs graded per variant")
    ap.add_argument("--skip-text", action="store_true", help="skip the attribute-text variant (retrains the cross-encoders)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attribute_grading.json"))
    args = ap.parse_args()
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.profile, overrides={"data_root": args.data_root} if args.data_root else None)
    from relgrade.grading import stage as S
    from relgrade.grading.probes import human_grade_of

    inp = S.load_inputs(cfg)
    u = inp.union
    # every union pair of a held-out query with a human grade, plus a seeded uniform sample
    held_out = set(inp.queries.loc[inp.queries["split"] != "train", "query_id"].astype(str))
    labelled = ~np.isnan(human_grade_of(u, inp.judgments[inp.judgments["query_id"].astype(str).isin(held_out)]))
    rest = u[~labelled].sample(n=min(args.sample_pairs, int((~labelled).sum())), random_state=cfg.grading.seed)
    blind = pd.DataFrame(columns=["query_id", "item_id"])
    if cfg.dataset.blind_ratings_path and cfg.resolve(cfg.dataset.blind_ratings_path).exists():
        blind = pd.read_csv(cfg.resolve(cfg.dataset.blind_ratings_path), dtype={"query_id": str, "item_id": str})
    key = pd.MultiIndex.from_frame(u[["query_id", "item_id"]].astype(str))
    in_blind = key.isin(pd.MultiIndex.from_frame(blind[["query_id", "item_id"]])) & ~labelled
    in_blind &= ~u.index.isin(rest.index)
    sample = pd.concat([u[labelled].assign(_uniform=False), u[in_blind].assign(_uniform=False),
                        rest.assign(_uniform=True)]).reset_index(drop=True)
    doc = {"profile": cfg.profile, "machine": f"{os.cpu_count()} CPUs", "union_pairs": int(len(u)),
           "sample": {"held_out_labelled": int(labelled.sum()), "blind_rated_extra": int(in_blind.sum()),
                      "uniform": int(len(rest))},
           "variants": {}}
    for name, on, text in (("without_attributes", False, False), ("with_attributes", True, False),
                           ("with_attributes_and_text", True, True)):
        if name == "with_attributes_and_text" and args.skip_text:
            continue
        doc["variants"][name] = variant(cfg, inp, sample, on, text)
        write_json_atomic(Path(args.out), doc)
    doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json_atomic(Path(args.out), doc)
    print(json.dumps({k: v["test_judged"] for k, v in doc["variants"].items()}, indent=1))


if __name__ == "__main__":
    main()
