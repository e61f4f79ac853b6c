"""Graded relevance from a calibrated teacher cascade (docs/grading.md): calibration and
cascade units, stage-1 features against the mining channels, teacher caching, and on a
tiny real data root (Home Depot slice -> ingest -> simulate -> mine): the grade flow end
to end through Prefect, Great Expectations and Feast, resume after a run killed
mid-way, the LLM judge's unreachable-endpoint behaviour, and bad input."""
from __future__ import annotations

import shutil
import socket

import numpy as np
import pandas as pd
import pytest

from relgrade.grading.calibration import (
    ScaleMap,
    agreement_metrics,
    decide_grade,
    ece,
    fit_temperature,
    softmax,
)
from relgrade.grading.cascade import _cap, choose_thresholds, decide

GRADING_OVERRIDES = {
    "gbm_max_iter": 40, "ce_steps": 6, "ce3_steps": 6, "ce_batch_size": 8, "ce_max_seq_length": 24,
    "ce3_max_seq_length": 32, "chunk_size": 600, "max_share_stage2": 0.1, "max_share_stage3": 0.05,
    "infer_batch_size": 64,
}


def _overrides(root) -> dict:
    return {"data_root": str(root), "dataset": {"max_queries": 160},
            "simulation": {"days": 7, "searches_per_day": 200}, "mining": {"k": 15},
            "grading": dict(GRADING_OVERRIDES)}


# --------------------------------------------------------------------------- units
def test_temperature_scaling_recovers_temperature_and_lowers_ece():
    rng = np.random.default_rng(0)
    n = 6000
    true_logits = rng.normal(0, 1.5, size=(n, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    over = true_logits * 3.0  # an over-confident teacher
    T = fit_temperature(over, y)
    assert T == pytest.approx(3.0, rel=0.12)
    assert ece(softmax(over / T), y) < ece(softmax(over), y) / 2
    assert ece(softmax(true_logits), y) < 0.03


def test_grade_rules_and_scale_map():
    p = np.array([[0.4, 0.0, 0.0, 0.6], [0.0, 0.1, 0.8, 0.1], [0.5, 0.5, 0.0, 0.0]])
    assert decide_grade(p, "argmax").tolist() == [3, 2, 0]
    assert decide_grade(p, "quadratic").tolist() == [2, 2, 1]  # nearest integer to 1.8, 2.0, 0.5
    with pytest.raises(ValueError):
        decide_grade(p, "median")
    e = np.linspace(0, 3, 50)
    raw = 1.0 + 2.0 * (e / 3.0) ** 2
    sm = ScaleMap.fit(e, raw)
    assert np.all(np.diff(sm(e)) >= 0) and sm(np.array([0.0]))[0] == pytest.approx(1.0, abs=0.05)
    assert ScaleMap.from_json(sm.to_json())(np.array([1.5]))[0] == pytest.approx(sm(np.array([1.5]))[0])
    m = agreement_metrics(np.eye(4)[[0, 1, 2, 3]], np.array([0, 1, 2, 3]), np.array([1.0, 1.67, 2.33, 3.0]),
                          ScaleMap.fit(np.arange(4.0), np.array([1.0, 1.67, 2.33, 3.0])))
    assert m["exact"] == m["within_one"] == m["binary"] == 1.0 and m["qwk"] == pytest.approx(1.0)
    assert m["rmse_raw"] == pytest.approx(0.0, abs=1e-9)


def test_soft_grade_targets_follow_the_numeric_label():
    from relgrade.grading.teachers import soft_grade_targets

    grade = np.array([0, 1, 2, 3, 2, 3, 1])
    raw = np.array([1.0, 1.67, 2.33, 3.0, 2.33, np.nan, 1.67])  # grade centers 1.0, 1.67, 2.33, 3.0
    t = soft_grade_targets(grade, raw)
    assert t.shape == (7, 4) and np.allclose(t.sum(1), 1.0)
    assert np.allclose(t[:5], np.eye(4)[[0, 1, 2, 3, 2]])  # a label on its grade's center is one-hot
    assert np.allclose(t[5], np.eye(4)[3])  # no numeric label: the hard grade
    # halfway between the grade-2 and grade-3 centers: half on each
    mid = soft_grade_targets(np.r_[np.tile([0, 1, 2, 3], 1000), 2], np.r_[np.tile([1.0, 1.67, 2.33, 3.0], 1000), 2.665])[-1]
    assert mid[2] == pytest.approx(0.5, abs=1e-3) and mid[3] == pytest.approx(0.5, abs=1e-3)
    # a label that is not monotone in the grade cannot be interpolated: hard targets
    assert np.allclose(soft_grade_targets(grade[:4], np.array([3.0, 2.0, 1.5, 1.0])), np.eye(4))
    assert np.allclose(soft_grade_targets(grade, None), np.eye(4)[grade])


def test_character_grams_match_misspelt_queries():
    from relgrade.grading.features import CharGrams

    items = ["DEWALT 20-Volt Cordless Drill Kit", "Everbilt Stainless Steel Hinge", "Cordless Drill Driver Set",
             "Stainless Steel Sink Strainer", "Drill Bit Set"]
    cg = CharGrams(items, ["dewalt dril", "stainles hinge", "zzz"], min_df=1)
    qi, ii = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 3, 0])
    X = cg.features(qi, ii)  # char_cosine, char_containment, first_char, last_char
    assert X[0, 0] > X[1, 0] and X[2, 0] > X[3, 0]  # the misspelt query still finds its item
    assert X[0, 3] > 0.15 and X[1, 3] == 0  # "dril" meets "Drill", not "Hinge"
    assert X[2, 2] > 0 and X[3, 2] > 0 and X[2, 3] > X[3, 3]  # "stainles" meets both steel items, "hinge" one
    assert np.all((X[:, 1] >= 0) & (X[:, 1] <= 1)) and X[4].tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(X, cg.features(qi, ii))  # deterministic


