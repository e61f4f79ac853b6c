"""Expectation suites: one per contract table, per feature view, and for the assembled
training set.

A suite is a function ``(df, ctx) -> (checked_df, expectations)``. Checks that Great
Expectations cannot express on a pandas batch directly (referential integrity against
another table, "not in the future" against the run's clock, funnel order) are computed
as ``chk_*`` columns first and then expected like any other column, so every failure
shows up in the Data Docs with its offending-row count.

Great Expectations is imported lazily (it takes seconds to import).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd

from relgrade.contract import GRADES, SEGMENTS, SLOTS, SPLITS, TABLES
from relgrade.util import share_floor, utc_now
from relgrade.views import (FEATURE_VIEWS, GATED_ENGAGEMENT_FV, QUERY_ATTRIBUTES_FV, RELEVANCE_GRADE_FV,
                            RETRIEVAL_PRIOR_FV)


@dataclass
class GateContext:
    """What a suite may compare a batch with."""

    now: datetime = field(default_factory=utc_now)
    item_ids: pd.Index | None = None  # catalog ids, for referential integrity
    query_ids: pd.Index | None = None  # query ids
    max_future_skew_seconds: int = 0
    min_rows: int = 1  # every suite: the batch has at least this many rows
    excluded_query_ids: pd.Index | None = None  # e.g. test-split queries (training set)
    evidence: "GradeEvidence | None" = None  # relevance_grade_fv: probes of the union distribution
    cut: datetime | None = None  # events: the instant nothing may reach (a real log's end: the mining snapshot)
    query_texts: pd.Series | None = None  # query_attributes_fv: query_id -> text (values must be spans of it)


@dataclass
class GradeEvidence:
    """What the grade stage measured about the batch's own distribution, checked by the
    ``relevance_grade_fv`` suite so that a teacher that has drifted cannot publish.

    ``probe`` holds grade rows (the view's columns) of random pairs - dev queries with
    uniformly drawn catalog items - graded exactly like the batch; they are validated
    with it, never published. ``band`` and ``human_grade`` are aligned with the batch:
    the best-rank band of each union pair, its human grade where it has one."""

    probe: pd.DataFrame
    band: np.ndarray
    human_grade: np.ndarray
    top_band: str
    deep_band: str
    min_probe_grade0_share: float = 0.97
    min_band_expected_grade_drop: float = 0.2
    min_judged_binary_agreement: float = 0.7
    positive_grade: int = 2
    share_confidence: float = 0.99  # shares are judged by their Wilson upper bound (relgrade.util.share_floor)


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def _seconds_ahead(ts: pd.Series, now: datetime) -> pd.Series:
    ts = pd.to_datetime(ts, utc=True)
    return (ts - pd.Timestamp(now)).dt.total_seconds()


def _common_keys(df: pd.DataFrame, ctx: GateContext, exp: list, ts_col: str | None, key: list[str]):
    """Not-null keys, key uniqueness, referential integrity, no future timestamps."""
    gxe = _gxe()
    out = df
    for k in key:
        exp.append(gxe.ExpectColumnValuesToNotBeNull(column=k))
    if len(key) > 1:
        exp.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=key))
    elif key:
        exp.append(gxe.ExpectColumnValuesToBeUnique(column=key[0]))
    if ctx.query_ids is not None and "query_id" in df.columns:
        out = out.assign(chk_query_known=df["query_id"].isin(ctx.query_ids) | df["query_id"].isna())
        exp.append(gxe.ExpectColumnValuesToBeInSet(column="chk_query_known", value_set=[True]))
    if ctx.item_ids is not None and "item_id" in df.columns:
        out = out.assign(chk_item_known=df["item_id"].isin(ctx.item_ids) | df["item_id"].isna())
        exp.append(gxe.ExpectColumnValuesToBeInSet(column="chk_item_known", value_set=[True]))
    if ts_col is not None:
        exp.append(gxe.ExpectColumnValuesToNotBeNull(column=ts_col))
        out = out.assign(chk_seconds_in_future=_seconds_ahead(df[ts_col], ctx.now))
        exp.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="chk_seconds_in_future", max_value=float(ctx.max_future_skew_seconds)
            )
        )
    return out


def _columns(exp: list, names: list[str]) -> None:
    gxe = _gxe()
    for n in names:
        exp.append(gxe.ExpectColumnToExist(column=n))


def _contract_table(df: pd.DataFrame, ctx: GateContext, table: str, ts_col: str | None, key: list[str],
                    references: bool = True):
    """What every contract table's suite starts with: at least ``min_rows`` rows, the
    contract's columns, then :func:`_common_keys` (without referential integrity when
    ``references`` is False: catalog and queries are what the others refer to)."""
    exp: list = [_gxe().ExpectTableRowCountToBeBetween(min_value=ctx.min_rows)]
    _columns(exp, TABLES[table].names)
    df = _common_keys(df, ctx if references else GateContext(now=ctx.now), exp, ts_col, key)
    return df, exp


def _text(column: str, max_length: int) -> list:
    """A text every row has: not null, 1 to ``max_length`` characters."""
    gxe = _gxe()
    return [gxe.ExpectColumnValuesToNotBeNull(column=column),
            gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1, max_value=max_length)]


def catalog_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _contract_table(df, ctx, "catalog", None, ["item_id"], references=False)
    exp += [*_text("title", 5000), gxe.ExpectColumnValuesToBeJsonParseable(column="attributes", mostly=1.0)]
    return df, exp


def queries_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _contract_table(df, ctx, "queries", None, ["query_id"], references=False)
    exp += [
        *_text("text", 1000),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="segment", value_set=list(SEGMENTS)),
        gxe.ExpectColumnValuesToNotBeNull(column="segment"),
        # the split rule gives ~10% test and ~10% dev; a batch far off that is suspect
        gxe.ExpectColumnDistinctValuesToBeInSet(column="split", value_set=list(SPLITS)),
    ]
    return df, exp


def judgments_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _contract_table(df, ctx, "judgments", "judged_at", ["query_id", "item_id"])
    exp += [
        gxe.ExpectColumnValuesToNotBeNull(column="grade"),
        gxe.ExpectColumnValuesToBeInSet(column="grade", value_set=list(GRADES)),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
        gxe.ExpectColumnValuesToNotBeNull(column="raw_label"),
        # distribution bound: a label set that is all one grade is a broken adapter
        gxe.ExpectColumnStdevToBeBetween(column="grade", min_value=0.05),
    ]
    return df, exp


def events_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _contract_table(df, ctx, "events", "event_ts", ["query_id", "item_id", "event_ts"])
    exp.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["search_id", "position"]))
    for c in ("impression", "click", "add_to_cart", "order"):
        exp.append(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1]))
    exp += [
        gxe.ExpectColumnValuesToBeBetween(column="position", min_value=1, max_value=100),
        gxe.ExpectColumnValuesToBeInSet(column="slot", value_set=list(SLOTS)),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="impression", column_B="click", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="click", column_B="add_to_cart", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="add_to_cart", column_B="order", or_equal=True),
        # distribution bound: overall CTR of a search log sits well inside (0, 0.5)
        gxe.ExpectColumnMeanToBeBetween(column="click", min_value=0.001, max_value=0.5),
    ]
    if ctx.cut is not None:
        df = df.assign(chk_before_cut=pd.to_datetime(df["event_ts"], utc=True) < pd.Timestamp(ctx.cut))
        exp.append(gxe.ExpectColumnValuesToBeInSet(
            column="chk_before_cut", value_set=[True],
            notes="every event happened before the cut (the mining snapshot): a later one would leak into training"))
    return df, exp


def _view_common(df: pd.DataFrame, ctx: GateContext, view: str):
    """Row count, the view's columns, and unique (join keys, event_timestamp)."""
    from relgrade.featurestore import view_columns, view_keys

    gxe = _gxe()
    exp: list = [gxe.ExpectTableRowCountToBeBetween(min_value=ctx.min_rows)]
    _columns(exp, view_columns(view))
    df = _common_keys(df, ctx, exp, "event_timestamp", [*view_keys(view), "event_timestamp"])
    return df, exp


