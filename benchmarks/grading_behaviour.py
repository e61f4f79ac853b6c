"""Behaviour of a data root's published teacher cascade (docs/grading.md, "Behaviour"):
``python benchmarks/grading_behaviour.py --data-root var/default`` writes
``benchmarks/results/grading_behaviour.json``.

* direction: for every pair of a grade-3 and a grade-0 judged item of one test-split
  query (at most 2,000, a fixed sample), is the grade-3 item's expected grade higher?
* invariance: 2,000 teacher-graded union pairs of held-out queries, regraded with one
  letter of the query's longest word dropped (``tests/behaviour.py:typo``; a new query
  text, featurized as ``relgrade label`` does): how far does the grade move?"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from behaviour import grade_3_over_0_pairs, typo  # noqa: E402

from relgrade.config import load_config  # noqa: E402
from relgrade.grading.label import label_pairs  # noqa: E402
from relgrade.io import read_parquet  # noqa: E402
from relgrade.util import write_json_atomic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    cfg = load_config(args.profile, overrides={"data_root": args.data_root} if args.data_root else None)
    q = read_parquet(cfg.paths.table("queries"))
    g = read_parquet(cfg.paths.grades).merge(q[["query_id", "text", "split"]], on="query_id")
    g = g[(g["deciding_stage"] > 0) & (g["split"] != "train")].sample(2000, random_state=2)
    g = g[[typo(s, k) != s for k, s in enumerate(g["text"])]].reset_index(drop=True)
    clean = label_pairs(cfg, g[["query_id", "item_id"]])["grade"].to_numpy()
    noisy = label_pairs(cfg, pd.DataFrame({"query": [typo(s, k) for k, s in enumerate(g["text"])],
                                           "item_id": g["item_id"]}))["grade"].to_numpy()
    change = np.abs(clean - noisy)
    pairs = grade_3_over_0_pairs(read_parquet(cfg.paths.table("judgments")), q.loc[q["split"] == "test", "query_id"],
                                 limit=2000)
    e3 = label_pairs(cfg, pairs.rename(columns={"item_3": "item_id"})[["query_id", "item_id"]])["expected_grade"]
    e0 = label_pairs(cfg, pairs.rename(columns={"item_0": "item_id"})[["query_id", "item_id"]])["expected_grade"]
    doc = {"data_root": str(cfg.paths.root.name), "profile": args.profile,
           "typo": {"pairs": int(len(change)), "unchanged_share": float(np.mean(change == 0)),
                    "changed_by_1": int((change == 1).sum()), "changed_by_2_or_more": int((change >= 2).sum()),
                    "max_change": int(change.max())},
           "grade_3_above_grade_0": {"pairs": int(len(pairs)), "share": float(np.mean(e3.to_numpy() > e0.to_numpy()))}}
    write_json_atomic(ROOT / "benchmarks" / "results" / "grading_behaviour.json", doc)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