def test_gbm_learns_soft_targets_from_the_numeric_label():
    from relgrade.grading.teachers import GBMTeacher

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.uniform(0, 3, n)
    raw = 1 + 2 * x / 3 + rng.normal(0, 0.05, n)  # a 1..3 mean rating rising with x
    y = np.clip(np.floor(x + 0.5), 0, 3).astype(np.int64)
    X = np.column_stack([x, rng.normal(size=n)]).astype(np.float32)
    hard = GBMTeacher.train(X, y, "h", 60, 0.1, 7, 1.0, 0)
    soft = GBMTeacher.train(X, y, "s", 60, 0.1, 7, 1.0, 0, raw=raw)
    grid = np.column_stack([np.linspace(0.2, 2.8, 50), np.zeros(50)]).astype(np.float32)
    e_hard = softmax(hard.logits_from_features(grid)) @ np.arange(4)
    e_soft = softmax(soft.logits_from_features(grid)) @ np.arange(4)
    # hard targets give a staircase; soft ones follow the rating between grades
    assert np.abs(e_soft - grid[:, 0]).mean() < np.abs(e_hard - grid[:, 0]).mean()
    assert list(soft.model.classes_) == [0, 1, 2, 3]


def test_cascade_escalates_only_unconfident_pairs_and_caps_least_confident_first():
    s1 = np.array([[0.9, 0.1, 0, 0], [0.4, 0.3, 0.3, 0], [0.3, 0.3, 0.2, 0.2], [0.55, 0.45, 0, 0]])
    s2 = np.array([[0, 0, 1.0, 0], [0, 0, 0.95, 0.05], [0.4, 0.3, 0.3, 0], [0, 0.9, 0.1, 0]])
    s3 = np.full((4, 4), 0.25)
    s3[:, 3] = 0.25
    probs, stage = decide([s1, s2, s3], [0.6, 0.6])
    assert stage.tolist() == [1, 2, 3, 2]  # pair 2 is unsure at stages 1 and 2
    assert probs[0].tolist() == s1[0].tolist() and probs[1].tolist() == s2[1].tolist()
    conf = np.array([0.9, 0.2, 0.5, 0.1, 0.3])
    assert _cap(np.array([1, 2, 3, 4]), conf, 0.4, 5).tolist() == [1, 3]  # two least confident
    assert _cap(np.array([1, 2]), conf, None, 5).tolist() == [1, 2]