def _unit_interval(exp: list, cols: list[str], not_null: bool) -> None:
    gxe = _gxe()
    for c in cols:
        if not_null:
            exp.append(gxe.ExpectColumnValuesToNotBeNull(column=c))
        exp.append(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0))


def retrieval_prior_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _view_common(df, ctx, RETRIEVAL_PRIOR_FV)
    _unit_interval(exp, ["retrieval_prior"], True)
    for c in ("rank_lexical", "rank_dense", "rank_behavioral", "rank_external"):
        exp.append(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=1))
    exp += [
        gxe.ExpectColumnValuesToBeBetween(column="agreement", min_value=1, max_value=4),
        gxe.ExpectColumnValuesToNotBeNull(column="channel_pattern"),
        gxe.ExpectColumnValuesToBeInSet(
            column="category", value_set=["easy_positive", "hard_positive", "hard_negative", "other"]
        ),
        gxe.ExpectColumnValuesToBeBetween(column="difficulty_level", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToNotBeNull(column="difficulty_level"),
    ]
    return df, exp


def relevance_grade_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    ev = ctx.evidence
    if ev is not None:  # the probe rows are validated with the batch (same columns), never published
        df = pd.concat([df.assign(chk_population="union"), ev.probe.assign(chk_population="probe")],
                       ignore_index=True)
    df, exp = _view_common(df, ctx, RELEVANCE_GRADE_FV)
    probs = [f"p_grade_{g}" for g in GRADES]
    df = df.assign(chk_prob_sum=df[probs].astype(float).sum(axis=1))
    _unit_interval(exp, ["confidence", *probs], True)
    exp += [
        gxe.ExpectColumnValuesToNotBeNull(column="grade"),
        gxe.ExpectColumnValuesToBeInSet(column="grade", value_set=list(GRADES)),
        gxe.ExpectColumnValuesToBeBetween(column="expected_grade", min_value=0.0, max_value=3.0),
        gxe.ExpectColumnValuesToBeBetween(column="chk_prob_sum", min_value=0.999, max_value=1.001),
        gxe.ExpectColumnValuesToBeBetween(column="deciding_stage", min_value=0, max_value=10),  # 0: a human judgment
        gxe.ExpectColumnValuesToNotBeNull(column="teacher_version"),
    ]
    if ev is None:
        return df, exp
    return _evidence_checks(df, exp, ev)


def _evidence_checks(df: pd.DataFrame, exp: list, ev: GradeEvidence):
    """The grade batch's distribution checks: random-pair probe, best-rank band drop, agreement on judged pairs."""
    gxe = _gxe()
    union = (df["chk_population"] == "union").to_numpy()
    grade = pd.to_numeric(df["grade"]).to_numpy(dtype=float)
    eg = pd.to_numeric(df["expected_grade"]).to_numpy(dtype=float)
    band = np.full(len(df), "", dtype=object)
    band[union] = ev.band
    human = np.full(len(df), np.nan)
    human[union] = ev.human_grade
    deep = union & (band == ev.deep_band)
    deep_mean = float(eg[deep].mean()) if deep.any() else np.nan
    judged = ~np.isnan(human)
    from great_expectations.expectations.row_conditions import Column

    df = df.assign(
        chk_grade0=(grade == 0).astype(float),
        chk_judged=judged,
        chk_band=band,
        chk_expected_grade_over_deep_band=eg - deep_mean,
        chk_judged_binary_agree=np.where(judged, ((grade >= ev.positive_grade) == (human >= ev.positive_grade))
                                         .astype(float), np.nan),
    )
    n_probe = int((df["chk_population"] == "probe").sum())
    probe_floor = share_floor(ev.min_probe_grade0_share, n_probe, ev.share_confidence)
    exp += [
        gxe.ExpectColumnMeanToBeBetween(
            column="chk_grade0", min_value=round(probe_floor, 6), row_condition=Column("chk_population") == "probe",
            notes=f"random-pair probe: dev queries paired with uniformly drawn catalog items come out grade 0; the "
                  f"share's Wilson upper bound ({ev.share_confidence:.0%}, {n_probe} pairs) must reach "
                  f"{ev.min_probe_grade0_share}, i.e. a sampled share of at least {probe_floor:.4f}"),
        gxe.ExpectColumnMeanToBeBetween(
            column="chk_expected_grade_over_deep_band", min_value=ev.min_band_expected_grade_drop,
            row_condition=Column("chk_band") == ev.top_band,
            notes=f"mean expected grade of the best-rank band {ev.top_band} exceeds that of {ev.deep_band}"),
    ]
    if judged.any():
        n_judged = int(judged.sum())
        agree_floor = share_floor(ev.min_judged_binary_agreement, n_judged, ev.share_confidence)
        exp.append(gxe.ExpectColumnMeanToBeBetween(
            column="chk_judged_binary_agree", min_value=round(agree_floor, 6),
            row_condition=Column("chk_judged") == True,  # noqa: E712 - a GX condition, not a Python comparison
            notes=f"binary agreement (relevant or not) with the human grade on the {n_judged} union pairs that carry "
                  f"one; its Wilson upper bound ({ev.share_confidence:.0%}) must reach "
                  f"{ev.min_judged_binary_agreement}, i.e. a sampled share of at least {agree_floor:.4f}"))
    return df, exp


def gated_engagement_suite(df: pd.DataFrame, ctx: GateContext):
    gxe = _gxe()
    df, exp = _view_common(df, ctx, GATED_ENGAGEMENT_FV)
    counts = [f"{m}_{w}d" for w in (7, 28) for m in ("impressions", "clicks", "add_to_cart", "orders")]
    for c in counts:
        exp.append(gxe.ExpectColumnValuesToNotBeNull(column=c))
        exp.append(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0))
    for m in ("impressions", "clicks", "add_to_cart", "orders"):
        exp.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=f"{m}_28d", column_B=f"{m}_7d", or_equal=True))
    exp.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="impressions_28d", column_B="clicks_28d", or_equal=True))
    _unit_interval(exp, ["ctr_raw_28d", "ctr_debiased_28d", "engagement_smoothed", "engagement_confidence", "gated_preference"], False)
    return df, exp


