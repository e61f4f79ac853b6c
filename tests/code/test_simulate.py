"""Engagement simulator on a deterministic slice of the real Home Depot data (the first
300 queries by query_id, their judgments, the whole catalog): determinism, the
properties the simulated log exists for (grade-driven but imperfect clicks, strong
position bias, sparse tail, budget-capped ads) and the events contract."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from relgrade.adapters.homedepot import load
from relgrade.config import REPO_ROOT, SimulationConfig
from relgrade.contract import EVENTS, conform
from relgrade.simulate import (
    ad_budgets,
    candidate_pools,
    item_attributes,
    query_popularity,
    query_segments,
    simulate,
)

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
SIM = SimulationConfig(days=28, searches_per_day=1500)
SMALL = SimulationConfig(days=2, searches_per_day=300)


@pytest.fixture(scope="module")
def data():
    raw = load(HD_ZIP)
    queries = raw["queries"].sort_values("query_id").head(300).reset_index(drop=True)
    queries["segment"] = query_segments(queries["query_id"], SIM).values
    judgments = raw["judgments"][raw["judgments"]["query_id"].isin(queries["query_id"])].reset_index(drop=True)
    return {"catalog": raw["catalog"], "queries": queries, "judgments": judgments}


@pytest.fixture(scope="module")
def events(data):
    return simulate(data["catalog"], data["queries"], data["judgments"], SIM)


@pytest.fixture(scope="module")
def judged(events, data):
    j = data["judgments"][["query_id", "item_id", "grade"]]
    return events.merge(j, on=["query_id", "item_id"], how="inner")


# --------------------------------------------------------------------------- queries
def test_query_popularity_is_a_seeded_zipf_independent_of_row_order(data):
    ids = data["queries"]["query_id"]
    w = query_popularity(ids, SIM)
    assert w.index.equals(ids.index)
    assert w.sum() == pytest.approx(1.0)
    ranks = w.rank(ascending=False, method="first").to_numpy()
    # weight = rank ** -zipf_exponent, normalized
    expected = 1.0 / ranks**SIM.zipf_exponent
    np.testing.assert_allclose(w.to_numpy(), expected / expected.sum())
    shuffled = ids.sample(frac=1.0, random_state=3)
    pd.testing.assert_series_equal(query_popularity(shuffled, SIM).sort_index(), w.sort_index())
    other = query_popularity(ids, SIM.model_copy(update={"seed": SIM.seed + 1}))
    assert not np.allclose(other.to_numpy(), w.to_numpy())


def test_query_segments_follow_traffic_shares(data):
    ids = data["queries"]["query_id"]
    w = query_popularity(ids, SIM)
    seg = query_segments(ids, SIM)
    assert set(seg) == {"head", "torso", "tail"}
    share = w.groupby(seg).sum()
    h, t = SIM.segments.head_traffic_share, SIM.segments.torso_traffic_share
    # head is the smallest top set reaching the head share: it overshoots by < one query
    assert h <= share["head"] < h + w.max()
    assert share["head"] + share["torso"] >= h + t
    assert w[seg == "head"].min() > w[seg == "torso"].max() > w[seg == "tail"].max()
    assert (seg == "head").sum() < (seg == "torso").sum() < (seg == "tail").sum()


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_log_different_seed_different_log(data):
    args = (data["catalog"], data["queries"], data["judgments"])
    a = simulate(*args, SMALL)
    b = simulate(*args, SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(*args, SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    assert len(c) != len(a) or not a.equals(c)
    assert not a[["query_id", "item_id"]].equals(c[["query_id", "item_id"]])


def test_log_does_not_depend_on_input_row_order(data):
    a = simulate(data["catalog"], data["queries"], data["judgments"], SMALL)
    b = simulate(
        data["catalog"].sample(frac=1.0, random_state=1),
        data["queries"].sample(frac=1.0, random_state=2),
        data["judgments"].sample(frac=1.0, random_state=3),
        SMALL,
    )
    pd.testing.assert_frame_equal(a, b)


def test_item_attributes_are_per_item_not_per_catalog(data):
    cat = data["catalog"]
    full = item_attributes(cat, SIM)
    part = item_attributes(cat.iloc[::7], SIM)
    # all but title appeal (standardized over the catalog) are functions of (seed, item)
    cols = ["popularity_z", "cheapness", "margin", "advertiser", "bid"]
    pd.testing.assert_frame_equal(part[cols], full.loc[part.index, cols])
    assert part["title_appeal"].corr(full.loc[part.index, "title_appeal"]) > 0.99
    assert abs(full["advertiser"].mean() - SIM.advertiser_share) < 0.01


def test_progress_is_logged_with_rate_and_eta(data, caplog):
    with caplog.at_level(logging.INFO, logger="relgrade.simulate"):
        simulate(data["catalog"], data["queries"], data["judgments"], SMALL)
    lines = [r.getMessage() for r in caplog.records if r.name == "relgrade.simulate"]
    assert any(re.search(r"day \d+/\d+.*searches/s.*ETA", m) for m in lines), lines


# --------------------------------------------------------------------------- contract
def test_events_fit_the_contract(events):
    assert list(events.columns) == EVENTS.names
    pd.testing.assert_frame_equal(conform(events, "events"), events)
    assert str(events["event_ts"].dtype) == "datetime64[us, UTC]"
    start = pd.Timestamp(SIM.start_date)
    assert events["event_ts"].min() >= start
    assert events["event_ts"].max() < start + timedelta(days=SIM.days)
    assert events["search_id"].nunique() == SIM.days * SIM.searches_per_day
    assert not events.duplicated(["search_id", "position"]).any()
    assert not events.duplicated(["search_id", "item_id"]).any()  # an item once per page
    assert not events.duplicated(["query_id", "item_id", "event_ts"]).any()
    # positions are 1..n with no gaps on every page
    g = events.groupby("search_id")["position"]
    assert (g.max() == g.size()).all() and (g.min() == 1).all()
    assert g.size().max() == SIM.organic_slots + len(SIM.ad_positions)
    assert set(events["slot"]) == {"organic", "ad"}
    assert (events["impression"] == 1).all()
    assert (events["click"] >= events["add_to_cart"]).all()
    assert (events["add_to_cart"] >= events["order"]).all()
    assert 0.02 < events["click"].mean() < 0.3
    # one search = one query at one instant
    assert (events.groupby("search_id")[["query_id", "event_ts"]].nunique() == 1).all().all()


def test_ads_sit_on_the_configured_positions(events):
    full = events.groupby("search_id")["position"].transform("size") == SIM.organic_slots + len(SIM.ad_positions)
    ad_pos = set(events.loc[full & (events["slot"] == "ad"), "position"])
    assert ad_pos == set(SIM.ad_positions)


# --------------------------------------------------------------------------- properties
def test_ctr_rises_with_grade_but_imperfectly(judged):
    ctr = judged.groupby("grade")["click"].mean()
    assert ctr[0] < ctr[2] < ctr[3] and ctr[1] < ctr[3]
    assert ctr[3] > 1.5 * ctr[[0, 1]].max()
    pairs = judged.groupby(["query_id", "item_id"]).agg(ctr=("click", "mean"), n=("click", "size"), grade=("grade", "first"))
    pairs = pairs[pairs["n"] >= 20]
    assert len(pairs) > 300
    rho = spearmanr(pairs["ctr"], pairs["grade"]).statistic
    assert 0.05 < rho < 0.6, rho  # grade matters, but popularity, price, title, position too


def test_strong_position_bias_within_a_grade(judged):
    for grade in (2, 3):
        g = judged[judged["grade"] == grade]
        ctr = g.groupby("position")["click"].mean()
        assert ctr[1] > 4 * ctr[8], (grade, ctr.to_dict())
        assert ctr[2] > ctr[4] > ctr[8]


def test_tail_queries_have_sparse_engagement(events, data):
    seg = data["queries"].set_index("query_id")["segment"]
    per_pair = events.groupby(["query_id", "item_id"]).size().rename("n").reset_index()
    per_pair["segment"] = per_pair["query_id"].map(seg)
    med = per_pair.groupby("segment")["n"].median()
    assert med["head"] > 5 * med["tail"], med.to_dict()
    assert med["head"] > med["torso"] > med["tail"]
    searches = events.drop_duplicates("search_id")["query_id"].map(seg).value_counts(normalize=True)
    assert searches["head"] == pytest.approx(SIM.segments.head_traffic_share, abs=0.06)


def test_ad_impressions_are_capped_by_daily_budget(events):
    ads = events[events["slot"] == "ad"]
    per_day = ads.groupby(["item_id", ads["event_ts"].dt.floor("D")]).size().rename("n").reset_index()
    caps = pd.concat(
        [ad_budgets(g["item_id"], day, SIM).reset_index(drop=True).set_axis(g.index) for day, g in per_day.groupby("event_ts")]
    )
    per_day["budget"] = caps
    assert (per_day["budget"] >= 1).all()  # only advertisers with budget show as ads
    assert (per_day["n"] <= per_day["budget"]).all()
    binding = (per_day["n"] == per_day["budget"]).mean()
    assert binding > 0.2  # the budget really limits delivery
    attrs = item_attributes(pd.DataFrame({"item_id": ads["item_id"].unique(), "title": ""}), SIM)
    assert attrs["advertiser"].all()


def test_candidate_pools_hold_judged_items_and_lexical_fill(data):
    pools = candidate_pools(data["catalog"], data["queries"].head(40), data["judgments"], SIM)
    size = pools.groupby("query_id").size()
    assert size.max() <= max(SIM.candidates_per_query, pools[pools.judged].groupby("query_id").size().max())
    assert (size > 10).mean() > 0.9
    j = data["judgments"].merge(data["queries"].head(40)[["query_id"]])
    m = pools[pools.judged].merge(j, on=["query_id", "item_id"], suffixes=("", "_human"))
    assert len(m) == len(j) and (m["grade"] == m["grade_human"]).all()
    assert pools["lexical"].between(0, 1).all()
    assert (pools.groupby("query_id")["lexical"].max() == 1).mean() > 0.9
    fill = pools[~pools.judged]
    freq = fill["grade"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(freq.to_numpy(), SIM.unjudged_grade_probs, atol=0.06)


def test_every_simulation_parameter_is_documented():
    doc = (REPO_ROOT / "docs" / "simulator.md").read_text()
    fields = SimulationConfig.model_fields
    defaults = SimulationConfig().model_dump(mode="json")
    for name in fields:
        if name == "segments":
            for sub, val in defaults["segments"].items():
                assert re.search(rf"\|\s*`segments\.{sub}`\s*\|\s*`{re.escape(str(val))}`", doc), sub
            continue
        val = defaults[name]
        assert re.search(rf"\|\s*`{name}`\s*\|\s*`{re.escape(str(val))}`", doc), f"{name} = {val} not in docs/simulator.md"
