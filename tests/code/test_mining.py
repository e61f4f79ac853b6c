"""Mining logic (docs/mining.md): the product tokenizer, the retrieval prior, pattern
categories and difficulty levels, and the union of channel frames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relgrade.config import REPO_ROOT
from relgrade.mining import categorize, refine_levels, retrieval_prior, to_feature_batch, tokenize
from relgrade.mining import union as U

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
SNAP = pd.Timestamp("2026-07-15T00:00:00Z")


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
