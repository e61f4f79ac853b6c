"""Multi-channel retrieval mining (docs/mining.md): tokenizer, prior, categories and
levels, union, channels on a slice of the real Home Depot data, the behavioural
channel's no-future rule, external-channel validation, and (integration) the mine flow
end to end through Prefect, Great Expectations and Feast on a tiny data root."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from relgrade.adapters.homedepot import load
from relgrade.config import REPO_ROOT, SimulationConfig
from relgrade.contract import ContractError
from relgrade.mining import (
    BehavioralChannel,
    ExternalChannel,
    LexicalChannel,
    categorize,
    refine_levels,
    retrieval_prior,
    to_feature_batch,
    tokenize,
)
from relgrade.mining import union as U
from relgrade.simulate import query_segments, simulate

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
SNAP = pd.Timestamp("2026-07-15T00:00:00Z")


# --------------------------------------------------------------------------- data slice
@pytest.fixture(scope="module")
def data():
    """First 150 queries by id, their judgments, the items judged for them."""
    raw = load(HD_ZIP, judged_at="2026-06-01T00:00:00Z")
    sim = SimulationConfig(days=14, searches_per_day=400)
    queries = raw["queries"].sort_values("query_id").head(150).reset_index(drop=True)
    queries["segment"] = query_segments(queries["query_id"], sim).values
    j = raw["judgments"][raw["judgments"]["query_id"].isin(queries["query_id"])].reset_index(drop=True)
    catalog = raw["catalog"][raw["catalog"]["item_id"].isin(j["item_id"])].reset_index(drop=True)
    return {"catalog": catalog, "queries": queries, "judgments": j, "sim": sim}


@pytest.fixture(scope="module")
def events(data):
    return simulate(data["catalog"], data["queries"], data["judgments"], data["sim"])


# --------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize(
    "text,expected",
    [
        ("3/4 in. x 10 ft. copper pipe", ["3/4", "inch", "10", "ft", "copper", "pipe"]),
        ('10" saw blade', ["10", "inch", "saw", "blade"]),
        ("8' ladder", ["8", "ft", "ladder"]),
        ("10ft hose", ["10", "ft", "hose"]),
        ("6.2 cu. ft. washer", ["6.2", "cuft", "washer"]),
        ("18v batteries", ["18", "volt", "battery"]),
        ("DEWALT 20-Volt MAX drill", ["dewalt", "20", "volt", "max", "drill"]),
        ("600-Watt", ["600", "watt"]),
        ("3.0ah battery", ["3", "ah", "battery"]),
        ("5,000 BTU window unit", ["5000", "btu", "window", "unit"]),
        ("1-1/2 in. PVC", ["1-1/2", "inch", "pvc"]),
        ("1 1/2 in. PVC", ["1-1/2", "inch", "pvc"]),
        ("2 x 4 x 8 ft", ["2", "4", "8", "ft"]),
        ("38x64 door", ["38", "64", "door"]),
        ("toilet 1.28 gpf", ["toilet", "1.28", "gpf"]),
        # model codes: kept whole, and hyphenated ones also joined
        ("DCD771C2", ["dcd771c2"]),
        ("RO-2000 filter", ["ro", "2000", "ro2000", "filter"]),
        # hyphenation: parts
        ("self-tapping screws", ["self", "tapping", "screw"]),
        ("lithium-ion", ["lithium", "ion"]),
        # "in" as a word is a stop word; as a unit it is inch
        ("in stock outdoor lights", ["stock", "outdoor", "light"]),
        ("Café", ["cafe"]),
        ("", []),
        (None, []),
    ],
)
def test_tokenize(text, expected):
    assert tokenize(text) == expected


def test_tokenize_unit_spellings_meet():
    # the same size written four ways gives the same tokens
    forms = ["12 in.", "12in", '12"', "12 inch", "12-inch", "12 Inches"]
    assert {tuple(tokenize(f)) for f in forms} == {("12", "inch")}
    assert tokenize("18-Volt") == tokenize("18v") == tokenize("18 volts") == ["18", "volt"]
    # a model code typed with or without its hyphen shares a token
    assert set(tokenize("ro2000")) & set(tokenize("RO-2000"))


# --------------------------------------------------------------------------- prior
def _union_rows(ranks: list[tuple], active: str = "LDB-") -> pd.DataFrame:
    """Rows of one query: each tuple gives (lexical, dense, behavioral) ranks or None."""
    rows = []
    for i, (rl, rd, rb) in enumerate(ranks):
        rows.append({"query_id": "q1", "item_id": f"i{i}", "rank_lexical": rl, "rank_dense": rd,
                     "rank_behavioral": rb, "rank_external": None, "active_channels": active})
    df = pd.DataFrame(rows)
    for c in ("rank_lexical", "rank_dense", "rank_behavioral", "rank_external"):
        df[c] = pd.array(df[c], dtype="Int64")
    return df


def test_prior_is_in_unit_interval_on_random_patterns():
    rng = np.random.default_rng(0)
    n = 5000
    ranks = rng.integers(1, 101, size=(n, 3)).astype(object)
    ranks[rng.random((n, 3)) < 0.5] = None
    ranks[ranks[:, 0] == None, 0] = 1  # noqa: E711 - every row found by one channel at least
    df = _union_rows([tuple(r) for r in ranks])
    for lam, k0, w in [(0.25, 10, None), (0.0, 1, {"dense": 3.0}), (1.0, 60, {"lexical": 0.0})]:
        p = retrieval_prior(df, w, k0, lam)
        assert p.between(0, 1).all()
    top = _union_rows([(1, 1, 1)])
    assert retrieval_prior(top).iloc[0] == pytest.approx(1.0)


def test_prior_decreases_with_rank():
    ranks = [1, 2, 3, 5, 10, 20, 50, 100]
    df = _union_rows([(r, 4, None) for r in ranks])
    p = retrieval_prior(df).to_numpy()
    assert np.all(np.diff(p) < 0)
    # in every channel
    df = _union_rows([(4, r, 7) for r in ranks])
    assert np.all(np.diff(retrieval_prior(df).to_numpy()) < 0)


def test_prior_increases_with_agreement():
    # same ranks, one more channel finding the item each time
    df = _union_rows([(30, None, None), (30, 30, None), (30, 30, 30)])
    p = retrieval_prior(df).to_numpy()
    assert np.all(np.diff(p) > 0)
    # even a deep extra hit beats a missing one
    df = _union_rows([(5, None, None), (5, 100, None)])
    p = retrieval_prior(df).to_numpy()
    assert p[1] > p[0]


def test_prior_formula_and_weights():
    df = _union_rows([(1, None, None), (None, 1, None)])
    k0, lam = 10.0, 0.25
    p = retrieval_prior(df, None, k0, lam).to_numpy()
    expect = (1 - lam) * (1.0 / 3) + lam * (1 / 3)
    assert p == pytest.approx([expect, expect])
    pw = retrieval_prior(df, {"lexical": 2.0}, k0, lam).to_numpy()
    assert pw[0] == pytest.approx((1 - lam) * 2 / 4 + lam / 3)
    assert pw[0] > pw[1]
    # an inactive channel (no results for the query) is no evidence against an item
    two = _union_rows([(1, None, None)], active="LD--")
    assert retrieval_prior(two).iloc[0] == pytest.approx((1 - lam) * 0.5 + lam * 0.5)
    with pytest.raises(ValueError):
        retrieval_prior(df, None, 0.0, lam)
    with pytest.raises(ValueError):
        retrieval_prior(df, None, k0, 1.5)
    with pytest.raises(ValueError):
        retrieval_prior(df, {"dense": -1.0})


# --------------------------------------------------------------------------- categories
def test_pattern_categories_and_levels():
    df = _union_rows([
        (1, 3, 5),  # every channel near the top -> easy positive, level 1
        (4, None, None),  # only lexical, high -> hard positive, level 5
        (None, 2, None),  # exactly one channel ranks it high (dense) -> hard negative, level 4
        (40, 2, None),  # found by two, one ranks it high -> hard negative, level 4
        (40, 50, None),  # two channels, none high -> other, level 2
        (80, None, None),  # lexical only, deep -> other, level 3
        (2, 3, 30),  # two high + one deep -> not easy, not exactly one high -> other, level 2
    ])
    out = categorize(df, near_top_rank=10, high_rank=10)
    assert out["category"].tolist() == ["easy_positive", "hard_positive", "hard_negative", "hard_negative",
                                        "other", "other", "other"]
    assert out["difficulty_level"].tolist() == [1, 5, 4, 4, 2, 3, 2]
    # a query with one active channel has no disagreement to mine
    solo = categorize(_union_rows([(1, None, None)], active="L---"))
    assert solo["category"].tolist() == ["other"] and solo["difficulty_level"].tolist() == [3]


def test_refine_levels_uses_grades():
    df = _union_rows([(1, 3, 5), (4, None, None), (1, 2, 3), (None, 2, None), (90, None, None), (40, 50, None)])
    grades = pd.DataFrame({"query_id": "q1", "item_id": ["i0", "i1", "i2", "i3", "i5"], "grade": [3, 3, 0, 1, 2]})
    out = refine_levels(df, grades)
    # i0 relevant, all near top: easy level 1; i1 relevant, only one channel (high): hard positive 4
    # i2 irrelevant but every channel near the top: hardest negative, 5; i3 irrelevant, one
    # channel high: hard negative 3; i4 ungraded keeps its pattern level; i5 relevant,
    # two channels found it, one active channel missed it: other, 3
    assert out["category"].tolist() == ["easy_positive", "hard_positive", "hard_negative", "hard_negative", "other", "other"]
    assert out["difficulty_level"].tolist() == [1, 4, 5, 3, 3, 3]
    assert out["level_source"].tolist() == ["grade"] * 4 + ["pattern", "grade"]
    assert out["grade"].isna().tolist() == [False] * 4 + [True, False]
    assert out["difficulty_level"].between(1, 5).all()
    with pytest.raises(ValueError):
        refine_levels(df, grades.drop(columns="grade"))


# --------------------------------------------------------------------------- union
def _hits(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "item_id", "rank", "score"])


def test_union_correctness():
    lex = _hits([("q1", "a", 1, 9.0), ("q1", "b", 2, 5.0), ("q2", "c", 1, 3.0)])
    den = _hits([("q1", "b", 1, 0.9), ("q1", "d", 2, 0.8), ("q2", "c", 1, 0.7)])
    beh = _hits([("q1", "a", 1, 1.0)])
    u = U.build_union({"lexical": lex, "dense": den, "behavioral": beh}, SNAP)
    assert list(u.columns) == U.UNION_COLUMNS
    assert not u.duplicated(["query_id", "item_id"]).any()
    assert len(u) == 4
    r = u.set_index(["query_id", "item_id"])
    assert r.loc[("q1", "a"), "channel_pattern"] == "L-B-" and r.loc[("q1", "a"), "agreement"] == 2
    assert r.loc[("q1", "b"), "channel_pattern"] == "LD--" and r.loc[("q1", "b"), "rank_dense"] == 1
    assert pd.isna(r.loc[("q1", "d"), "rank_lexical"]) and r.loc[("q1", "d"), "rank_dense"] == 2
    assert np.isnan(r.loc[("q1", "d"), "score_lexical"]) and r.loc[("q1", "d"), "score_dense"] == pytest.approx(0.8)
    assert r.loc[("q1", "a"), "active_channels"] == "LDB-"
    # q2: behavioural returned nothing for it, so it is not active there
    assert r.loc[("q2", "c"), "active_channels"] == "LD--" and r.loc[("q2", "c"), "channel_pattern"] == "LD--"
    assert (u["snapshot_ts"] == SNAP).all()
    assert u["rank_external"].isna().all()
    # sorted by query, then prior descending
    assert u.groupby("query_id")["retrieval_prior"].apply(lambda s: s.is_monotonic_decreasing).all()
    batch = to_feature_batch(u)
    from relgrade.featurestore import conform_features

    conformed = conform_features("retrieval_prior_fv", batch)
    assert len(conformed) == 4 and (conformed["event_timestamp"] == SNAP).all()
    with pytest.raises(ValueError, match="duplicated"):
        U.build_union({"lexical": pd.concat([lex, lex])}, SNAP)
    with pytest.raises(ValueError, match="unknown channel"):
        U.build_union({"bm25": lex}, SNAP)


# --------------------------------------------------------------------------- channels
def test_lexical_channel_on_real_slice(data):
    cat, q = data["catalog"], data["queries"]
    ch = LexicalChannel().fit(cat)
    res = ch.search(q, k=20)
    assert set(res.columns) == {"query_id", "item_id", "rank", "score"}
    assert not res.duplicated(["query_id", "item_id"]).any()
    for _, g in res.groupby("query_id"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert g["score"].is_monotonic_decreasing
    assert res["item_id"].isin(cat["item_id"]).all()
    assert (res.groupby("query_id").size() <= 20).all()
    # most judged-relevant items of a query are in its lexical top 20 on this small catalog
    rel = data["judgments"].query("grade >= 2")[["query_id", "item_id"]]
    hit = rel.merge(res, on=["query_id", "item_id"], how="left")["rank"].notna().mean()
    assert hit > 0.5
    # a model code in the title is found from the code alone
    one = pd.DataFrame({"item_id": ["x1", "x2"], "title": ["DEWALT 20-Volt Drill DCD771C2", "Drill bit set"]})
    r = LexicalChannel().fit(one).search(pd.DataFrame({"query_id": ["q"], "text": ["dcd771c2"]}), k=5)
    assert r["item_id"].tolist() == ["x1"]


def test_dense_channel_exact_and_ann_recall(data, tmp_path):
    from relgrade.mining import DenseChannel

    cat = data["catalog"].head(200)
    q = data["queries"].head(20)
    exact = DenseChannel(cache_dir=tmp_path).fit(cat)
    res = exact.search(q, k=10)
    assert exact.exact and len(res) == 20 * 10
    assert res.groupby("query_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    assert exact.ann_recall(q, 10)["recall"] == 1.0
    # past exact_max_items the channel builds HNSW; its recall is measured against exact
    ann = DenseChannel(cache_dir=tmp_path, exact_max_items=100, hnsw_ef_search=64).fit(cat)
    assert not ann.exact and ann.stats["items_cache_hit"]  # embeddings came from the disk cache
    rec = ann.ann_recall(q, 10)
    assert rec["index"] == "hnsw" and 0.9 <= rec["recall"] <= 1.0
    ivf = DenseChannel(cache_dir=tmp_path, exact_max_items=100, ann="ivf", ivf_nlist=8, ivf_nprobe=8).fit(cat)
    assert ivf.ann_recall(q, 10)["recall"] == pytest.approx(1.0)  # nprobe = nlist: exhaustive


def test_behavioral_channel_uses_no_event_at_or_after_snapshot(data, events):
    cat, q = data["catalog"], data["queries"]
    D = pd.Timestamp(events["event_ts"].min()) + (pd.Timestamp(events["event_ts"].max()) - pd.Timestamp(events["event_ts"].min())) / 2
    D = D.floor("h")
    base = BehavioralChannel(events, D, query_texts=q).fit(cat).search(q, k=50)
    assert len(base) > 0
    assert pd.Timestamp(BehavioralChannel(events, D).stats["max_event_ts"]) < D

    # future engagement: every query's least-engaged catalog items ordered many times,
    # at exactly D and later. If the channel saw any of it, its output would change.
    rng = np.random.default_rng(1)
    fut = []
    for i, qid in enumerate(q["query_id"]):
        for item in rng.choice(cat["item_id"].to_numpy(), 3, replace=False):
            for dt in (timedelta(0), timedelta(hours=1 + i % 5), timedelta(days=3)):
                fut.append({"event_ts": D + dt, "search_id": 10_000_000 + len(fut), "query_id": qid, "item_id": item,
                            "position": 1, "slot": "organic", "impression": 1, "click": 1, "add_to_cart": 1, "order": 1})
    fut = pd.DataFrame(fut)
    with_future = pd.concat([events, fut[events.columns]], ignore_index=True)
    ch = BehavioralChannel(with_future, D, query_texts=q)
    assert ch.stats["events_dropped_at_or_after_as_of"] >= len(fut)
    after = ch.fit(cat).search(q, k=50)
    pd.testing.assert_frame_equal(base.reset_index(drop=True), after.reset_index(drop=True))

    # the same events one hour *before* D do change the output (the test can fail)
    past = fut.assign(event_ts=D - pd.Timedelta(hours=1))
    changed = BehavioralChannel(pd.concat([events, past[events.columns]], ignore_index=True), D,
                                query_texts=q).fit(cat).search(q, k=50)
    assert not changed.reset_index(drop=True).equals(base.reset_index(drop=True))


def test_behavioral_channel_extends_to_similar_queries(events, data):
    cat, q = data["catalog"], data["queries"]
    D = pd.Timestamp(events["event_ts"].max()) + pd.Timedelta(seconds=1)
    ch = BehavioralChannel(events, D, query_texts=q).fit(cat)
    logged = q[q["query_id"].isin(events.loc[events["click"] > 0, "query_id"])].iloc[0]
    new = pd.DataFrame({"query_id": ["qnew"], "text": [logged["text"]]})  # never logged itself
    res = ch.search(new, k=10)
    assert len(res) > 0  # it borrows its look-alike's engagement
    own = ch.search(pd.DataFrame({"query_id": [logged["query_id"]], "text": [logged["text"]]}), k=10)
    assert set(res["item_id"]) <= set(own["item_id"]) | set(cat["item_id"])


# --------------------------------------------------------------------------- external
def test_external_channel_reads_and_validates(tmp_path, data):
    cat = data["catalog"]
    items = cat["item_id"].head(4).tolist()
    good = pd.DataFrame({"query": ["Copper Pipe", "copper  pipe "[:-1], "copper pipe", "drill"],
                         "item_id": items, "rank": [3, 1, 2, 1], "score": [0.1, 0.9, 0.5, 0.3]})
    good = good.iloc[[0, 2, 3]]  # one row per (query, item)
    p = tmp_path / "ext.parquet"
    good.to_parquet(p)
    ch = ExternalChannel(p).fit(cat)
    from relgrade.adapters.common import query_id_of

    qs = pd.DataFrame({"query_id": [query_id_of("copper pipe"), query_id_of("drill")], "text": ["copper pipe", "drill"]})
    res = ch.search(qs, k=1)
    assert len(res) == 2 and res["rank"].tolist() == [1, 1]
    assert items[2] in res["item_id"].tolist()  # rank 2 beat rank 3

    bad_file = tmp_path / "bad.parquet"
    bad_file.write_text("query_id,item_id,rank,score\nq,1,1,0.5\n")
    with pytest.raises(ContractError, match="not a readable Parquet"):
        ExternalChannel(bad_file).fit(cat)
    with pytest.raises(ContractError, match="not found"):
        ExternalChannel(tmp_path / "missing.parquet").fit(cat)
    cases = {
        "missing column": (good.drop(columns="score"), "missing column"),
        "rank not integer": (good.assign(rank=[1.5, 2, 1]), "integer"),
        "rank zero": (good.assign(rank=[0, 1, 2]), "integer"),
        "rank text": (good.assign(rank=["a", "b", "c"]), "numeric"),
        "null item": (good.assign(item_id=[None, items[1], items[2]]), "null"),
        "duplicates": (pd.concat([good, good]), "duplicated"),
        "empty": (good.iloc[:0], "no rows"),
    }
    for name, (df, msg) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.parquet"
        df.to_parquet(path)
        with pytest.raises(ContractError, match=msg):
            ExternalChannel(path).fit(cat)


# --------------------------------------------------------------------------- flow
@pytest.mark.integration
def test_mine_flow_publishes_retrieval_prior(tmp_path, monkeypatch):
    """ingest -> simulate -> mine on a tiny data root; then point-in-time retrieval."""
    import flows.runtime
    from flows.runtime import get_config

    # cache keys include a digest of the source tree; other work edits the tree while
    # this test runs, so hold the code version still for its duration
    monkeypatch.setattr(flows.runtime, "_code_version", lambda: "test-fixed")

    overrides = {"data_root": str(tmp_path), "dataset": {"max_queries": 60},
                 "simulation": {"days": 7, "searches_per_day": 200}, "mining": {"k": 20}}
    cfg = get_config("quick", overrides)  # sets the Prefect environment before prefect is imported
    from flows.ingest import ingest_flow
    from flows.mine import mine_flow
    from flows.simulate import simulate_flow
    from relgrade.featurestore import historical_features
    from relgrade.io import read_parquet
    from relgrade.mining.stage import default_snapshot

    ingest_flow("quick", overrides)
    simulate_flow("quick", overrides)
    m = mine_flow("quick", overrides)
    snap = default_snapshot(cfg)
    assert m["snapshot_ts"] == snap.isoformat()
    assert set(m["channels"]) == {"lexical", "dense", "behavioral"}
    union = read_parquet(cfg.paths.union(snap))
    assert len(union) == m["union_rows"] > 0
    assert (cfg.paths.reports / "mining" / "report.html").exists()
    rep = m["report"]["union_vs_best_single"]
    assert rep["union_beats_every_channel"] is True
    html_text = (cfg.paths.reports / "mining" / "report.html").read_text()
    assert "data:image/png;base64," in html_text

    # cached: a rerun skips the channels (their files are not rewritten) and gives the same result
    mtimes = {c: cfg.paths.channel(snap, c).stat().st_mtime_ns for c in m["channels"]}
    again = mine_flow("quick", overrides)
    assert again["digests"] == m["digests"]
    assert {c: cfg.paths.channel(snap, c).stat().st_mtime_ns for c in m["channels"]} == mtimes

    # point-in-time: rows at/after the snapshot see the prior, a time before sees nothing
    sample = union.groupby("agreement", group_keys=False).head(3).reset_index(drop=True)
    ent = pd.concat([
        sample[["query_id", "item_id"]].assign(event_timestamp=snap + pd.Timedelta(hours=1)),
        sample[["query_id", "item_id"]].assign(event_timestamp=snap - pd.Timedelta(days=1)),
    ], ignore_index=True)
    feats = [f"retrieval_prior_fv:{c}" for c in ("retrieval_prior", "rank_lexical", "rank_dense",
                                                 "rank_behavioral", "agreement", "channel_pattern")]
    out = historical_features(cfg, ent, feats)
    n = len(sample)
    after, before = out.iloc[:n].reset_index(drop=True), out.iloc[n:].reset_index(drop=True)
    assert after["retrieval_prior"].to_numpy() == pytest.approx(sample["retrieval_prior"].to_numpy())
    assert after["agreement"].astype(int).tolist() == sample["agreement"].astype(int).tolist()
    for c in ("rank_lexical", "rank_dense", "rank_behavioral"):
        got = pd.to_numeric(after[c]).astype("Float64")
        exp = sample[c].astype("Float64")
        assert got.isna().tolist() == exp.isna().tolist()
        assert got.dropna().tolist() == exp.dropna().tolist()
    assert before[["retrieval_prior", "agreement", "channel_pattern"]].isna().all().all()


@pytest.mark.integration
def test_mine_flow_rejects_bad_external_file_and_writes_nothing(tmp_path):
    from flows.runtime import get_config

    bad = tmp_path / "ext.parquet"
    pd.DataFrame({"query_id": ["q1"], "item_id": ["1"], "rank": [0], "score": [1.0]}).to_parquet(bad)
    overrides = {"data_root": str(tmp_path / "root"), "dataset": {"max_queries": 20},
                 "mining": {"k": 10, "channels": ["lexical"], "external_path": str(bad)}}
    cfg = get_config("quick", overrides)
    from flows.ingest import ingest_flow
    from flows.mine import mine_flow
    from relgrade.mining.stage import default_snapshot

    ingest_flow("quick", overrides)
    with pytest.raises(ContractError, match="rank must be an integer"):
        mine_flow("quick", overrides)
    assert not cfg.paths.union(default_snapshot(cfg)).exists()
    assert not cfg.paths.feature_source("retrieval_prior_fv").exists()


def test_lexical_channel_rejects_bm25_variants_it_cannot_search():
    from relgrade.mining.channels import LexicalChannel

    with pytest.raises(ValueError, match="bm25l"):
        LexicalChannel(method="bm25l")
