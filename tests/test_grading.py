"""Graded relevance from a calibrated teacher cascade (docs/grading.md).

Units: calibration, soft targets, weighted batches, negatives, the prior-shift EM, the
budgeted threshold search, the cascade's decisions and caps. On a tiny real data root
(Home Depot slice -> ingest -> simulate -> mine): teachers and their cache, the grade
flow end to end through Prefect, Great Expectations and Feast, the random-pair probe
failing a shifted teacher at the gate, resume after a run killed mid-way, `relgrade
label`, the LLM judge's unreachable endpoint, bad input."""
from __future__ import annotations

import shutil
from loopback import free_port

import numpy as np
import pandas as pd
import pytest

from relgrade.grading.calibration import (
    GradeRule,
    ScaleMap,
    agreement_metrics,
    decide_grade,
    ece,
    fit_temperature,
    softmax,
)
from relgrade.grading.cascade import cap, choose_thresholds, decide, reach_shares

TINY_STAGES = [
    {"kind": "gbm", "max_iter": 40},
    {"kind": "cross_encoder", "name": "ce2", "layers": 2, "steps": 8, "batch_size": 8, "max_seq_length": 24},
    {"kind": "cross_encoder", "name": "ce3", "layers": 3, "steps": 6, "batch_size": 8, "max_seq_length": 32,
     "seed_offset": 1, "cost_s_per_million": 1750},
]
GRADING_OVERRIDES = {"stages": TINY_STAGES, "chunk_size": 600, "infer_batch_size": 64, "budget_sample_pairs": 400,
                     "probe": {"random_pairs": 300}}


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
    # weights: a pair of weight 2 counts as two pairs
    w = rng.integers(1, 3, n).astype(float)
    rep = np.repeat(np.arange(n), w.astype(int))
    assert fit_temperature(over, y, w) == pytest.approx(fit_temperature(over[rep], y[rep]), rel=1e-3)


def test_grade_rules_and_scale_map():
    p = np.array([[0.4, 0.0, 0.0, 0.6], [0.0, 0.1, 0.8, 0.1], [0.5, 0.5, 0.0, 0.0]])
    assert decide_grade(p, "argmax").tolist() == [3, 2, 0]
    assert decide_grade(p, "quadratic").tolist() == [2, 2, 1]  # nearest integer to 1.8, 2.0, 0.5
    with pytest.raises(ValueError):
        decide_grade(p, "median")
    # a scale without grade 2 (WANDS: 0, 1, 3) never publishes a 2, whatever the rule
    assert decide_grade(p, "quadratic", [0, 1, 3]).tolist() == [1, 3, 1]
    assert decide_grade(p, GradeRule("argmax", (0, 1, 3))).tolist() == [3, 1, 0]
    rng = np.random.default_rng(0)
    d = rng.dirichlet(np.ones(4), 2000)
    assert (decide_grade(d, "quadratic") == np.clip(np.floor(d @ np.arange(4) + 0.5), 0, 3)).all()
    e = np.linspace(0, 3, 50)
    raw = 1.0 + 2.0 * (e / 3.0) ** 2
    sm = ScaleMap.fit(e, raw)
    assert np.all(np.diff(sm(e)) >= 0) and sm(np.array([0.0]))[0] == pytest.approx(1.0, abs=0.05)
    assert ScaleMap.from_json(sm.to_json())(np.array([1.5]))[0] == pytest.approx(sm(np.array([1.5]))[0])
    # a source without numeric labels (ESCI, WANDS) has no raw scale: RMSE on grades only
    assert ScaleMap.fit(e, None) is None and ScaleMap.fit(e, np.full(50, np.nan)) is None
    m = agreement_metrics(np.eye(4)[[0, 1, 2, 3]], np.array([0, 1, 2, 3]), np.array([1.0, 1.67, 2.33, 3.0]),
                          ScaleMap.fit(np.arange(4.0), np.array([1.0, 1.67, 2.33, 3.0])))
    assert m["exact"] == m["within_one"] == m["binary"] == 1.0 and m["qwk"] == pytest.approx(1.0)
    assert m["rmse_raw"] == pytest.approx(0.0, abs=1e-9) and m["rmse_grade"] == pytest.approx(0.0)


