"""The retrieval channels on a slice of the real Home Depot data: BM25 and its variants,
dense exact and ANN recall, the behavioural channel's no-future rule and its reach to
similar queries, the external channel's validation."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from relgrade.adapters.homedepot import load
from relgrade.config import REPO_ROOT, SimulationConfig
from relgrade.contract import ContractError
from relgrade.mining import BehavioralChannel, ExternalChannel, LexicalChannel
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


def test_lexical_channel_rejects_bm25_variants_it_cannot_search():
    from relgrade.mining.channels import LexicalChannel

    with pytest.raises(ValueError, match="bm25l"):
        LexicalChannel(method="bm25l")
