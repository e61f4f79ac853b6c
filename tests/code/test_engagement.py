"""Windowed engagement features: exact window sums and point-in-time stamping on a
hand-made log, the position-bias curve estimated from a simulated log of real Home Depot
queries, and the feature-view contract."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from relgrade.adapters.homedepot import load
from relgrade.config import REPO_ROOT, SimulationConfig
from relgrade.contract import conform
from relgrade.engagement import engagement_features, position_bias_curve
from relgrade.simulate import query_segments, simulate

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
SIM = SimulationConfig(days=21, searches_per_day=1500)
SCHEMA_COLS = [
    "impressions_7d", "clicks_7d", "add_to_cart_7d", "orders_7d",
    "impressions_28d", "clicks_28d", "add_to_cart_28d", "orders_28d",
    "ctr_raw_28d", "ctr_debiased_28d", "engagement_smoothed", "engagement_confidence", "gated_preference",
]
D0 = datetime(2026, 7, 1, tzinfo=timezone.utc)


def _ev(rows):
    """rows: (day offset, hh:mm, search_id, query, item, position, click, atc, order)."""
    recs = []
    for day, hm, sid, q, i, pos, c, a, o in rows:
        ts = pd.Timestamp(D0) + pd.Timedelta(days=day) + pd.Timedelta(hm)
        recs.append(dict(event_ts=ts, search_id=sid, query_id=q, item_id=i, position=pos,
                         slot="organic", impression=1, click=c, add_to_cart=a, order=o))
    return conform(pd.DataFrame(recs), "events")


@pytest.fixture()
def hand():
    rows = [
        # pair (qa, i1): days 0, 5, 10 and 40
        (0, "09:00:00", 1, "qa", "i1", 1, 1, 1, 0),
        (0, "23:59:59.999999", 2, "qa", "i1", 2, 0, 0, 0),
        (5, "12:00:00", 3, "qa", "i1", 2, 1, 0, 0),
        (10, "00:00:00", 4, "qa", "i1", 1, 1, 1, 1),
        (10, "08:00:00", 5, "qa", "i1", 3, 0, 0, 0),
        (10, "09:00:00", 6, "qa", "i1", 1, 0, 0, 0),
        (40, "10:00:00", 7, "qa", "i1", 1, 0, 0, 0),
        # pair (qa, i2): day 10 only; (qb, i1): day 3
        (10, "00:00:00", 4, "qa", "i2", 2, 1, 0, 0),
        (3, "07:00:00", 8, "qb", "i1", 3, 0, 0, 0),
    ]
    queries = pd.DataFrame({"query_id": ["qa", "qb"], "text": ["a", "b"], "split": "train", "segment": ["head", "tail"]})
    return _ev(rows), queries


CURVE = pd.Series([1.0, 0.5, 0.25], index=pd.Index([1, 2, 3], name="position"))


def test_window_sums_and_stamps_on_a_hand_made_log(hand):
    ev, queries = hand
    f = engagement_features(ev, queries, curve=CURVE, prior_strength=4.0)
    assert list(f.columns) == ["query_id", "item_id", "event_timestamp", *SCHEMA_COLS]
    f = f.set_index(["query_id", "item_id", "event_timestamp"]).sort_index()
    day = lambda k: pd.Timestamp(D0) + pd.Timedelta(days=k)  # noqa: E731
    # one row per (pair, day with an impression), stamped at the next midnight UTC
    assert list(f.index) == [
        ("qa", "i1", day(1)), ("qa", "i1", day(6)), ("qa", "i1", day(11)), ("qa", "i1", day(41)),
        ("qa", "i2", day(11)), ("qb", "i1", day(4)),
    ]
    cols = ["impressions_7d", "clicks_7d", "add_to_cart_7d", "orders_7d",
            "impressions_28d", "clicks_28d", "add_to_cart_28d", "orders_28d"]
    expected = pd.DataFrame(
        [
            [2, 1, 1, 0, 2, 1, 1, 0],  # day 0 (the 23:59:59.999999 impression is day 0)
            [3, 2, 1, 0, 3, 2, 1, 0],  # day 5: both windows hold days 0 and 5
            [4, 2, 1, 1, 6, 3, 2, 1],  # day 10: 7d = days 4..10, 28d = days -17..10
            [1, 0, 0, 0, 1, 0, 0, 0],  # day 40: 28d = days 13..40 hold only day 40
            [1, 1, 0, 0, 1, 1, 0, 0],  # (qa, i2) day 10
            [1, 0, 0, 0, 1, 0, 0, 0],  # (qb, i1) day 3
        ],
        columns=cols,
    )
    got = f[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert all(f[c].dtype == np.int64 for c in cols)
    # day 10 row of (qa, i1): 28d = 6 impressions, 3 clicks at positions 1,2,2,1,3,1
    r = f.loc[("qa", "i1", day(11))]
    assert r["ctr_raw_28d"] == pytest.approx(3 / 6)
    exposure = 1 + 0.5 + 0.5 + 1 + 0.25 + 1
    assert r["ctr_debiased_28d"] == pytest.approx(3 / exposure)
    assert r["engagement_confidence"] == pytest.approx(exposure / (exposure + 4.0))
    # segment prior (head) for day 10 = clicks / exposure of head pairs over days -17..10
    head_clicks, head_exp = 3 + 1, exposure + 0.5
    mu = head_clicks / head_exp
    assert r["engagement_smoothed"] == pytest.approx((3 + 4.0 * mu) / (exposure + 4.0))
    assert f["gated_preference"].isna().all()
    assert f[["ctr_raw_28d", "ctr_debiased_28d", "engagement_smoothed", "engagement_confidence"]].apply(
        lambda s: s.between(0, 1)).all().all()


def test_stamp_is_next_midnight_so_a_pit_join_never_sees_the_same_day(hand):
    ev, queries = hand
    f = engagement_features(ev, queries, curve=CURVE)
    ts = f["event_timestamp"]
    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert (ts == ts.dt.normalize()).all()
    last_event_day = ev.groupby(["query_id", "item_id"])["event_ts"].max().dt.floor("D")
    for (q, i), last in last_event_day.items():
        stamps = f.loc[(f.query_id == q) & (f.item_id == i), "event_timestamp"]
        assert stamps.max() == last + pd.Timedelta(days=1)
        # every event counted in a row happened strictly before that row's stamp
    first = f.loc[(f.query_id == "qa") & (f.item_id == "i1")].sort_values("event_timestamp").iloc[0]
    assert first["event_timestamp"] == pd.Timestamp("2026-07-02", tz="UTC")
    assert first["impressions_28d"] == 2  # includes the 23:59:59.999999 impression


def test_as_of_days_snapshots_every_pair_in_the_window(hand):
    ev, queries = hand
    f = engagement_features(ev, queries, curve=CURVE, as_of_days=["2026-07-12", "2026-08-15"])
    got = {(r.query_id, r.item_id, r.event_timestamp.strftime("%m-%d")): (r.impressions_7d, r.impressions_28d)
           for r in f.itertuples()}
    assert got == {
        ("qa", "i1", "07-13"): (4, 6),  # 2026-07-12 is day 11: 7d = days 5..11, 28d = days -16..11
        ("qa", "i2", "07-13"): (1, 1),
        ("qb", "i1", "07-13"): (0, 1),  # only the 28-day window reaches day 3
        ("qa", "i1", "08-16"): (1, 1),  # 2026-08-15 is day 45: both windows hold only day 40
    }


def test_windows_must_match_the_view_schema(hand):
    ev, queries = hand
    with pytest.raises(ValueError, match="schema"):
        engagement_features(ev, queries, windows_days=(7, 30))


# --------------------------------------------------------------------------- simulated log
@pytest.fixture(scope="module")
def simulated():
    raw = load(HD_ZIP)
    queries = raw["queries"].sort_values("query_id").head(300).reset_index(drop=True)
    queries["segment"] = query_segments(queries["query_id"], SIM).values
    judgments = raw["judgments"][raw["judgments"]["query_id"].isin(queries["query_id"])]
    return simulate(raw["catalog"], queries, judgments, SIM), queries


def test_position_curve_is_estimated_from_the_log_and_tracks_1_over_p(simulated):
    ev, _ = simulated
    curve = position_bias_curve(ev)
    assert curve.index.tolist() == list(range(1, int(ev["position"].max()) + 1))
    assert curve[1] == 1.0
    assert (np.diff(curve.to_numpy()[:8]) < 0).all(), curve.round(3).to_dict()
    ratio = curve.to_numpy() * curve.index.to_numpy()  # 1 for an exact 1/p curve
    assert np.all(np.abs(np.log(ratio)) < np.log(1.35)), ratio.round(3)
    # it is not the naive click-rate ratio, which folds in the ranker's ordering
    naive = ev.groupby("position")["click"].mean()
    naive = naive / naive[1]
    assert abs(np.log(curve[8] * 8)) < abs(np.log(naive[8] * 8))


def test_features_on_a_simulated_log(simulated):
    ev, queries = simulated
    f = engagement_features(ev, queries)
    assert list(f.columns) == ["query_id", "item_id", "event_timestamp", *SCHEMA_COLS]
    assert not f.duplicated(["query_id", "item_id", "event_timestamp"]).any()
    day = ev["event_ts"].dt.floor("D")
    active = ev.assign(day=day).drop_duplicates(["query_id", "item_id", "day"])
    assert len(f) == len(active)
    assert f["impressions_28d"].sum() >= f["impressions_7d"].sum()
    assert (f["impressions_28d"] >= f["impressions_7d"]).all() and (f["clicks_28d"] >= f["clicks_7d"]).all()
    # 28 days cover the whole 21-day log: each pair's last row holds all its events
    last = f.sort_values("event_timestamp").groupby(["query_id", "item_id"]).tail(1)
    assert last["impressions_28d"].sum() == len(ev)
    assert last["clicks_28d"].sum() == ev["click"].sum()
    assert last["orders_28d"].sum() == ev["order"].sum()
    assert f["event_timestamp"].min() == pd.Timestamp(SIM.start_date) + pd.Timedelta(days=1)
    assert f["event_timestamp"].max() == pd.Timestamp(SIM.start_date) + pd.Timedelta(days=SIM.days)
    for c in ("ctr_raw_28d", "ctr_debiased_28d", "engagement_smoothed", "engagement_confidence"):
        assert f[c].between(0, 1).all(), c
    assert f["gated_preference"].isna().all()
    # debiasing lifts the CTR of pairs shown low on the page far more than of pairs on top
    mean_pos = ev.groupby(["query_id", "item_id"])["position"].mean().rename("mean_pos").reset_index()
    m = last.merge(mean_pos, on=["query_id", "item_id"])
    m = m[m["clicks_28d"] > 0].assign(lift=lambda d: d["ctr_debiased_28d"] / d["ctr_raw_28d"])
    low, top = m.loc[m["mean_pos"] >= 6, "lift"], m.loc[m["mean_pos"] <= 2, "lift"]
    assert low.median() > 2.5 * top.median(), (low.median(), top.median())
    # confidence grows with exposure: head pairs are more certain than tail pairs
    seg = f["query_id"].map(queries.set_index("query_id")["segment"])
    conf = f.groupby(seg)["engagement_confidence"].median()
    assert conf["head"] > conf["tail"]


def test_features_are_point_in_time_correct(simulated):
    """Rows stamped up to day k+1 do not change when later days are appended."""
    ev, queries = simulated
    curve = position_bias_curve(ev)
    cut = pd.Timestamp(SIM.start_date) + pd.Timedelta(days=10)
    full = engagement_features(ev, queries, curve=curve)
    early = engagement_features(ev[ev["event_ts"] < cut], queries, curve=curve)
    full = full[full["event_timestamp"] <= cut].reset_index(drop=True)
    key = ["query_id", "item_id", "event_timestamp"]
    pd.testing.assert_frame_equal(
        full.sort_values(key).reset_index(drop=True), early.sort_values(key).reset_index(drop=True)
    )


def test_features_fit_the_feature_view(simulated):
    from relgrade.featurestore import conform_features

    ev, queries = simulated
    f = engagement_features(ev, queries)
    out = conform_features("gated_engagement_fv", f)
    assert len(out) == len(f)