def test_soft_grade_targets_follow_the_numeric_label():
    from relgrade.grading.teachers import soft_grade_targets

    grade = np.array([0, 1, 2, 3, 2, 3, 1])
    raw = np.array([1.0, 1.67, 2.33, 3.0, 2.33, np.nan, 1.67])  # grade centers 1.0, 1.67, 2.33, 3.0
    t = soft_grade_targets(grade, raw)
    assert t.shape == (7, 4) and np.allclose(t.sum(1), 1.0)
    assert np.allclose(t[:5], np.eye(4)[[0, 1, 2, 3, 2]])  # a label on its grade's center is one-hot
    assert np.allclose(t[5], np.eye(4)[3])  # no numeric label: the hard grade
    mid = soft_grade_targets(np.r_[np.tile([0, 1, 2, 3], 1000), 2], np.r_[np.tile([1.0, 1.67, 2.33, 3.0], 1000), 2.665])[-1]
    assert mid[2] == pytest.approx(0.5, abs=1e-3) and mid[3] == pytest.approx(0.5, abs=1e-3)
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
    assert X[2, 2] > 0 and X[3, 2] > 0 and X[2, 3] > X[3, 3]
    assert np.all((X[:, 1] >= 0) & (X[:, 1] <= 1)) and X[4].tolist() == [0, 0, 0, 0]


def test_gbm_learns_soft_targets_and_weights():
    from relgrade.config import GBMStageConfig
    from relgrade.grading.teachers import GBMTeacher, soft_grade_targets

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.uniform(0, 3, n)
    raw = 1 + 2 * x / 3 + rng.normal(0, 0.05, n)  # a 1..3 mean rating rising with x
    y = np.clip(np.floor(x + 0.5), 0, 3).astype(np.int64)
    X = np.column_stack([x, rng.normal(size=n)]).astype(np.float32)
    s = GBMStageConfig(max_iter=60, learning_rate=0.1, max_leaf_nodes=7)
    hard = GBMTeacher.train(X, np.eye(4)[y], np.ones(n), settings=s, version="h", seed=0)
    soft = GBMTeacher.train(X, soft_grade_targets(y, raw), np.ones(n), settings=s, version="s", seed=0)
    grid = np.column_stack([np.linspace(0.2, 2.8, 50), np.zeros(50)]).astype(np.float32)
    e_hard = softmax(hard.logits_from_features(grid)) @ np.arange(4)
    e_soft = softmax(soft.logits_from_features(grid)) @ np.arange(4)
    # hard targets give a staircase; soft ones follow the rating between grades
    assert np.abs(e_soft - grid[:, 0]).mean() < np.abs(e_hard - grid[:, 0]).mean()
    # a weight moves the fit: the same points labelled 0, weighted 9x, pull the grades down
    X2 = np.vstack([X, X])
    T2 = np.vstack([np.eye(4)[y], np.eye(4)[np.zeros(n, int)]])
    low = GBMTeacher.train(X2, T2, np.r_[np.ones(n), np.full(n, 9.0)], settings=s, version="w", seed=0)
    assert (softmax(low.logits_from_features(grid)) @ np.arange(4)).mean() < e_hard.mean() - 0.5


def test_weighted_batches_draw_in_proportion_to_weight():
    from relgrade.grading.teachers import weighted_batches

    w = np.r_[np.full(100, 1.0), np.full(100, 3.0)]
    idx = np.concatenate(weighted_batches(w, 20, 400, 7))
    heavy = (idx >= 100).mean()
    assert heavy == pytest.approx(0.75, abs=0.02)
    assert all(len(b) == 20 for b in weighted_batches(w, 20, 5, 7))
    assert [b.tolist() for b in weighted_batches(w, 20, 5, 7)] == [b.tolist() for b in weighted_batches(w, 20, 5, 7)]
    with pytest.raises(ValueError):
        weighted_batches(np.array([1.0, -1.0]), 2, 1, 0)


def test_prior_shift_em_recovers_the_class_mix_of_a_shifted_sample():
    from relgrade.grading.priorshift import adjust, em_prior

    rng = np.random.default_rng(3)
    means = np.array([[-2.0, 0], [0, 2.0], [2.0, 0], [0, -2.0]])

    def sample(prior, n):
        y = rng.choice(4, size=n, p=prior)
        return y, means[y] + rng.normal(size=(n, 2))

    def posterior(x, prior):  # the exact Bayes posterior of this mixture under ``prior``
        ll = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
        p = np.exp(ll) * np.asarray(prior)[None]
        return p / p.sum(1, keepdims=True)

    train_prior = np.array([0.25, 0.25, 0.25, 0.25])
    target = np.array([0.6, 0.25, 0.1, 0.05])
    _, x = sample(target, 20000)
    est = em_prior(posterior(x, train_prior), train_prior)
    assert est["converged"] and np.abs(np.array(est["prior"]) - target).max() < 0.02
    np.testing.assert_allclose(adjust(posterior(x, train_prior), train_prior, target), posterior(x, target), atol=1e-9)


