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
    assert set(tr["models"]) == {"student", "click_trained"}
    from sentence_transformers import SentenceTransformer

    for m in tr["models"].values():
        SentenceTransformer(m["path"], device="cpu")
    ev = evaluate_flow("quick", overrides)
    rep = json.loads(open(ev["report"]["json"]).read())
    assert set(rep["models"]) == {"student", "click_trained", "base", "bm25"}
    assert {t["target"] for t in ev["targets"]} >= {"student / click-trained recall@100", "student / bm25 ndcg@10_g0"}
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
