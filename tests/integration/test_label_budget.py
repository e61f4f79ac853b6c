"""The label budget (relgrade/label_budget.py, ``dataset.train_label_fraction``): the
withheld train queries' judgments reach none of the learners. Asserted on what each one
actually receives: the teachers' training pairs, the judged class prior the calibration
uses, the human anchor of the published grades (the target's gold labels) and the peer
recipe's positives; dev and test keep every judgment; the budgets nest."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _cfg(root: dict, fraction: float):
    from flows.runtime import get_config

    ov = root["overrides"]
    return get_config("quick", {**ov, "dataset": {**ov["dataset"], "train_label_fraction": fraction}})


@pytest.mark.integration
def test_withheld_train_queries_reach_no_teacher_no_calibration_no_anchor_and_no_peer(grading_root):
    from relgrade.grading import stage as S
    from relgrade.grading.features import PairFeaturizer
    from training.hardneg import judged_positives

    full = S.load_inputs(grading_root["cfg"])
    cfg = _cfg(grading_root, 0.3)
    inp = S.load_inputs(cfg)
    all_train = set(full.sets["train"]["query_id"])
    kept = set(inp.sets["train"]["query_id"])
    withheld = all_train - kept
    assert kept < all_train and 0.15 < len(kept) / len(all_train) < 0.45, (len(kept), len(all_train))
    for split in ("dev", "test"):  # dev calibrates and test measures: never withheld
        assert inp.sets[split].equals(full.sets[split])

    # the teachers: their training pairs (judged pairs and each judged query's negatives)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    train = S.teacher_pairs(cfg, fz, inp, "train")
    assert set(train["query_id"]) <= kept and not set(train["query_id"]) & withheld
    assert (train["origin"] == "judged").sum() == len(inp.sets["train"])

    # the calibration's judged prior: the kept judgments' grades only
    kept_grades = full.sets["train"].loc[full.sets["train"]["query_id"].isin(kept), "grade"].to_numpy(dtype=np.int64)
    assert np.allclose(S.judged_prior(inp), np.bincount(kept_grades, minlength=4) / len(kept_grades))
    assert not np.allclose(S.judged_prior(inp), S.judged_prior(full)) or len(withheld) == 0

    # the target's gold labels: a withheld query's judged union pair keeps the teachers' grade
    u = inp.union[["query_id", "item_id"]].astype(str)
    grades = u.assign(grade=0, expected_grade=0.5, confidence=0.5, deciding_stage=1, teacher_version="gbm",
                      **{f"p_grade_{k}": 0.25 for k in range(4)})
    anchored, n = S.anchor_judgments(cfg, inp, grades)
    human = anchored[anchored["teacher_version"] == "human"]
    assert n > 0 and set(human["query_id"]) <= kept
    judged_withheld = full.sets["train"][full.sets["train"]["query_id"].isin(withheld)][["query_id", "item_id"]]
    in_union = judged_withheld.merge(u, on=["query_id", "item_id"])
    assert len(in_union) > 0  # the check below has pairs to check
    back = in_union.merge(anchored, on=["query_id", "item_id"])
    assert (back["teacher_version"] == "gbm").all()

    # the peer recipe's positives
    pos, stats = judged_positives(cfg, 10 ** 6, seed=0)
    assert set(pos["query_id"].astype(str)) <= kept and stats["positives"] == len(pos)


def test_budgets_nest_and_withhold_only_train_queries():
    from relgrade.label_budget import budget_stats, visible_judgments

    queries = pd.DataFrame({"query_id": [f"q{i}" for i in range(400)],
                            "split": ["train"] * 300 + ["dev"] * 50 + ["test"] * 50})
    judgments = pd.DataFrame({"query_id": np.repeat(queries["query_id"], 3).to_numpy(), "item_id": "i", "grade": 1})
    seen = {f: set(visible_judgments(judgments, queries, f)["query_id"]) for f in (0.05, 0.2, 1.0)}
    assert seen[0.05] < seen[0.2] < seen[1.0] == set(queries["query_id"])
    evaluation = set(queries.loc[queries["split"] != "train", "query_id"])
    assert evaluation <= seen[0.05]
    s = budget_stats(judgments, visible_judgments(judgments, queries, 0.2), queries, 0.2)
    assert s["train_queries_judged"] == 300 and 40 <= s["train_queries_kept"] <= 80
    assert s["train_judgments_kept"] == 3 * s["train_queries_kept"]