def query_attributes_suite(df: pd.DataFrame, ctx: GateContext):
    """The query tagger's output: one row per query and instant, every value a span of
    the query's own text (a tagger that invents words fails), a JSON record per row
    whose attribute count matches ``n_attributes``, and one tagger version per batch."""
    import json

    from relgrade.views import QUERY_ATTRIBUTE_FIELDS as COLUMNS

    gxe = _gxe()
    df, exp = _view_common(df, ctx, QUERY_ATTRIBUTES_FV)
    texts = ctx.query_texts
    values = list(COLUMNS.values())
    checks = {}
    if texts is not None:
        words = df["query_id"].map(texts).fillna("").astype(str).str.lower().str.split()
        padded = " " + words.str.join(" ") + " "
        inside = np.ones(len(df), dtype=bool)
        for c in values:
            v = df[c]
            ok = v.isna().to_numpy() | np.fromiter(
                (f" {str(x).lower()} " in t for x, t in zip(v.fillna(""), padded)), dtype=bool, count=len(df))
            inside &= ok
        checks["chk_values_in_query"] = inside

    def _count(js) -> float:
        try:
            return float(len(json.loads(js)["attributes"]))
        except (TypeError, ValueError, KeyError):
            return -1.0

    checks["chk_json_count_matches"] = (df["attributes_json"].map(_count)
                                        == pd.to_numeric(df["n_attributes"], errors="coerce").astype(float))
    df = df.assign(**checks)
    exp += [
        gxe.ExpectColumnValuesToNotBeNull(column="n_attributes"),
        gxe.ExpectColumnValuesToBeBetween(column="n_attributes", min_value=0, max_value=32),
        gxe.ExpectColumnValuesToNotBeNull(column="attributes_json"),
        gxe.ExpectColumnValuesToBeJsonParseable(column="attributes_json"),
        gxe.ExpectColumnValuesToNotBeNull(column="tagger_version"),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="tagger_version", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="chk_json_count_matches", value_set=[True],
                                        notes="n_attributes is the number of attribute spans in attributes_json"),
    ]
    if "chk_values_in_query" in checks:
        exp.append(gxe.ExpectColumnValuesToBeInSet(
            column="chk_values_in_query", value_set=[True],
            notes="every extracted value is a run of the query's own words"))
    return df, exp


