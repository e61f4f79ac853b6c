"""The train and evaluate Prefect flows end to end on a real data slice (tiny training
budget): outputs land where the pipeline expects them and a rerun is served from the
stage cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.runtime import prefect_env
from relgrade.config import load_config

pytestmark = pytest.mark.integration

TINY = [
    {"name": "pointwise", "levels": [1, 2], "loss": "cosent", "max_examples": 64, "learning_rate": 1e-4},
    {"name": "in_batch", "levels": [1, 2, 3], "loss": "mnrl", "max_examples": 32, "learning_rate": 1e-4},
    {"name": "hard_negative", "levels": [1, 2, 3, 4, 5], "loss": "margin_mse", "max_examples": 64, "learning_rate": 1e-4},
]


def test_train_then_evaluate_flows_and_cached_rerun(tmp_path):
    from training_fixtures import write_contract, write_trainset

    overrides = {"data_root": str(tmp_path / "data"), "dataset": {"max_queries": 160},
                 "training": {"curriculum": TINY, "batch_size": 16}, "evaluation": {"bootstrap": 100}}
    cfg = load_config("quick", overrides=overrides)
    prefect_env(cfg)
    write_trainset(cfg, write_contract(cfg))
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    tr = train_flow("quick", overrides)
    assert set(tr["models"]) == {"student", "click_trained", "hardneg_human"}
    _the_peer_recipe_trained_on_train_split_judgments(cfg, tr["models"]["hardneg_human"])
    from sentence_transformers import SentenceTransformer

    for m in tr["models"].values():
        SentenceTransformer(m["path"], device="cpu")
    ev = evaluate_flow("quick", overrides)
    rep = json.loads(open(ev["report"]["json"]).read())
    assert set(rep["models"]) == {"student", "click_trained", "hardneg_human", "base", "bm25"}
    assert {t["target"] for t in ev["targets"]} >= {"student / click-trained recall@100", "student / bm25 ndcg@10_g0",
                                                    "student / hardneg_human recall@100",
                                                    "student / hardneg_human ndcg@10_g0", "student / hardneg_human emb@3"}
    peer_rows = [t for t in ev["targets"] if "hardneg_human" in t["target"]]
    assert [t["goal"] for t in peer_rows] == [">= 1.03", ">= 1.00", "<= 1.00"]
    assert all(t["measured"] is not None and isinstance(t["met"], bool) for t in peer_rows)
    card = (Path(tr["models"]["hardneg_human"]["path"]) / "README.md").read_text()
    assert "mine_hard_negatives" in card and "| student |" in card  # its metrics, the student's beside them
    assert "hardneg_human" in (Path(ev["report"]["html"])).read_text()
    from flows.evaluate import _key as eval_key
    from flows.train import _key as train_key

    def keys(**training) -> tuple[str, str]:
        cfg = load_config("quick", overrides={**overrides, "training": {**overrides.get("training", {}), **training}})
        return train_key(None, {"cfg": cfg}), eval_key(None, {"cfg": cfg})

    # a stable key from the same config and inputs; another training setting is another key
    assert keys() == keys()
    assert all(a != b for a, b in zip(keys(), keys(seed=1)))
    # the first run stored its result under the key: a rerun is served from the cache
    # (same result, the model files are not rewritten)
    weights = [Path(m["path"]) / "model.safetensors" for m in tr["models"].values()]
    mtimes = [w.stat().st_mtime_ns for w in weights]
    assert train_flow("quick", overrides) == tr
    assert [w.stat().st_mtime_ns for w in weights] == mtimes


def _the_peer_recipe_trained_on_train_split_judgments(cfg, m: dict) -> None:
    """hardneg_human: positives are train-split human judgments with grade >= 2 at the
    student's budget, each triplet's negative a catalog text other than its positive."""
    import pandas as pd

    from sentence_transformers import SentenceTransformer

    from training.data import load_catalog_texts
    from training.hardneg import hardneg_triplets, judged_positives

    summ = json.loads((Path(m["path"]) / "training_summary.json").read_text())
    d = summ["data"]
    budget = sum(st["max_examples"] for st in TINY)
    assert summ["recipe"] == "hardneg_human" and d["positives"] == min(budget, d["positive_pairs_available"])
    assert 0 < d["triplets"] <= d["positives"] and summ["stages"][0]["loss"] == "mnrl"
    pos, _ = judged_positives(cfg, budget, cfg.training.seed)
    q = pd.read_parquet(cfg.paths.table("queries")).set_index("query_id")
    j = pd.read_parquet(cfg.paths.table("judgments")).set_index(["query_id", "item_id"])
    assert (q.loc[pos["query_id"], "split"] == "train").all()
    assert (j.loc[list(zip(pos["query_id"], pos["item_id"])), "grade"] >= 2).all()
    base = SentenceTransformer(summ["base_model"], device="cpu")
    trip, stats = hardneg_triplets(cfg, base, budget, cfg.training.seed)
    assert len(trip) == d["triplets"] and stats["positives"] == d["positives"]
    assert (trip["negative"] != trip["positive"]).all()
    assert set(trip["negative"]) <= set(load_catalog_texts(cfg)[1])