def test_threshold_search_stays_within_the_budget_and_takes_the_best_quality():
    rng = np.random.default_rng(1)
    n = 1000
    y = rng.integers(0, 4, n)
    sure = 0.9 * np.eye(4)[y] + 0.025  # a strong, confident stage
    s1 = softmax(rng.normal(0, 0.2, (n, 4)))  # a weak, unsure one
    s1[: n // 2] = sure[: n // 2]  # ... sure and right on half the pairs
    s2 = s1.copy()
    s2[n // 2: 3 * n // 4] = sure[n // 2: 3 * n // 4]  # stage 2 fixes a quarter more
    probs = [s1, s2, sure]
    conf = [p.max(axis=1) for p in probs]  # the union sample: here the same pairs
    grid = [0.3, 0.5, 0.8, 0.95]
    costs = [10.0, 100.0, 400.0]
    free = choose_thresholds(probs, y, None, conf, costs, 1e9, grid)
    assert free["chosen"]["dev_qwk"] == pytest.approx(1.0)
    tight = choose_thresholds(probs, y, None, conf, costs, 10.0 + 100.0 * 0.5 + 1.0, grid)
    assert tight["chosen"]["cost_s_per_million"] <= 61.0
    assert tight["chosen"]["union_reach"][2] == 0.0  # no room for stage 3: only stage 2 for the unsure half
    assert tight["chosen"]["dev_qwk"] < free["chosen"]["dev_qwk"]
    # the frontier rises with compute, and the choice is on it
    f = tight["frontier"]
    assert all(a["cost_s_per_million"] <= b["cost_s_per_million"] and a["dev_qwk"] < b["dev_qwk"] for a, b in zip(f, f[1:]))
    assert reach_shares(conf, [0.8, 0.8]) == [1.0, 0.5, pytest.approx(0.25)]
    broke = choose_thresholds(probs, y, None, conf, costs, 1.0, grid)  # under stage 1's own cost
    assert broke["chosen"]["union_reach"][1:] == [0.0, 0.0]


def test_cascade_decisions_and_caps():
    s1 = np.array([[0.9, 0.1, 0, 0], [0.4, 0.3, 0.3, 0], [0.3, 0.3, 0.2, 0.2], [0.55, 0.45, 0, 0]])
    s2 = np.array([[0, 0, 1.0, 0], [0, 0, 0.95, 0.05], [0.4, 0.3, 0.3, 0], [0, 0.9, 0.1, 0]])
    s3 = np.full((4, 4), 0.25)
    probs, stage = decide([s1, s2, s3], [0.6, 0.6])
    assert stage.tolist() == [1, 2, 3, 2]  # pair 2 is unsure at stages 1 and 2
    assert probs[0].tolist() == s1[0].tolist() and probs[1].tolist() == s2[1].tolist()
    conf = np.array([0.9, 0.2, 0.5, 0.1, 0.3])
    assert cap(np.array([1, 2, 3, 4]), conf, 0.4, 5).tolist() == [1, 3]  # two least confident
    assert cap(np.array([1, 2]), conf, None, 5).tolist() == [1, 2]


def test_negatives_exclude_the_union_and_judgments_and_are_deterministic():
    from relgrade.config import NegativesConfig
    from relgrade.grading.negatives import mined_candidates, random_negatives, with_negatives

    items = np.array([f"i{k}" for k in range(50)], dtype=object)
    exclude = {"q1": {f"i{k}" for k in range(45)}}
    r = random_negatives(["q1", "q2"], items, exclude, 4, 9)
    assert (r.groupby("query_id").size() == 4).all()
    assert not set(r.loc[r["query_id"] == "q1", "item_id"]) & exclude["q1"]
    assert r.equals(random_negatives(["q1", "q2"], items, exclude, 4, 9))
    # a query's negatives do not depend on the other queries of the list
    assert r[r["query_id"] == "q2"].reset_index(drop=True).equals(random_negatives(["q2"], items, {}, 4, 9))
    judged = pd.DataFrame({"query_id": ["q1", "q1"], "item_id": ["i0", "i1"], "grade": [3, 2], "raw_score": [3.0, 2.4]})
    union = pd.DataFrame({"query_id": ["q1"] * 5, "item_id": ["i0", "i2", "i3", "i4", "i5"],
                          "rank_lexical": pd.array([1, 3, 20, 30, 40], dtype="Int64"),
                          "rank_dense": pd.array([2, None, None, 25, None], dtype="Int64")})
    cos = {"i0": 0.9, "i1": 0.8, "i2": 0.1, "i3": 0.1, "i4": 0.79, "i5": 0.5}
    score = lambda df: np.array([cos[i] for i in df["item_id"]])  # noqa: E731
    s = NegativesConfig(mined_rank_min=11, mined_rank_max=100, mined_relative_margin=0.05)
    c = mined_candidates(union, judged, score, s)
    # i0 judged; i2 in the top-10 window; i4 too close to the weakest positive (0.79 > 0.95 * 0.8)
    assert sorted(c["item_id"]) == ["i3", "i5"]
    out = with_negatives(judged, union, items, score, s.model_copy(update={"random_per_query": 2}), 5, 1.0)
    w = out.groupby("origin")["weight"].sum()
    assert w["judged"] == 2 and w["random"] == pytest.approx(s.random_weight * 2)
    assert w["mined"] == pytest.approx(s.mined_weight * 2)
    assert (out.loc[out["origin"] != "judged", "raw_score"] == 1.0).all()
    assert (out.loc[out["origin"] == "mined", "t_0"] == 1.0).all()


def test_rank_bands_and_random_probe_pairs():
    from relgrade.grading.probes import band_labels, random_pairs, rank_band

    assert band_labels([5, 10, 100]) == ["1-5", "6-10", "11-100", ">100"]
    assert rank_band(np.array([1, 5, 6, 100, 101, np.nan]), [5, 10, 100]).tolist() == \
        ["1-5", "1-5", "6-10", "11-100", ">100", ">100"]
    ex = pd.DataFrame({"query_id": ["q0"] * 9, "item_id": [f"i{k}" for k in range(9)]})
    p = random_pairs(np.array(["q0", "q1"]), np.array([f"i{k}" for k in range(10)]), ex, 11, 0)
    assert len(p) == 11 and not p.duplicated().any()
    assert not set(zip(p["query_id"], p["item_id"])) & set(zip(ex["query_id"], ex["item_id"]))


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
    from relgrade.mining.stage import mine, write_union

    ingest_flow("quick", ov)
    simulate_flow("quick", ov)
    p = cfg.paths
    r = mine(cfg, read_parquet(p.table("catalog")), read_parquet(p.table("queries")), read_parquet(p.table("events")))
    write_union(cfg, r["union"], r["snapshot_ts"])
    return {"path": path, "overrides": ov, "cfg": cfg}


@pytest.fixture(scope="module")
def fitted(root):
    from relgrade.grading import stage as S
    from relgrade.grading.features import PairFeaturizer

    cfg = root["cfg"]
    inp = S.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    train, dev = S.teacher_pairs(cfg, fz, inp, "train"), S.teacher_pairs(cfg, fz, inp, "dev")
    teachers = [S.train_teacher(cfg, fz, train, k)[0] for k in range(len(cfg.grading.stages))]
    cal = S.calibrate(cfg, fz, inp, teachers, dev)
    return {"inp": inp, "fz": fz, "train": train, "dev": dev, "teachers": teachers, "cal": cal}


@pytest.fixture(scope="module")
def graded(root):
    """The grade flow on the tiny root, run once for the tests that read its outputs."""
    from flows.grade import grade_flow

    return grade_flow("quick", root["overrides"])


def test_stage1_features_match_the_mining_channels_and_ignore_retrieval(fitted):
    from relgrade.grading.features import FEATURES, UNION_FEATURES

    fz, u = fitted["fz"], fitted["inp"].union
    assert not set(fz.names) & set(UNION_FEATURES)  # content only by default
    X = fz.transform_all(u)
    lex = u["score_lexical"].notna().to_numpy()
    den = u["score_dense"].notna().to_numpy()
    np.testing.assert_allclose(X[lex, FEATURES.index("bm25")], u.loc[lex, "score_lexical"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(X[den, FEATURES.index("cosine")], u.loc[den, "score_dense"], atol=2e-3)
    assert (X[:, FEATURES.index("bm25_rel")] <= 1 + 1e-5).all() and (X[:, FEATURES.index("cos_gap")] <= 1e-5).all()
    # the same pair, mined or not, has the same content features
    bare = u[["query_id", "item_id"]].head(50)
    np.testing.assert_array_equal(fz.transform(bare), fz.transform(u.head(50)))


def test_items_and_queries_added_by_text_are_featurized_like_the_catalog(fitted):
    """relgrade label takes titles and query texts the tables do not hold: a copy of a
    catalog title (new id) gets exactly the features of the catalog item, and a copy of
    a query text those of the query; nothing of the known rows moves."""
    import copy

    fz = copy.deepcopy(fitted["fz"])
    inp = fitted["inp"]
    pairs = inp.union[["query_id", "item_id"]].head(40).reset_index(drop=True)
    before = fz.transform(pairs)
    title = dict(zip(inp.catalog["item_id"].astype(str), inp.catalog["title"].astype(str)))
    text = dict(zip(inp.queries["query_id"].astype(str), inp.queries["text"].astype(str)))
    new_items = pd.DataFrame({"item_id": ["new:" + i for i in pairs["item_id"].unique()],
                              "title": [title[i] for i in pairs["item_id"].unique()]})
    new_queries = pd.DataFrame({"query_id": ["new:" + q for q in pairs["query_id"].unique()],
                                "text": [text[q] for q in pairs["query_id"].unique()]})
    fz.extend(items=new_items, queries=new_queries)
    np.testing.assert_array_equal(fz.transform(pairs), before)
    copies = pairs.assign(query_id="new:" + pairs["query_id"], item_id="new:" + pairs["item_id"])
    np.testing.assert_allclose(fz.transform(copies), before, rtol=1e-4, atol=5e-3)  # bf16 encoding of a new batch


def test_teachers_train_on_train_split_only_and_are_cached(fitted, root):
    from relgrade.grading import stage as S

    inp, fz, train = fitted["inp"], fitted["fz"], fitted["train"]
    judged = train[train["origin"] == "judged"]
    assert set(judged["split"]) == {"train"}
    assert not set(train["query_id"]) & (set(inp.sets["test"]["query_id"]) | set(inp.sets["dev"]["query_id"]))
    assert {"random", "mined"} <= set(train["origin"])
    again = [S.train_teacher(root["cfg"], fz, train, k) for k in range(3)]
    assert [now for _, now in again] == [False, False, False]
    assert [t.version for t, _ in again] == [t.version for t in fitted["teachers"]]
    pairs = inp.sets["test"].head(20)
    np.testing.assert_allclose(again[1][0].logits(pairs, fz), fitted["teachers"][1].logits(pairs, fz), atol=1e-5)
    assert again[1][0].layers == 2
    # the fast inference path agrees with the stock CrossEncoder.predict
    t = fitted["teachers"][2]
    q, it = fz.texts(pairs)
    np.testing.assert_allclose(t.logits_texts(q, it, model=t.ce), t.logits_plain(q, it), atol=1e-4)


def test_calibration_stacks_every_stage_and_fits_the_budget(fitted, root):
    cal = fitted["cal"]
    assert [len(s.members) for s in cal.stacks] == [1, 2, 3]
    ch = cal.search["chosen"]
    assert ch["cost_s_per_million"] <= root["cfg"].grading.compute_budget_s_per_million + 1e-9
    assert len(cal.thresholds) == 2 and ch["union_reach"][0] == 1.0
    assert abs(sum(cal.prior_train) - 1) < 1e-9 and cal.prior_train[0] > 0.3  # negatives: grade 0 is common


@pytest.mark.integration
def test_grade_flow_publishes_grades_views_and_report(graded, root):
    from relgrade.featurestore import historical_features, read_offline
    from relgrade.grading.stage import GRADE_COLUMNS
    from relgrade.io import read_parquet

    cfg, out = root["cfg"], graded
    snap = pd.Timestamp(cfg.snapshot_ts)
    union = read_parquet(cfg.paths.union(cfg.snapshot_ts))
    g = read_parquet(cfg.paths.grades)
    assert list(g.columns) == GRADE_COLUMNS and len(g) == len(union) == out["union"]["pairs"]
    assert (g["event_timestamp"] == snap).all() and (g["graded_at"] > snap).all()
    probs = g[[f"p_grade_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(g["expected_grade"], probs @ np.arange(4), atol=1e-6)
    assert set(g["deciding_stage"]) <= {0, 1, 2, 3} and (g["deciding_stage"] >= 2).any()
    assert g["difficulty_level"].between(1, 5).all()
    # the human anchor: judged pairs of train queries carry their judgment, no other pair does
    human = g["deciding_stage"] == 0
    assert human.any() and (g.loc[human, "teacher_version"] == "human").all()
    q = read_parquet(cfg.paths.table("queries"))
    split = dict(zip(q["query_id"], q["split"]))
    assert set(g.loc[human, "query_id"].map(split)) == {"train"}
    off = read_offline(cfg, "relevance_grade_fv")
    assert len(off) == len(g)
    prior = read_offline(cfg, "retrieval_prior_fv")
    m = prior.merge(g[["query_id", "item_id", "difficulty_level"]], on=["query_id", "item_id"], suffixes=("", "_g"))
    assert len(m) == len(g) and (m["difficulty_level"].astype(int) == m["difficulty_level_g"]).all()
    ent = g[["query_id", "item_id"]].head(5).assign(event_timestamp=snap + pd.Timedelta(hours=1))
    feats = historical_features(cfg, ent, ["relevance_grade_fv:grade"])
    assert feats["grade"].astype(int).tolist() == g["grade"].head(5).tolist()
    html_text = (cfg.paths.report("grading") / "report.html").read_text()
    for key in ("data:image/png;base64,", "Random-pair probe", "quality against compute", "best channel rank"):
        assert key in html_text


@pytest.mark.integration
def test_published_grades_fall_with_rank_and_the_probe_is_graded_zero(graded):
    pr = graded["probes"]
    bands = {b["group"]: b for b in pr["by_best_rank_band"]}
    assert bands[pr["top_band"]]["mean_expected_grade"] > bands[pr["deep_band"]]["mean_expected_grade"]
    assert graded["probe"]["pairs"] == 300 and graded["probe"]["grade_0_share"] >= 0.9
    assert graded["union"]["reach_share"]["2"] > 0.01  # a cross-encoder judges a real share of the union


@pytest.mark.integration
def test_reported_cascade_is_the_published_cascade(graded, root):
    """The report's cascade row grades the test pairs through the union's code path:
    its expected grades are those the union would get for the same pairs."""
    from relgrade.io import read_parquet

    cfg = root["cfg"]
    ts = read_parquet(cfg.paths.test_scores)
    g = read_parquet(cfg.paths.grades)
    both = ts.merge(g[["query_id", "item_id", "expected_grade"]], on=["query_id", "item_id"])
    assert len(both) > 0
    np.testing.assert_allclose(both["expected_grade_cascade"], both["expected_grade"], atol=1e-6)
    assert graded["metrics"]["cascade"]["thresholds"] == graded["thresholds"]


@pytest.mark.integration
def test_rerun_of_the_grade_flow_is_skipped(graded, root):
    from flows.grade import grade_flow

    cfg = root["cfg"]
    mtime = cfg.paths.grades.stat().st_mtime_ns
    again = grade_flow("quick", root["overrides"])
    assert again["stage_key"] == graded["stage_key"] and again["thresholds"] == graded["thresholds"]
    assert cfg.paths.grades.stat().st_mtime_ns == mtime


def _copy_inputs(src, dst, teachers: bool = True):
    for sub in ("contract", "mining", "cache") + (("models",) if teachers else ()):
        shutil.copytree(src / sub, dst / sub)


@pytest.mark.integration
def test_a_shifted_teacher_fails_the_random_pair_probe_and_nothing_lands(root, tmp_path):
    """Teachers fitted to the human judgments alone (no negatives: the supervision this
    stage had before) call random items relevant: the relevance_grade_fv suite refuses
    the batch and no view, grade file or report lands."""
    from flows.grade import grade_flow
    from validation.gate import ValidationFailed

    dst = tmp_path / "shifted"
    _copy_inputs(root["path"], dst, teachers=False)
    ov = {**root["overrides"], "data_root": str(dst),
          "grading": {**GRADING_OVERRIDES, "negatives": {"random_per_query": 0, "mined_per_query": 0}}}
    from relgrade.config import load_config

    cfg = load_config("quick", overrides=ov)
    with pytest.raises(ValidationFailed) as exc:
        grade_flow("quick", ov)
    assert "chk_grade0" in str(exc.value)
    assert not cfg.paths.feature_source("relevance_grade_fv").exists()
    assert not cfg.paths.feature_source("retrieval_prior_fv").exists()
    assert not cfg.paths.grades.exists() and not cfg.paths.test_scores.exists()
    assert not (cfg.paths.grading / "manifest.json").exists()


@pytest.mark.integration
def test_killed_run_resumes_without_regrading_and_matches_uninterrupted(root, tmp_path):
    from flows.grade import grade_flow
    from relgrade.config import load_config
    from relgrade.grading.stage import StopAfter

    dst = tmp_path / "resume"
    _copy_inputs(root["path"], dst)
    ov = {**root["overrides"], "data_root": str(dst)}
    cfg = load_config("quick", overrides=ov)
    with pytest.raises(StopAfter):
        grade_flow("quick", ov, stop_after=2)  # killed after two chunks
    assert not cfg.paths.grades.exists()
    chunk_dirs = list((cfg.paths.grading / "chunks").iterdir())
    assert len(chunk_dirs) == 1
    written = sorted(chunk_dirs[0].glob("chunk_*.parquet"))
    assert len(written) == 2
    mtimes = [p.stat().st_mtime_ns for p in written]
    resumed = grade_flow("quick", ov)
    assert resumed["union"]["resumed_chunks"] == 2
    assert resumed["union"]["graded_chunks"] == resumed["union"]["chunks"] - 2 > 0
    assert [p.stat().st_mtime_ns for p in written] == mtimes  # never regraded
    a = pd.read_parquet(cfg.paths.grades).drop(columns=["graded_at"])
    shutil.rmtree(cfg.paths.grading)  # an uninterrupted run from scratch (same teachers)
    fresh = grade_flow("quick", ov)
    assert fresh["union"]["resumed_chunks"] == 0
    pd.testing.assert_frame_equal(a, pd.read_parquet(cfg.paths.grades).drop(columns=["graded_at"]))


@pytest.mark.integration
def test_label_round_trips_union_pairs_and_grades_new_text(graded, root, tmp_path):
    from typer.testing import CliRunner

    from relgrade.cli import app
    from relgrade.io import read_parquet

    cfg = root["cfg"]
    g = read_parquet(cfg.paths.grades)
    g = g[g["deciding_stage"] > 0].sample(60, random_state=0)  # teacher-graded (anchored pairs carry a judgment)
    q = read_parquet(cfg.paths.table("queries"))
    c = read_parquet(cfg.paths.table("catalog"))
    text = dict(zip(q["query_id"], q["text"]))
    title = dict(zip(c["item_id"].astype(str), c["title"]))
    src = tmp_path / "pairs.csv"
    pd.DataFrame({"query": g["query_id"].map(text), "item_id": g["item_id"]}).to_csv(src, index=False)
    out = tmp_path / "graded.parquet"
    res = CliRunner().invoke(app, ["label", str(src), "-o", str(out), "--profile", "quick",
                                   "--data-root", str(cfg.paths.root)])
    assert res.exit_code == 0, res.output
    lab = pd.read_parquet(out)
    assert list(lab["query_id"]) == list(g["query_id"]) and list(lab["item_id"]) == list(g["item_id"])
    np.testing.assert_allclose(lab["expected_grade"], g["expected_grade"], atol=1e-6)
    assert (lab["grade"].to_numpy() == g["grade"].to_numpy()).all()
    assert (lab["deciding_stage"].to_numpy() == g["deciding_stage"].to_numpy()).all()
    for col in ("p_grade_0", "p_grade_3", "confidence", "teacher_version", "cascade"):
        assert col in lab.columns
    # new text: a query nobody typed before and a title outside the catalog
    src2 = tmp_path / "new.csv"
    pd.DataFrame({"query": ["cordless drill", "cordless drill"],
                  "title": ["DEWALT 20-Volt MAX Cordless Drill/Driver Kit", "Glacier Bay Toilet Seat in White"]}
                 ).to_csv(src2, index=False)
    res = CliRunner().invoke(app, ["label", str(src2), "-o", str(tmp_path / "new.csv.out.csv"), "--profile", "quick",
                                   "--data-root", str(cfg.paths.root)])
    assert res.exit_code == 0, res.output
    new = pd.read_csv(tmp_path / "new.csv.out.csv")
    assert new["expected_grade"].iloc[0] > new["expected_grade"].iloc[1]


@pytest.mark.integration
@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("query,sku\ndrill,1\n", "item_id"),
    ("item_id\n100001\n", "query"),
    ("query_id,item_id\nq-unknown,100001\n", "query_id this data root does not hold"),
    ("query,item_id\ndrill,no-such-item\n", "item_id the catalog does not hold"),
])
def test_label_refuses_bad_input_and_writes_nothing(graded, root, tmp_path, content, message):
    from typer.testing import CliRunner

    from relgrade.cli import app

    src = tmp_path / "bad.csv"
    src.write_text(content)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["label", str(src), "-o", str(out), "--profile", "quick",
                                   "--data-root", str(root["cfg"].paths.root)])
    assert res.exit_code != 0 and message in res.output, res.output
    assert not out.exists()


def _judge_settings(root, url: str, **kw):
    return root["cfg"].grading.llm_judge.model_copy(update={"enabled": True, "base_url": url, "timeout_s": 5,
                                                            "backoff_s": 0.01, **kw})


def _ce_grader(fitted):
    """The trained stage-2 cross-encoder as the model behind the endpoint."""
    from relgrade.grading.calibration import decide_grade

    t = fitted["teachers"][1]
    return lambda q, p: int(decide_grade(t.proba_from_logits(t.logits_texts([q], [p])), "quadratic")[0])


def test_llm_judge_unreachable_gives_clear_error_and_keeps_previous_grades(fitted, root, tmp_path):
    from relgrade.grading import stage as S
    from relgrade.grading.cascade import TeacherCascade
    from relgrade.grading.llm_judge import LLMJudgeTeacher, LLMJudgeUnavailable

    url = f"http://127.0.0.1:{free_port()}/v1"
    g = root["cfg"].grading
    cfg = root["cfg"].model_copy(update={"grading": g.model_copy(update={"llm_judge": _judge_settings(root, url)})})
    cal = fitted["cal"]
    with pytest.raises(LLMJudgeUnavailable, match="unreachable"):
        S.build_cascade(cfg, cal)
    # graded anyway (e.g. the endpoint died mid-run): failed pairs keep their earlier grade
    llm = LLMJudgeTeacher(_judge_settings(root, url, max_retries=1), tmp_path / "c.sqlite")
    cas = TeacherCascade(cal.stacks, cal.thresholds, llm, llm_threshold=1.0)
    base = TeacherCascade(cal.stacks, cal.thresholds)
    pairs = fitted["inp"].union.head(40)
    res = cas.grade(pairs, fitted["fz"], None, llm_share=0.1)
    ref = base.grade(pairs, fitted["fz"])
    assert res.llm_failed == 4 and res.stage.max() <= 3
    np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6)
    assert llm.summary()["failed"] == 4 and llm.summary()["retries"] == 4


def test_llm_judge_retries_throttling_and_caches_answers(fitted, root, tmp_path):
    from openai_server import serve
    from relgrade.grading.llm_judge import LLMJudgeTeacher

    q, it = fitted["fz"].texts(fitted["inp"].sets["test"].head(6))
    with serve(_ce_grader(fitted), fail_first=3, fail_status=429) as srv:
        llm = LLMJudgeTeacher(_judge_settings(root, srv.url, concurrency=2), tmp_path / "cache.sqlite")
        first = llm.grade_texts(q, it)
        assert (first >= 0).all() and llm.stats["retries"] == 3 and llm.stats["failed"] == 0
        assert srv.completions == 6 and llm.stats["prompt_tokens"] > 0
        again = LLMJudgeTeacher(_judge_settings(root, srv.url), tmp_path / "cache.sqlite").grade_texts(q, it)
        assert (again == first).all() and srv.completions == 6  # a rerun never pays twice
    with serve(_ce_grader(fitted), fail_first=100, fail_status=400) as srv:  # not retryable
        llm = LLMJudgeTeacher(_judge_settings(root, srv.url, cache=False), None)
        assert (llm.grade_texts(q[:2], it[:2]) == -1).all() and llm.stats["retries"] == 0 and srv.requests == 2


@pytest.mark.integration
def test_grade_flow_with_a_live_llm_judge_on_loopback(fitted, root, tmp_path):
    """The whole stage with the judge as its last stage, against an OpenAI-compatible
    server on loopback answering from the trained stage-2 cross-encoder: escalated union
    pairs are judged, the judge's agreement with the human grades is measured through the
    same HTTP path, and tokens and latency reach the report."""
    from flows.grade import grade_flow
    from openai_server import serve
    from relgrade.io import read_parquet

    dst = tmp_path / "llm"
    _copy_inputs(root["path"], dst)
    with serve(_ce_grader(fitted)) as srv:
        ov = {**root["overrides"], "data_root": str(dst),
              "grading": {**GRADING_OVERRIDES, "llm_judge": {"enabled": True, "base_url": srv.url, "max_share": 0.05,
                                                             "min_confidence": 1.0, "eval_pairs": 40, "few_shot": 4},
                          # the tiny model behind the endpoint judges some random probe pairs relevant
                          "probe": {"random_pairs": 300, "min_random_grade0_share": 0.9}}}
        out = grade_flow("quick", ov)
        served = srv.completions
    j = out["llm_judge"]
    assert j["requests"] >= served > 0 and j["prompt_tokens"] > 0 and j["latency_median_s"] is not None
    assert j["union_pairs_judged"] > 0 and j["few_shot"] == 4
    g = read_parquet(dst / "grading" / "grades.parquet")
    assert (g["deciding_stage"] == 4).sum() > 0 and g["teacher_version"].str.startswith("llm-judge@").any()
    m = out["metrics"]["llm_judge_alone"]
    assert m["n"] == 40 - m["pairs_failed"] and 0 <= m["binary"] <= 1


def test_bad_union_is_rejected_and_nothing_is_written(root, tmp_path):
    from relgrade.config import load_config
    from relgrade.contract import ContractError
    from relgrade.grading.stage import load_inputs
    from relgrade.io import read_parquet, write_parquet_atomic

    cfg = load_config("quick", overrides={**root["overrides"], "data_root": str(tmp_path / "bad")})
    shutil.copytree(root["path"] / "contract", cfg.paths.contract)
    u = read_parquet(root["cfg"].paths.union(root["cfg"].snapshot_ts))
    write_parquet_atomic(u.drop(columns=["rank_dense"]), cfg.paths.union(cfg.snapshot_ts))
    with pytest.raises(ContractError, match="rank_dense"):
        load_inputs(cfg)
    write_parquet_atomic(pd.concat([u, u.head(3)]), cfg.paths.union(cfg.snapshot_ts))
    with pytest.raises(ContractError, match="duplicated"):
        load_inputs(cfg)
    assert not cfg.paths.grades.exists()


def test_features_are_bit_identical_across_processes(root, fitted):
    """A resumed run is a new process: features (and so teacher versions and grades) must
    not depend on string-hash order (bm25s numbers its vocabulary in set order)."""
    import subprocess
    import sys

    code = (
        "import hashlib; from relgrade.config import load_config; from relgrade.grading import stage as S; "
        "from relgrade.grading.features import PairFeaturizer; "
        f"cfg = load_config('quick', overrides={root['overrides']!r}); inp = S.load_inputs(cfg); "
        "X = PairFeaturizer(cfg, inp.catalog, inp.queries).transform(inp.union.head(3000)); "
        "print(hashlib.sha256(X.tobytes()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
