"""The attributes stage on a data root, measured: ``python benchmarks/bench_attributes.py
--profile default`` (after ``relgrade ingest``) writes ``benchmarks/results/attributes.json``.

1. The stage itself (``relgrade.attributes.stage.run``): lexicon, weak labels, tagger
   training time, tagging throughput (queries/s) and span P/R/F1 per type on the hand
   gold set for the tagger, the weak labels and the dictionary baseline.
2. The attribute agreement features against human grades, on the test split's judged
   pairs: the mean human grade per status (match / silent / contradict) of each type.
3. A stage-1 ablation on judged pairs: the grading stage-1 content features
   (``relgrade.grading.features``) with and without the agreement features, a gradient
   boosted classifier with the stage-1 GBM's settings fitted on train-split judgments and
   scored on test-split judgments (QWK of the argmax grade, RMSE of the expected grade).
   This is not the published cascade (no negatives, no calibration): the cascade's
   numbers, with and without the features, come from ``benchmarks/bench_attribute_grading.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from relgrade.config import load_config  # noqa: E402
from relgrade.io import read_parquet  # noqa: E402
from relgrade.util import peak_rss_mb, write_json_atomic  # noqa: E402


def agreement_vs_humans(cfg, lex) -> tuple[dict, "object"]:
    from relgrade.attributes.agreement import FEATURES, AttributeAgreement

    p = cfg.paths
    catalog, queries, judg = (read_parquet(p.table(t)) for t in ("catalog", "queries", "judgments"))
    ag = AttributeAgreement(lex, catalog, read_parquet(p.query_attributes))
    test = judg[judg["query_id"].isin(queries.loc[queries["split"] == "test", "query_id"])]
    X = pd.DataFrame(ag.features(test), columns=FEATURES)
    X["grade"] = test["grade"].to_numpy()
    out = {"pairs": int(len(test))}
    for f in [c for c in FEATURES if c.endswith("_agree")]:
        rows = {}
        for status, name in ((1, "match"), (0, "silent"), (-1, "contradict")):
            g = X.loc[X[f] == status, "grade"]
            rows[name] = {"pairs": int(len(g)), "mean_grade": round(float(g.mean()), 4) if len(g) else None,
                          "share_grade_0_1": round(float((g <= 1).mean()), 4) if len(g) else None}
        out[f] = rows
    return out, ag


def stage1_ablation(cfg, ag) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import cohen_kappa_score

    from relgrade.attributes.agreement import FEATURES as AF
    from relgrade.grading.features import PairFeaturizer

    p = cfg.paths
    catalog, queries, judg = (read_parquet(p.table(t)) for t in ("catalog", "queries", "judgments"))
    t0 = time.perf_counter()
    # the content features alone; the agreement columns are added below from ``ag``
    base_cfg = cfg.model_copy(update={"grading": cfg.grading.model_copy(update={"attribute_features": False})})
    fz = PairFeaturizer(base_cfg, catalog, queries)
    fit_s = time.perf_counter() - t0
    split = judg["query_id"].map(queries.set_index("query_id")["split"])
    sets = {s: judg[split == s].reset_index(drop=True) for s in ("train", "test")}
    base = {s: fz.transform(d) for s, d in sets.items()}
    attr = {s: ag.features(d) for s, d in sets.items()}
    gbm = cfg.grading.stages[0]
    res = {"featurizer_fit_s": round(fit_s, 1), "train_pairs": int(len(sets["train"])),
           "test_pairs": int(len(sets["test"])), "stage1_features": fz.names, "agreement_features": AF}
    for name, X in (("content_features", base), ("content_plus_agreement", {s: np.hstack([base[s], attr[s]])
                                                                            for s in base})):
        clf = HistGradientBoostingClassifier(max_iter=gbm.max_iter, learning_rate=gbm.learning_rate,
                                             max_leaf_nodes=gbm.max_leaf_nodes, random_state=cfg.grading.seed)
        clf.fit(X["train"], sets["train"]["grade"].to_numpy())
        P = clf.predict_proba(X["test"])
        y = sets["test"]["grade"].to_numpy()
        expected = P @ clf.classes_
        res[name] = {"qwk": round(float(cohen_kappa_score(y, clf.classes_[P.argmax(1)], weights="quadratic")), 4),
                     "rmse": round(float(np.sqrt(np.mean((expected - y) ** 2))), 4)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-gold", action="store_true", help="train and tag without the gold set (score it later)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attributes.json"))
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--gold-only", action="store_true",
                    help="score the saved tagger on the gold set and update that part of --out")
    args = ap.parse_args()
    import logging
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ov = {"data_root": args.data_root} if args.data_root else {}
    if args.no_gold:
        ov["attributes"] = {"gold_path": None}
    cfg = load_config(args.profile, overrides=ov or None)
    from relgrade.attributes import stage as S
    from relgrade.attributes.lexicon import Lexicon

    if args.gold_only:
        from relgrade.attributes.tagger import QueryTagger
        from relgrade.config import resolve_path

        tagger = QueryTagger.load(cfg.paths.tagger)
        gold = S.load_gold(resolve_path(cfg.attributes.gold_path))
        doc = json.loads(Path(args.out).read_text())
        if doc["stats"]["tagger_version"] != tagger.version:
            raise SystemExit(f"{args.out} measured tagger {doc['stats']['tagger_version']}, saved is {tagger.version}")
        doc["gold"] = S.evaluate_gold(cfg, tagger, tagger.lexicon, gold)
        write_json_atomic(Path(args.out), doc)
        print(json.dumps({s: v["tagger"]["micro"] for s, v in doc["gold"]["splits"].items()}, indent=1))
        return
    t0 = time.perf_counter()
    run = S.run(cfg)
    stage_s = time.perf_counter() - t0
    lex = Lexicon.load(cfg.paths.tagger / "lexicon.json")
    agree, ag = agreement_vs_humans(cfg, lex)
    doc = {"profile": cfg.profile, "machine": f"{os.cpu_count()} CPUs", "stage_seconds": round(stage_s, 1),
           "stats": run["stats"], "gold": run["evaluation"], "agreement_vs_human_grades_test": agree}
    if not args.skip_ablation:
        doc["stage1_ablation_judged_pairs"] = stage1_ablation(cfg, ag)
    doc["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json_atomic(Path(args.out), doc)
    print(json.dumps({k: doc[k] for k in ("stage_seconds", "stats")}, indent=1))


if __name__ == "__main__":
    main()