def test_choose_thresholds_takes_cheapest_pair_meeting_the_quality_target():
    rng = np.random.default_rng(1)
    n = 800
    y = rng.integers(0, 4, n)
    onehot = np.eye(4)[y]
    s3 = 0.9 * onehot + 0.025  # strong and sure
    s1 = softmax(rng.normal(0, 0.2, (n, 4)))  # noise, unsure (max probability < 0.5)
    s1[: n // 2] = s3[: n // 2]  # sure and right on half the pairs
    s2 = s1.copy()
    out = choose_thresholds([s1, s2, s3], y, [0.0, 1.0, 2.0], [0.3, 0.5, 0.8, 0.95], qwk_margin=0.0)
    assert out["met_target"]
    assert out["dev"]["qwk"] == pytest.approx(1.0)
    # the noisy half must reach stage 3; the sure half stays at stage 1 (cheapest)
    assert out["dev"]["escalated_3"] == pytest.approx(0.5, abs=0.02)


# --------------------------------------------------------------------------- tiny real data root
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """ingest -> simulate -> mine (in-process) on 160 Home Depot queries."""
    from flows.runtime import get_config

    path = tmp_path_factory.mktemp("grading")
    ov = _overrides(path)
    cfg = get_config("quick", ov)
    from flows.ingest import ingest_flow
    from flows.simulate import simulate_flow
    from relgrade.io import read_parquet
    from relgrade.mining.run import mine, write_union

    ingest_flow("quick", ov)
    simulate_flow("quick", ov)
    p = cfg.paths
    r = mine(cfg, read_parquet(p.table("catalog")), read_parquet(p.table("queries")), read_parquet(p.table("events")))
    write_union(cfg, r["union"], r["snapshot_ts"])
    return {"path": path, "overrides": ov, "cfg": cfg}


@pytest.fixture(scope="module")
def fitted(root):
    from relgrade.grading import run as R
    from relgrade.grading.features import PairFeaturizer

    cfg = root["cfg"]
    inp = R.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    teachers = R.train_or_load_teachers(cfg, fz, inp)
    return {"inp": inp, "fz": fz, "teachers": teachers}


def test_stage1_features_match_the_mining_channels(fitted):
    from relgrade.grading.features import FEATURES

    u = fitted["inp"].union
    X = fitted["fz"].transform(u)
    lex = u["score_lexical"].notna().to_numpy()
    den = u["score_dense"].notna().to_numpy()
    assert lex.any() and den.any()
    np.testing.assert_allclose(X[lex, FEATURES.index("bm25")], u.loc[lex, "score_lexical"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(X[den, FEATURES.index("cosine")], u.loc[den, "score_dense"], atol=2e-3)
    assert (X[:, FEATURES.index("overlap_frac")] >= 0).all() and (X[:, FEATURES.index("overlap_frac")] <= 1).all()
    # judged pairs outside the union: ranks are missing, agreement 0
    j = fitted["inp"].sets["dev"]
    key = set(zip(u["query_id"], u["item_id"]))
    out = j[[k not in key for k in zip(j["query_id"], j["item_id"])]]
    if len(out):
        Xo = fitted["fz"].transform(out)
        assert np.isnan(Xo[:, FEATURES.index("rank_lexical")]).all()
        assert (Xo[:, FEATURES.index("agreement")] == 0).all()


def test_teachers_train_on_train_split_only_and_are_cached(fitted, root):
    from relgrade.grading import run as R

    t, inp, fz = fitted["teachers"], fitted["inp"], fitted["fz"]
    assert set(inp.sets["train"]["split"]) == {"train"}
    assert not set(inp.sets["train"]["query_id"]) & set(inp.sets["test"]["query_id"])
    assert not set(inp.sets["train"]["query_id"]) & set(inp.sets["dev"]["query_id"])
    again = R.train_or_load_teachers(root["cfg"], fz, inp)
    assert again.trained == {1: False, 2: False, 3: False}
    assert (again.gbm.version, again.ce2.version, again.ce3.version) == (t.gbm.version, t.ce2.version, t.ce3.version)
    pairs = inp.sets["test"].head(20)
    np.testing.assert_allclose(again.ce2.logits(pairs, fz), t.ce2.logits(pairs, fz), atol=1e-5)
    np.testing.assert_allclose(again.gbm.logits(pairs, fz), t.gbm.logits(pairs, fz), atol=1e-9)
    assert again.ce2.layers == root["cfg"].grading.ce_layers
    # the fast fp32 inference path agrees with the stock CrossEncoder.predict; the int8
    # path (grading.ce_int8) stays close to it
    q, it = fz.texts(pairs)
    plain = t.ce3.logits_plain(q, it)
    np.testing.assert_allclose(t.ce3.logits_texts(q, it, model=t.ce3.ce), plain, atol=1e-4)
    t.ce3.int8 = True
    assert np.abs(t.ce3.logits_texts(q, it) - plain).max() < 0.2
    t.ce3.int8 = root["cfg"].grading.ce_int8


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_llm_judge_unreachable_gives_clear_error_and_keeps_previous_grades(fitted, root):
    from relgrade.grading import run as R
    from relgrade.grading.cascade import TeacherCascade
    from relgrade.grading.teachers import LLMJudgeTeacher, LLMJudgeUnavailable

    url = f"http://127.0.0.1:{_free_port()}/v1"
    cfg = root["cfg"].model_copy(update={"grading": root["cfg"].grading.model_copy(
        update={"llm_judge": root["cfg"].grading.llm_judge.model_copy(update={"enabled": True, "base_url": url, "timeout_s": 2})})})
    t = fitted["teachers"]
    cal = R.calibrate(cfg, fitted["fz"], fitted["inp"], t)
    with pytest.raises(LLMJudgeUnavailable, match="unreachable"):
        R.make_cascade(cfg, t, cal)
    # graded anyway (e.g. the endpoint died mid-run): failed pairs keep their earlier grade
    llm = LLMJudgeTeacher(url, "judge", timeout_s=2)
    cas = TeacherCascade(t.gbm, t.st2, t.ens, cal.thresholds, llm, llm_threshold=1.0)
    base = TeacherCascade(t.gbm, t.st2, t.ens, cal.thresholds)
    pairs = fitted["inp"].union.head(40)
    res = cas.grade(pairs, fitted["fz"], (None, None, 0.1))
    ref = base.grade(pairs, fitted["fz"])
    assert res.llm_failed == 4 and res.stage.max() <= 3
    np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6)


@pytest.mark.integration
def test_grade_flow_end_to_end_and_cached_rerun(root):
    from flows.grade import grade_flow
    from relgrade.featurestore import historical_features, read_offline
    from relgrade.grading.run import GRADE_COLUMNS, grades_path, report_dir
    from relgrade.io import read_parquet
    from relgrade.mining.run import default_snapshot, union_path

    from flows.runtime import _code_version

    cfg, ov = root["cfg"], root["overrides"]
    code = _code_version()
    out = grade_flow("quick", ov)
    snap = default_snapshot(cfg)
    union = read_parquet(union_path(cfg, snap))
    g = read_parquet(grades_path(cfg))
    assert list(g.columns) == GRADE_COLUMNS and len(g) == len(union) == out["union"]["pairs"]
    assert (g["event_timestamp"] == snap).all()  # the snapshot instant, not wall-clock time
    assert (g["graded_at"] > snap).all()
    probs = g[[f"p_grade_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(g["expected_grade"], probs @ np.arange(4), atol=1e-6)
    np.testing.assert_allclose(g["confidence"], probs.max(axis=1), atol=1e-9)
    assert set(g["deciding_stage"]) <= {1, 2, 3} and (g["deciding_stage"] >= 2).any()
    share2 = (g["deciding_stage"] >= 2).mean()
    assert share2 <= cfg.grading.max_share_stage2 + 1e-9
    assert g["difficulty_level"].between(1, 5).all()
    # published: relevance_grade_fv and the refined retrieval_prior_fv for the same keys
    off = read_offline(cfg, "relevance_grade_fv")
    assert len(off) == len(g)
    prior = read_offline(cfg, "retrieval_prior_fv")
    m = prior.merge(g[["query_id", "item_id", "category", "difficulty_level"]], on=["query_id", "item_id"], suffixes=("", "_g"))
    assert len(m) == len(g) and (m["difficulty_level"].astype(int) == m["difficulty_level_g"]).all()
    ent = g[["query_id", "item_id"]].head(5).assign(event_timestamp=snap + pd.Timedelta(hours=1))
    feats = historical_features(cfg, ent, ["relevance_grade_fv:grade", "relevance_grade_fv:deciding_stage"])
    assert feats["grade"].astype(int).tolist() == g["grade"].head(5).tolist()
    # the cascade's expected grade for every human-judged test pair (the evaluation's
    # distillation reference), consistent with the test metrics of the report
    from relgrade.grading.run import test_scores_path

    ts = read_parquet(test_scores_path(cfg))
    j = read_parquet(cfg.paths.table("judgments"))
    q = read_parquet(cfg.paths.table("queries"))
    test_j = j[j["query_id"].isin(set(q.loc[q["split"] == "test", "query_id"]))]
    assert set(zip(ts["query_id"], ts["item_id"])) <= set(zip(test_j["query_id"], test_j["item_id"]))
    assert len(ts) >= 0.9 * len(test_j) and ts[["query_id", "item_id"]].duplicated().sum() == 0
    for k in ("stage1", "stage2", "stage3", "cascade"):
        assert ts[f"expected_grade_{k}"].between(0, 3).all()
    # report
    html_text = (report_dir(cfg) / "report.html").read_text()
    assert "data:image/png;base64," in html_text and "quadratic" in html_text
    for k in ("stage1", "stage2", "stage3", "cascade"):
        assert 0 <= out["metrics"][k]["rmse_raw"] < 2 and -1 <= out["metrics"][k]["qwk"] <= 1
    # cached: the rerun does not rewrite the grades (the cache key includes the code
    # version: when someone edits the sources between the two runs it rightly reruns)
    mtime = grades_path(cfg).stat().st_mtime_ns
    again = grade_flow("quick", ov)
    assert again["thresholds"] == out["thresholds"]
    if _code_version() == code:
        assert grades_path(cfg).stat().st_mtime_ns == mtime


@pytest.mark.integration
def test_killed_run_resumes_without_regrading_and_matches_uninterrupted(root):
    from flows.grade import run_grading
    from relgrade.grading.run import StopAfter, grades_path

    cfg = root["cfg"].model_copy(update={"data_root": str(root["path"] / "resume")})
    shutil.copytree(root["path"] / "contract", cfg.paths.contract)
    shutil.copytree(root["path"] / "mining", cfg.paths.root / "mining")
    shutil.copytree(root["path"] / "models", cfg.paths.root / "models")  # trained teachers (cache)
    shutil.copytree(root["path"] / "cache", cfg.paths.root / "cache")  # base-model embeddings
    with pytest.raises(StopAfter):
        run_grading(cfg, stop_after=2)  # killed after two chunks
    assert not grades_path(cfg).exists()
    chunk_dirs = list((cfg.paths.root / "grading" / "chunks").iterdir())
    assert len(chunk_dirs) == 1
    written = sorted(chunk_dirs[0].glob("chunk_*.parquet"))
    assert len(written) == 2
    mtimes = [p.stat().st_mtime_ns for p in written]
    resumed = run_grading(cfg)
    assert resumed["union"]["resumed_chunks"] == 2
    assert resumed["union"]["graded_chunks"] == resumed["union"]["chunks"] - 2 > 0
    assert [p.stat().st_mtime_ns for p in written] == mtimes  # never regraded
    a = pd.read_parquet(grades_path(cfg)).drop(columns=["graded_at"])
    # an uninterrupted run from scratch (same teachers)
    shutil.rmtree(cfg.paths.root / "grading")
    fresh = run_grading(cfg)
    assert fresh["union"]["resumed_chunks"] == 0
    b = pd.read_parquet(grades_path(cfg)).drop(columns=["graded_at"])
    pd.testing.assert_frame_equal(a, b)


def test_bad_union_is_rejected_and_nothing_is_written(root, tmp_path):
    from relgrade.contract import ContractError
    from relgrade.grading.run import grades_path, load_inputs
    from relgrade.io import read_parquet, write_parquet_atomic
    from relgrade.mining.run import default_snapshot, union_path

    cfg = root["cfg"].model_copy(update={"data_root": str(tmp_path / "bad")})
    shutil.copytree(root["path"] / "contract", cfg.paths.contract)
    u = read_parquet(union_path(root["cfg"], default_snapshot(root["cfg"])))
    write_parquet_atomic(u.drop(columns=["rank_dense"]), union_path(cfg, default_snapshot(cfg)))
    with pytest.raises(ContractError, match="rank_dense"):
        load_inputs(cfg)
    write_parquet_atomic(pd.concat([u, u.head(3)]), union_path(cfg, default_snapshot(cfg)))
    with pytest.raises(ContractError, match="duplicated"):
        load_inputs(cfg)
    assert not grades_path(cfg).exists()


def test_features_are_bit_identical_across_processes(root, fitted):
    """A resumed run is a new process: features (and so teacher versions and grades) must
    not depend on string-hash order (bm25s numbers its vocabulary in set order)."""
    import subprocess
    import sys

    code = (
        "import hashlib, sys; from relgrade.config import load_config; from relgrade.grading import run as R; "
        "from relgrade.grading.features import PairFeaturizer; "
        f"cfg = load_config('quick', overrides={root['overrides']!r}); inp = R.load_inputs(cfg); "
        "X = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union).transform(inp.union.head(3000)); "
        "print(hashlib.sha256(X.tobytes()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