SUITES: dict[str, Callable[[pd.DataFrame, GateContext], tuple[pd.DataFrame, list]]] = {
    "catalog": catalog_suite,
    "queries": queries_suite,
    "judgments": judgments_suite,
    "events": events_suite,
    RETRIEVAL_PRIOR_FV: retrieval_prior_suite,
    RELEVANCE_GRADE_FV: relevance_grade_suite,
    GATED_ENGAGEMENT_FV: gated_engagement_suite,
    QUERY_ATTRIBUTES_FV: query_attributes_suite,
}


def register(name: str, fn: Callable[[pd.DataFrame, GateContext], tuple[pd.DataFrame, list]]) -> None:
    """Add a suite (later stages register theirs, e.g. the training set)."""
    SUITES[name] = fn


def _as_float_for_gx(df: pd.DataFrame) -> pd.DataFrame:
    """Nullable extension dtypes (Int64) confuse some GX metrics: hand GX plain numpy."""
    out = {}
    for c in df.columns:
        s = df[c]
        if isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(s.dtype):
            out[c] = s.astype("float64") if s.isna().any() else s.astype(np.int64)
        else:
            out[c] = s
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- training set (assemble stage)
@dataclass
class TrainingSetContext(GateContext):
    """Bounds for the assembled training set (from ``assemble`` config)."""

    min_list_size: int = 1
    max_list_size: int = 1000
    max_level_share: float = 0.95
    min_levels_present: int = 2
    gate_min_grade: int = 2


