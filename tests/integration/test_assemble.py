"""Assemble stage (gated engagement, blended targets, point-in-time training set) on a
slice of the real Home Depot data in a tmp data root: contract tables -> simulated log ->
engagement, retrieval-prior and grade batches published through the real Feast store and
validation gate -> assembly through Feast get_historical_features.

Grades: the grading stage publishes relevance_grade_fv in the real pipeline; here a
stand-in batch is built from the human judgments of the slice (judged pairs: the human
grade; other union pairs: a grade from the lexical rank) and published through the same
gate, so the assembly reads it from Feast exactly as it would read the cascade's."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.runtime import prefect_env
from relgrade.adapters.homedepot import load
from relgrade.config import REPO_ROOT, load_config
from relgrade.contract import conform
from relgrade.io import write_tables_atomic
from relgrade.simulate import query_segments

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
N_QUERIES = 150
OVERRIDES = {
    "simulation": {"days": 10, "searches_per_day": 400},
    "mining": {"k": 20, "channels": ["lexical"]},
}


def _cfg(root, **assemble):
    ov = {"data_root": str(root), **OVERRIDES}
    if assemble:
        ov["assemble"] = assemble
    return load_config("quick", overrides=ov)


def _publish(cfg, view, batch):
    from validation.gate import gate_for
    from relgrade.featurestore import publish

    return publish(cfg, view, batch, gate_for(cfg, view))


def grade_batch(union: pd.DataFrame, judgments: pd.DataFrame, ts, version="test-human-v0") -> pd.DataFrame:
    """Stand-in relevance_grade_fv batch: human grade where judged, else from the rank."""
    j = judgments[["query_id", "item_id", "grade"]].astype({"query_id": str, "item_id": str})
    g = union[["query_id", "item_id", "rank_lexical"]].merge(j, on=["query_id", "item_id"], how="left")
    r = pd.to_numeric(g["rank_lexical"]).fillna(99).to_numpy()
    fallback = np.where(r <= 3, 2, np.where(r <= 10, 1, 0))
    grade = np.where(g["grade"].notna(), pd.to_numeric(g["grade"]).fillna(0).to_numpy(), fallback).astype(int)
    p = np.full((len(g), 4), 0.05)
    p[np.arange(len(g)), grade] = 0.85
    out = pd.DataFrame({"query_id": g["query_id"], "item_id": g["item_id"]})
    out["event_timestamp"] = pd.Timestamp(ts)
    out["grade"] = grade
    out["expected_grade"] = (p * np.arange(4)).sum(axis=1)
    out["confidence"] = 0.85
    for k in range(4):
        out[f"p_grade_{k}"] = p[:, k]
    out["deciding_stage"] = 1
    out["teacher_version"] = version
    return out


def attributes_batch(queries: pd.DataFrame, catalog: pd.DataFrame, ts, version="test-weak-v0") -> pd.DataFrame:
    """Stand-in query_attributes_fv batch: the catalog lexicon's weak tags of every query
    (the attributes stage publishes its tagger's tags through the same gate)."""
    from relgrade.attributes.lexicon import build_lexicon, weak_tags
    from relgrade.attributes.schema import tokens_of
    from relgrade.attributes.stage import attribute_rows

    lex = build_lexicon(catalog["title"].astype(str).tolist(), min_count=2)
    toks = [tokens_of(t) for t in queries["text"]]
    out = attribute_rows(queries.assign(split=None), toks, [weak_tags(t, lex) for t in toks], version)
    return out.assign(query_id=out["query_id"].astype(str), event_timestamp=pd.Timestamp(ts))


def _publish_attributes(cfg, batch, queries):
    from validation.gate import gate_for
    from relgrade.featurestore import publish

    texts = pd.Series(queries["text"].to_numpy(), index=queries["query_id"].astype(str))
    return publish(cfg, "query_attributes_fv", batch, gate_for(cfg, "query_attributes_fv", query_texts=texts))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with contract tables, events, union and the four feature views."""
    from relgrade.engagement import engagement_features
    from relgrade.mining.stage import build_union, default_snapshot, fit_and_search, write_union
    from relgrade.mining.union import to_feature_batch
    from relgrade.simulate import simulate

    root = tmp_path_factory.mktemp("assemble_root")
    cfg = _cfg(root)
    prefect_env(cfg)
    raw = load(HD_ZIP)
    queries = raw["queries"].sort_values("query_id").head(N_QUERIES).reset_index(drop=True)
    queries["segment"] = query_segments(queries["query_id"], cfg.simulation).values
    judgments = raw["judgments"][raw["judgments"]["query_id"].isin(queries["query_id"])].reset_index(drop=True)
    cat = raw["catalog"]
    keep = set(judgments["item_id"]) | set(cat["item_id"].sort_values().head(4000))
    catalog = cat[cat["item_id"].isin(keep)].reset_index(drop=True)
    tables = {"catalog": conform(catalog, "catalog"), "queries": conform(queries, "queries"),
              "judgments": conform(judgments, "judgments")}
    events = simulate(tables["catalog"], tables["queries"], tables["judgments"], cfg.simulation)
    tables["events"] = conform(events, "events")
    write_tables_atomic({cfg.paths.table(k): v for k, v in tables.items()})
    _publish(cfg, "gated_engagement_fv", engagement_features(events, tables["queries"], windows_days=(7, 28)))
    snap = default_snapshot(cfg)
    lex = fit_and_search("lexical", cfg, tables["catalog"], tables["queries"])
    union = build_union({"lexical": lex}, cfg, snap)
    write_union(cfg, union, snap)
    _publish(cfg, "retrieval_prior_fv", to_feature_batch(union, snap))
    _publish(cfg, "relevance_grade_fv", grade_batch(union, tables["judgments"], snap))
    _publish_attributes(cfg, attributes_batch(tables["queries"], tables["catalog"], snap), tables["queries"])
    return {"root": root, "cfg": cfg, "snap": snap, "union": union, **tables}


# --------------------------------------------------------------------------- pure logic
def test_gating_fills_preference_only_for_relevant_shown_pairs():
    from relgrade.assemble.gating import gate_engagement

    feats = pd.DataFrame({"query_id": ["q1"] * 4 + ["q2"], "item_id": ["a", "b", "c", "d", "a"],
                          "impressions_28d": [10, 10, 0, 10, 5], "engagement_smoothed": [0.3, 0.2, 0.1, 0.4, 0.0]})
    grades = pd.DataFrame({"query_id": ["q1", "q1", "q1", "q2"], "item_id": ["a", "b", "c", "a"],
                           "grade": [3, 1, 2, 2], "confidence": [0.9, 0.9, 0.9, 0.4]})
    out = gate_engagement(feats, grades, min_grade=2, min_confidence=0.5)
    pref = out["gated_preference"].tolist()
    assert pref[0] == pytest.approx(0.3)  # relevant, shown
    assert np.isnan(pref[1])  # graded irrelevant: absent, not 0
    assert np.isnan(pref[2])  # relevant but never shown: no evidence
    assert np.isnan(pref[3])  # ungraded
    assert np.isnan(pref[4])  # relevant but confidence below the gate; a 0.0 engagement is not copied either
    out2 = gate_engagement(feats, grades, min_grade=2, min_confidence=0.0)
    assert out2["gated_preference"].iloc[4] == 0.0  # a real zero stays a zero once it is evidence


def test_blended_target_formula_range_and_grade_dominance():
    from relgrade.assemble.targets import add_targets, list_form

    df = pd.DataFrame({
        "query_id": ["q"] * 6, "item_id": list("abcdef"),
        "expected_grade": [3.0, 3.0, 2.0, 0.0, np.nan, 1.0],
        "retrieval_prior": [0.1, 0.9, 1.0, 1.0, 0.5, 0.0],
        "gated_preference": [0.9, 0.1, 0.5, np.nan, np.nan, np.nan],
        "engagement_confidence": [1.0, 1.0, 0.5, 0.9, 0.0, 0.0],
        "impressions_28d": [100, 100, 10, 0, np.nan, 3], "clicks_28d": [30, 5, 1, 0, np.nan, 3],
        "difficulty_level": [1, 2, 3, 4, 5, 3],
    })
    out = add_targets(df, 0.75, 0.15, 0.10, click_prior_impressions=10)
    t = out["target"].to_numpy()
    assert ((t >= 0) & (t <= 1)).all()
    # row a: g=1, prior .1, pref = 0.5 + 1.0*(pct 5/6 - .5) (3 rows with a preference; a ranks 3rd of 3)
    pct_a = (3 - 0.5) / 3
    assert t[0] == pytest.approx(0.75 + 0.15 * 0.1 + 0.10 * (0.5 + (pct_a - 0.5)))
    # grade dominates: a grade-2 item with the best prior and preference stays below grade 3
    assert t[2] < min(t[0], t[1])
    assert t[3] < t[2]  # grade 0 with prior 1.0 below grade 2
    # an irrelevant / unshown item gets the neutral preference, not a penalty
    assert out["preference_term"].iloc[3] == 0.5
    # no grade: the grade term falls back to the prior, flagged
    assert out["target_source"].iloc[4] == "prior_only" and np.isnan(out["grade_target"].iloc[4])
    assert t[4] == pytest.approx(0.75 * 0.5 + 0.15 * 0.5 + 0.10 * 0.5)
    assert out["grade_target"].iloc[2] == pytest.approx(2 / 3)
    ct = out["click_target"].to_numpy()
    assert np.isnan(ct[3]) and np.isnan(ct[4])  # no impressions: null, not 0
    ctr0 = 39 / 213
    assert ct[0] == pytest.approx((30 + 10 * ctr0) / 110)
    with pytest.raises(ValueError, match="sum to 1"):
        add_targets(df, 0.5, 0.5, 0.5)
    lists = list_form(out).to_pylist()
    assert len(lists) == 1 and lists[0]["targets"] == sorted(lists[0]["targets"], reverse=True)
    assert set(lists[0]["item_ids"]) == set("abcdef")


def test_config_rejects_weights_that_do_not_sum_to_one(tmp_path):
    with pytest.raises(Exception, match="sum to 1"):
        _cfg(tmp_path, weight_grade=0.9, weight_prior=0.15, weight_preference=0.1)


# --------------------------------------------------------------------------- assembly through Feast
def _run_assembly(cfg):
    from relgrade.assemble.build import assemble

    return assemble(cfg, publish_gated=lambda b: _publish(cfg, "gated_engagement_fv", b))


def _ctx(cfg, world):
    from validation.suites import TrainingSetContext

    q = world["queries"]
    a = cfg.assemble
    return TrainingSetContext(item_ids=pd.Index(world["catalog"]["item_id"]), query_ids=pd.Index(q["query_id"]),
                              excluded_query_ids=pd.Index(q.loc[q["split"] != "train", "query_id"]),
                              min_list_size=a.min_list_size, max_list_size=a.max_list_size,
                              max_level_share=a.max_level_share, min_levels_present=a.min_levels_present,
                              gate_min_grade=a.gate_min_grade)


@pytest.fixture(scope="module")
def assembled(world):
    return _run_assembly(world["cfg"])


def test_training_set_is_point_in_time_train_only_and_valid(world, assembled):
    from relgrade.assemble.build import TRAINSET_COLUMNS, trainset_frame
    from relgrade.featurestore import read_offline
    from validation.gate import validate

    cfg, q = world["cfg"], world["queries"]
    train = assembled["train"]
    split = dict(zip(q["query_id"], q["split"]))
    # one row per union pair of a train query, no dev / test query
    u = world["union"]
    want = u[u["query_id"].map(split) == "train"]
    assert len(train) == len(want) and not train.duplicated(["query_id", "item_id"]).any()
    assert set(train["query_id"].map(split)) == {"train"}
    assert set(assembled["report_rows"]["query_id"].map(split)) == {"dev"}
    assert (train["event_timestamp"] == world["snap"]).all()
    assert list(trainset_frame(train).columns) == TRAINSET_COLUMNS
    assert train["target"].between(0, 1).all() and train["difficulty_level"].between(1, 5).all()
    # gated engagement was refreshed at the cut, gated by grade, and reached the set
    gated = assembled["gated"]
    assert gated["pairs_gated"] > 0 and gated["publish"]["rows"] == gated["pairs"]
    eng = read_offline(cfg, "gated_engagement_fv")
    at_cut = eng[eng["event_timestamp"] == world["snap"]]
    assert at_cut["gated_preference"].notna().sum() == gated["pairs_gated"]
    has_pref = train["gated_preference"].notna()
    assert has_pref.sum() > 0 and (train.loc[has_pref, "grade"] >= cfg.assemble.gate_min_grade).all()
    assert train.loc[train["grade"] < cfg.assemble.gate_min_grade, "gated_preference"].isna().all()
    # the engagement values equal the as-of-cut aggregates (not some other day's)
    m = train[has_pref].merge(at_cut, on=["query_id", "item_id"], suffixes=("", "_fv"))
    np.testing.assert_allclose(m["gated_preference"], m["gated_preference_fv"])
    # leakage columns all at or before the cut
    for v in ("retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv", "query_attributes_fv"):
        k = train[f"known_at_{v}"].dropna()
        assert len(k) and (k <= world["snap"]).all()
    rep = validate(train, "training_set", cfg, _ctx(cfg, world))
    assert rep.success


def test_test_split_query_is_excluded_and_rejected_by_the_gate(world, assembled):
    from validation.gate import ValidationFailed, validate

    cfg, q = world["cfg"], world["queries"]
    test_q = set(q.loc[q["split"] == "test", "query_id"])
    assert test_q and not (set(assembled["train"]["query_id"]) & test_q)
    # a test-split query smuggled into the set is caught by the suite
    bad = assembled["train"].copy()
    row = bad.iloc[[0]].copy()
    row["query_id"] = sorted(test_q)[0]
    bad = pd.concat([bad, row], ignore_index=True)
    with pytest.raises(ValidationFailed, match="chk_query_not_excluded"):
        validate(bad, "training_set", cfg, _ctx(cfg, world))
    with pytest.raises(ValueError, match="test split"):
        from relgrade.assemble.build import assemble

        assemble(_cfg(world["root"], splits=["train"], report_split="dev").model_copy(
            update={"assemble": world["cfg"].assemble.model_copy(update={"splits": ["train", "test"]})}))


def test_grade_rewritten_after_the_cut_does_not_leak(world, assembled):
    """Grades re-written one day after the snapshot: a cut between the snapshot and the
    re-write sees the snapshot grade; a later re-write the cut does see replaces it; the
    leakage check flags a row whose values only exist after the cut."""
    from relgrade.assemble.build import feature_known_at
    from validation.gate import ValidationFailed, validate

    root, snap = world["root"], world["snap"]
    train = assembled["train"]
    pick = train[train["grade"].notna()].drop_duplicates("query_id").head(20)[["query_id", "item_id", "grade"]]
    u = world["union"].merge(pick[["query_id", "item_id"]], on=["query_id", "item_id"])
    early = grade_batch(u, world["judgments"], snap + timedelta(hours=12), version="rewrite-early")
    late = grade_batch(u, world["judgments"], snap + timedelta(days=3), version="rewrite-late")
    flip = lambda g: 3 - g  # noqa: E731
    for b, ver in ((early, "rewrite-early"), (late, "rewrite-late")):
        b["grade"] = flip(b["grade"])
        p = np.full((len(b), 4), 0.05)
        p[np.arange(len(b)), b["grade"].to_numpy()] = 0.85
        for k in range(4):
            b[f"p_grade_{k}"] = p[:, k]
        b["expected_grade"] = (p * np.arange(4)).sum(axis=1)
    cfg = world["cfg"]
    _publish(cfg, "relevance_grade_fv", late)
    # cut at the snapshot: the late re-write must not reach the set, the snapshot grade must
    res = _run_assembly(cfg)
    got = res["train"].merge(pick, on=["query_id", "item_id"], suffixes=("", "_snap"))
    assert len(got) == len(pick)
    assert (got["grade"] == got["grade_snap"]).all()
    assert (got["teacher_version"] == "test-human-v0").all()
    # a cut one day after the snapshot sees the early re-write (before it), not the late one
    _publish(cfg, "relevance_grade_fv", early)
    cfg2 = _cfg(root, cut_ts=(snap + timedelta(days=1)).isoformat(), refresh_engagement=False)
    res2 = _run_assembly(cfg2)
    got2 = res2["train"].merge(pick, on=["query_id", "item_id"], suffixes=("", "_snap"))
    assert (got2["grade"] == 3 - got2["grade_snap"]).all() and (got2["teacher_version"] == "rewrite-early").all()
    assert (res2["train"]["known_at_relevance_grade_fv"].dropna() <= snap + timedelta(days=1)).all()
    # the check itself: a row carrying the late grade's values is flagged as a leak
    leaked = res["train"].copy()
    idx = leaked.index[leaked.set_index(["query_id", "item_id"]).index.isin(
        pd.MultiIndex.from_frame(pick[["query_id", "item_id"]]))]
    lt = late.set_index(["query_id", "item_id"])
    for c in ("grade", "expected_grade", "confidence", "p_grade_0", "p_grade_1", "p_grade_2", "p_grade_3",
              "deciding_stage", "teacher_version"):
        leaked.loc[idx, c] = lt.loc[list(zip(leaked.loc[idx, "query_id"], leaked.loc[idx, "item_id"])), c].to_numpy()
    known = feature_known_at(cfg, leaked, "relevance_grade_fv")
    assert (known[idx] == snap + timedelta(days=3)).all()
    leaked["known_at_relevance_grade_fv"] = known
    leaked["grade"] = leaked["grade"].astype("Int64")
    with pytest.raises(ValidationFailed, match="chk_no_leak_relevance_grade_fv"):
        validate(leaked, "training_set", cfg, _ctx(cfg, world))


def test_query_attributes_join_every_pair_of_their_query_point_in_time(world, assembled):
    """query_attributes_fv is keyed by the query alone: every (query, item) row of a query
    carries its attributes as of the cut; a re-tagging stamped after the cut does not
    reach the set, one stamped before a later cut does, and the leakage check flags a
    row carrying values stored only after the cut."""
    from relgrade.assemble.build import feature_known_at
    from validation.gate import ValidationFailed, validate

    cfg, snap, q = world["cfg"], world["snap"], world["queries"]
    train = assembled["train"]
    ref = attributes_batch(q, world["catalog"], snap).set_index("query_id")
    typed = train["query_id"].map(ref["product_type"])
    assert typed.notna().mean() > 0.5
    assert (train["product_type"].fillna("<none>") == typed.fillna("<none>")).all()
    assert (train["n_attributes"] == train["query_id"].map(ref["n_attributes"])).all()
    # re-tag some queries after the cut with a different product type
    pick = sorted(train.loc[train["product_type"].notna(), "query_id"].unique())[:5]
    sub = q[q["query_id"].isin(pick)]
    late = attributes_batch(sub, world["catalog"], snap + timedelta(days=2), version="retag-late")
    late["product_type"] = None  # a value that is still a span of the query (none)
    _publish_attributes(cfg, late, q)
    res = _run_assembly(cfg)
    got = res["train"][res["train"]["query_id"].isin(pick)]
    assert len(got) and got["product_type"].notna().all() and (got["known_at_query_attributes_fv"] <= snap).all()
    cfg2 = _cfg(world["root"], cut_ts=(snap + timedelta(days=3)).isoformat(), refresh_engagement=False)
    res2 = _run_assembly(cfg2)
    got2 = res2["train"][res2["train"]["query_id"].isin(pick)]
    assert len(got2) == len(got) and got2["product_type"].isna().all()
    # the check itself: the late values on a row stamped at the snapshot are a leak
    leaked = res["train"].copy()
    rows = leaked["query_id"].isin(pick)
    leaked.loc[rows, "product_type"] = None
    leaked.loc[rows, "tagger_version"] = "retag-late"
    known = feature_known_at(cfg, leaked, "query_attributes_fv")
    assert (known[rows] == snap + timedelta(days=2)).all() and (known[~rows] <= snap).all()
    leaked["known_at_query_attributes_fv"] = known
    with pytest.raises(ValidationFailed, match="chk_no_leak_query_attributes_fv"):
        validate(leaked, "training_set", cfg, _ctx(cfg, world))


def test_cut_before_the_snapshot_is_rejected(world):
    from relgrade.assemble.build import assemble

    cfg = _cfg(world["root"], cut_ts=(world["snap"] - timedelta(days=1)).isoformat())
    with pytest.raises(ValueError, match="precedes the mining snapshot"):
        assemble(cfg)


@pytest.mark.integration
def test_assemble_flow_writes_set_lists_manifest_report(world, assembled):
    from flows.assemble import assemble_flow
    from relgrade.assemble.build import output_paths

    cfg = world["cfg"]
    out = assemble_flow("quick", {"data_root": str(world["root"]), **OVERRIDES})
    paths = output_paths(cfg)
    ts = pq.read_table(paths["trainset"]).to_pandas()
    lists = pq.read_table(paths["lists"]).to_pandas()
    man = json.loads(paths["manifest"].read_text())
    assert len(ts) == man["rows"]["trainset"] == out["rows"]["trainset"] > 0
    assert len(lists) == ts["query_id"].nunique() == man["rows"]["queries"]
    assert sum(len(x) for x in lists["item_ids"]) == len(ts)
    assert man["feature_service"]["name"] == "training_v2"
    assert set(man["feature_views"]) == {"retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv",
                                         "query_attributes_fv"}
    assert any(f.startswith("query_attributes_fv:") for f in man["feature_service"]["features"])
    assert "test-human-v0" in man["teacher_versions"]
    from relgrade.io import frame_digest

    assert man["content_hash"] == frame_digest(ts)
    rep = json.loads(paths["report_json"].read_text())
    sig = rep["rank_correlation_with_human_grade"]["signals"]
    assert {"ctr_raw_28d", "ctr_debiased_28d", "gated_preference", "retrieval_prior", "grade", "target"} <= set(sig)
    html_text = paths["report_html"].read_text()
    assert "data:image/png;base64," in html_text and "<script" not in html_text
    assert (cfg.paths.data_docs / "assemble_report.html").exists()
    # a batch the gate rejects writes nothing: the previous outputs stay as they were
    from relgrade.assemble.stage import run
    from relgrade.io import file_digest
    from validation.gate import ValidationFailed

    before = {k: file_digest(paths[k]) for k in ("trainset", "lists", "manifest")}
    strict = _cfg(world["root"], max_list_size=5, refresh_engagement=False)  # the slice has 20-row lists
    with pytest.raises(ValidationFailed, match="chk_list_size"):
        run(strict)
    assert {k: file_digest(paths[k]) for k in before} == before
