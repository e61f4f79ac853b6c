"""The grade stage's test world: a tiny real data root (160 Home Depot queries ->
ingest -> simulate -> mine) and a three-stage cascade small enough to train in seconds.
``tests/conftest.py`` builds it once per test session (fixtures ``grading_root``,
``grading_fitted``, ``grading_run``)."""
from __future__ import annotations

from pathlib import Path

TINY_STAGES = [
    {"kind": "gbm", "max_iter": 40},
    {"kind": "cross_encoder", "name": "ce2", "layers": 2, "steps": 8, "batch_size": 8, "max_seq_length": 24},
    {"kind": "cross_encoder", "name": "ce3", "layers": 3, "steps": 6, "batch_size": 8, "max_seq_length": 32,
     "seed_offset": 1, "cost_s_per_million": 1750},
]
# attribute features off: with them, stage 1 alone wins on this tiny world's dev set, the
# cross-encoders would judge no union pair, and the flow tests here check escalation; the
# attribute features are tested on this root in tests/model/test_teachers.py and run in
# the pipeline tests (tests/integration/test_own_data.py, test_reliability.py)
GRADING_OVERRIDES = {"stages": TINY_STAGES, "chunk_size": 600, "infer_batch_size": 64, "budget_sample_pairs": 400,
                     "probe": {"random_pairs": 300}, "attribute_features": False}


ATTRIBUTES_OVERRIDES = {"max_train_queries": 120, "epochs": 1}  # a tagger in seconds


def overrides(root: Path) -> dict:
    return {"data_root": str(root), "dataset": {"max_queries": 160},
            "simulation": {"days": 7, "searches_per_day": 200}, "mining": {"k": 15},
            "grading": dict(GRADING_OVERRIDES), "attributes": dict(ATTRIBUTES_OVERRIDES)}


def build_root(path: Path) -> dict:
    """ingest -> simulate -> mine (in-process) -> attributes into ``path``."""
    from flows.attributes import attributes_flow
    from flows.ingest import ingest_flow
    from flows.runtime import get_config
    from flows.simulate import simulate_flow
    from relgrade.io import read_parquet
    from relgrade.mining.stage import mine, write_union

    ov = overrides(path)
    cfg = get_config("quick", ov)
    ingest_flow("quick", ov)
    simulate_flow("quick", ov)
    p = cfg.paths
    r = mine(cfg, read_parquet(p.table("catalog")), read_parquet(p.table("queries")), read_parquet(p.table("events")))
    write_union(cfg, r["union"], r["snapshot_ts"])
    attributes_flow("quick", ov)  # the query tagger: stage 1's attribute agreement features
    return {"path": path, "overrides": ov, "cfg": cfg}


def fit(root: dict) -> dict:
    """Featurizer, teacher pairs, every stage's teacher and the calibration, in-process."""
    from relgrade.grading import stage as S
    from relgrade.grading.features import PairFeaturizer

    cfg = root["cfg"]
    inp = S.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    train, dev = S.teacher_pairs(cfg, fz, inp, "train"), S.teacher_pairs(cfg, fz, inp, "dev")
    teachers = [S.train_teacher(cfg, fz, train, k)[0] for k in range(len(cfg.grading.stages))]
    cal = S.calibrate(cfg, fz, inp, teachers, dev)
    return {"inp": inp, "fz": fz, "train": train, "dev": dev, "teachers": teachers, "cal": cal}