TRAINING_SET_REQUIRED = [
    "query_id", "item_id", "event_timestamp", "query_text", "item_title", "segment", "retrieval_prior", "agreement",
    "category", "difficulty_level", "grade", "expected_grade", "confidence", "impressions_28d", "clicks_28d",
    "ctr_raw_28d", "ctr_debiased_28d", "gated_preference", "target", "grade_target", "click_target",
]
TRAINING_SET_VIEWS = FEATURE_VIEWS


def training_set_suite(df: pd.DataFrame, ctx: GateContext):
    """The assembled training set: keys, target ranges, list sizes per query, difficulty
    level shares, gating, no excluded (test) query, and no leakage: for each view the
    ``known_at_<view>`` column (earliest instant the joined values were stored, from
    relgrade.assemble.build.feature_known_at) is <= the row's event_timestamp."""
    gxe = _gxe()
    exp: list = [gxe.ExpectTableRowCountToBeBetween(min_value=ctx.min_rows)]
    _columns(exp, TRAINING_SET_REQUIRED + [f"known_at_{v}" for v in TRAINING_SET_VIEWS])
    df = _common_keys(df, ctx, exp, "event_timestamp", ["query_id", "item_id"])
    lo, hi = getattr(ctx, "min_list_size", 1), getattr(ctx, "max_list_size", 1000)
    max_share = getattr(ctx, "max_level_share", 0.95)
    min_levels = getattr(ctx, "min_levels_present", 2)
    gate_grade = getattr(ctx, "gate_min_grade", 2)
    size = df.groupby("query_id")["item_id"].transform("size")
    lvl = pd.to_numeric(df["difficulty_level"], errors="coerce")
    share = lvl.map(lvl.value_counts(normalize=True))
    grade = pd.to_numeric(df["grade"], errors="coerce")
    checks = {
        "chk_list_size": size.astype("int64"),
        "chk_level_share": share.astype("float64"),
        "chk_gate_respected": df["gated_preference"].isna() | (grade >= gate_grade),
    }
    if ctx.excluded_query_ids is not None:
        checks["chk_query_not_excluded"] = ~df["query_id"].isin(ctx.excluded_query_ids)
    ev = pd.to_datetime(df["event_timestamp"], utc=True)
    for v in TRAINING_SET_VIEWS:
        col = f"known_at_{v}"
        if col in df.columns:
            known = pd.to_datetime(df[col], utc=True)
            checks[f"chk_no_leak_{v}"] = known.isna() | (known <= ev)
    df = df.assign(**checks)
    exp += [
        gxe.ExpectColumnValuesToBeBetween(column="chk_list_size", min_value=lo, max_value=hi),
        gxe.ExpectColumnValuesToBeBetween(column="chk_level_share", min_value=0.0, max_value=max_share),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="difficulty_level", min_value=min_levels, max_value=5),
        gxe.ExpectColumnValuesToNotBeNull(column="difficulty_level"),
        gxe.ExpectColumnValuesToBeBetween(column="difficulty_level", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToBeInSet(column="chk_gate_respected", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="grade", value_set=list(GRADES)),
        gxe.ExpectColumnValuesToBeBetween(column="expected_grade", min_value=0.0, max_value=3.0),
        gxe.ExpectColumnValuesToBeInSet(column="segment", value_set=list(SEGMENTS)),
        gxe.ExpectColumnValuesToNotBeNull(column="query_text"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_title"),
        gxe.ExpectColumnValuesToBeBetween(column="impressions_28d", min_value=0),
    ]
    _unit_interval(exp, ["target", "retrieval_prior"], True)
    _unit_interval(exp, ["grade_target", "click_target", "gated_preference", "confidence"], False)
    for c in checks:
        if c.startswith("chk_no_leak_") or c == "chk_query_not_excluded":
            exp.append(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True]))
    # hand GX only the columns the expectations read (a 2M-row set has ~70 columns)
    used = []
    for e in exp:
        for k in ("column", "column_A", "column_B"):
            if getattr(e, k, None):
                used.append(getattr(e, k))
        used += list(getattr(e, "column_list", None) or [])
    return df[[c for c in dict.fromkeys(used) if c in df.columns]], exp


register("training_set", training_set_suite)
