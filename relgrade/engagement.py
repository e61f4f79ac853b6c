"""Windowed engagement features per (query, item) from an events log.

One row per (query, item, day d) for every day d on which the pair had an impression;
the counts cover the trailing 7 / 28 days ending with d (inclusive). The row is stamped
``event_timestamp = start of day d + 1 (UTC)``: a day's aggregate is only known once the
day is over, so a point-in-time join for a training example at instant t only sees
aggregates of days that ended at or before t.

Position debiasing uses a position-bias curve estimated from the log itself
(:func:`position_bias_curve`, an EM fit of the position-based click model), never the
simulator's settings. Definitions: docs/simulator.md, "Engagement features".
"""
from __future__ import annotations

import ast
import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

log = logging.getLogger("relgrade.engagement")

DAY_NS = 86_400 * 10**9
DEFAULT_PRIOR_STRENGTH = 20.0
DEFAULT_MIN_UNIT_IMPRESSIONS = 20
_MIN_PROPENSITY = 1e-3
_COUNTS = (("impressions", "impression"), ("clicks", "click"), ("add_to_cart", "add_to_cart"), ("orders", "order"))


@lru_cache(maxsize=1)
def _schema_columns() -> list[str]:
    """Feature names of GATED_ENGAGEMENT_SCHEMA in feature_repo/definitions.py, read
    with ``ast`` (importing the Feast repo costs seconds; the file stays the one
    source of the names)."""
    from relgrade.config import FEATURE_REPO_DIR

    tree = ast.parse((FEATURE_REPO_DIR / "definitions.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "GATED_ENGAGEMENT_SCHEMA" for t in node.targets):
            return [elt.elts[0].value for elt in node.value.elts]
    from relgrade.featurestore import definitions  # unusual layout: import it

    return [n for n, _ in definitions().GATED_ENGAGEMENT_SCHEMA]


def _day_numbers(ts: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 UTC."""
    s = pd.to_datetime(ts, utc=True)
    return (s.astype("datetime64[ns, UTC]").array.asi8 // DAY_NS).astype(np.int64)


def _codes(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(s.astype(str), sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


# --------------------------------------------------------------------------- position bias
def position_bias_curve(
    events: pd.DataFrame, max_iter: int = 200, tol: float = 1e-6, min_unit_impressions: int = DEFAULT_MIN_UNIT_IMPRESSIONS
) -> pd.Series:
    """Relative examination probability by position (index: position, value at 1 = 1),
    estimated from the log with EM for the position-based model.

    Model: P(click) = theta[position] * gamma[query, item, slot]. Only (query, item,
    slot) units shown at two or more distinct positions are used: a unit seen at a
    single position carries no information on the ratio of two thetas (intervention
    harvesting). Units with fewer than ``min_unit_impressions`` impressions are left out
    as well: with a handful of impressions per unit the per-unit attractiveness
    parameters over-fit and bias the curve toward flat (incidental-parameter bias);
    when fewer than 2 units pass, the threshold drops to 1. Attractiveness is per slot because an ad presentation may attract
    differently than an organic one. Clicks and impressions are first aggregated to
    (unit, position) cells, so one EM step is a few bincounts.

    E-step on a non-click: P(examined, not attractive | no click) =
    theta (1 - gamma) / (1 - theta gamma), P(not examined, attractive | no click) =
    (1 - theta) gamma / (1 - theta gamma); a click is examined and attractive.
    M-step: theta[p] = expected examinations at p / impressions at p, gamma likewise
    per unit. The curve is theta / theta[1]. Positions the harvested units never reach
    take the estimate of the nearest lower position; values are floored at 1e-3.
    """
    pos = pd.to_numeric(events["position"]).to_numpy(np.int64)
    if len(pos) == 0:
        raise ValueError("position_bias_curve: empty events")
    max_pos = int(pos.max())
    clicks = pd.to_numeric(events["click"]).to_numpy(np.float64)
    n, c, cell_pos, u_inv, keep = _harvested_cells(events, pos, clicks, max_pos, min_unit_impressions)
    curve = np.full(max_pos + 1, np.nan)
    if keep.sum() >= 2:
        curve = _em_theta(n[keep], c[keep], cell_pos[keep], u_inv[keep], max_pos, max_iter, tol)
    if not np.isfinite(curve[1]):
        # no position-1 data among harvested units: fall back to naive click-rate ratios
        n_pos = np.bincount(pos, minlength=max_pos + 1).astype(np.float64)
        ctr = np.bincount(pos, weights=clicks, minlength=max_pos + 1) / np.maximum(n_pos, 1)
        curve = np.where(n_pos > 0, ctr, np.nan)
        if not (np.isfinite(curve[1]) and curve[1] > 0):
            return pd.Series(np.ones(max_pos), index=pd.Index(np.arange(1, max_pos + 1), name="position"), name="propensity")
    rel = curve[1:] / curve[1]
    rel = pd.Series(rel).ffill().to_numpy()
    rel = np.clip(rel, _MIN_PROPENSITY, None)
    return pd.Series(rel, index=pd.Index(np.arange(1, max_pos + 1), name="position"), name="propensity")


def _harvested_cells(events: pd.DataFrame, pos: np.ndarray, clicks: np.ndarray, max_pos: int, min_unit_impressions: int):
    """(unit, position) cells: impressions, clicks, position, unit index, and which cells the EM fit keeps."""
    qc, _ = _codes(events["query_id"])
    ic, _ = _codes(events["item_id"])
    ad = (events["slot"].astype(str).to_numpy() == "ad") if "slot" in events else np.zeros(len(pos), bool)
    unit = (qc * (int(ic.max()) + 1) + ic) * 2 + ad
    cell_key = unit * (max_pos + 1) + pos
    cells, inv = np.unique(cell_key, return_inverse=True)
    n = np.bincount(inv).astype(np.float64)
    c = np.bincount(inv, weights=clicks)
    cell_unit = cells // (max_pos + 1)
    cell_pos = (cells % (max_pos + 1)).astype(np.int64)
    # keep units seen at >= 2 distinct positions
    _, u_inv = np.unique(cell_unit, return_inverse=True)
    u_imps = np.bincount(u_inv, weights=n)
    multi = np.bincount(u_inv) >= 2
    ok = multi & (u_imps >= min_unit_impressions)
    if ok.sum() < 2:
        ok = multi
    return n, c, cell_pos, u_inv, ok[u_inv]


def _em_theta(n: np.ndarray, c: np.ndarray, p: np.ndarray, u_inv: np.ndarray, max_pos: int, max_iter: int, tol: float) -> np.ndarray:
    """EM fit of the position-based model on the kept cells: theta by position (NaN where no impression)."""
    _, uu = np.unique(u_inv, return_inverse=True)
    n_pos = np.bincount(p, weights=n, minlength=max_pos + 1)
    n_unit = np.bincount(uu, weights=n)
    # start from the naive click-rate ratio and each unit's own click rate
    theta = np.bincount(p, weights=c, minlength=max_pos + 1) / np.maximum(n_pos, 1)
    theta = np.clip(theta / max(theta.max(), 1e-12), 1e-3, 1.0)
    gamma = np.clip(np.bincount(uu, weights=c) / n_unit / 0.5, 1e-3, 0.999)
    nc = n - c
    for it in range(max_iter):
        th, ga = theta[p], gamma[uu]
        den = np.maximum(1.0 - th * ga, 1e-12)
        e_exam = c + nc * th * (1.0 - ga) / den
        e_attr = c + nc * (1.0 - th) * ga / den
        new_theta = np.where(n_pos > 0, np.bincount(p, weights=e_exam, minlength=max_pos + 1) / np.maximum(n_pos, 1), theta)
        new_gamma = np.bincount(uu, weights=e_attr) / n_unit
        new_theta, new_gamma = np.clip(new_theta, 1e-6, 1.0), np.clip(new_gamma, 1e-6, 1.0)
        delta = np.nanmax(np.abs(new_theta[1:] / new_theta[1] - theta[1:] / theta[1]))
        theta, gamma = new_theta, new_gamma
        if delta < tol:
            break
    log.info("position bias EM: %d cells, %d iterations", len(n), it + 1)
    return np.where(n_pos > 0, theta, np.nan)


# --------------------------------------------------------------------------- features
def _window_sums(cum: np.ndarray, key: np.ndarray, unit: np.ndarray, day: np.ndarray, w: int, stride: int) -> np.ndarray:
    """Sum over the rows of ``unit`` with day in [day - w + 1, day] (rows sorted by key =
    unit * stride + day; cum = cumulative sums with a leading zero row)."""
    hi = np.searchsorted(key, unit * stride + day, side="right")
    lo = np.searchsorted(key, unit * stride + day - w + 1, side="left")
    return cum[hi] - cum[lo]


WINDOWS_DAYS = (7, 28)  # the trailing windows the gated_engagement_fv schema names (``*_7d``, ``*_28d``)


@dataclass
class _PairDays:
    """The log aggregated to sorted (pair, day) rows, with the codes that name them."""

    q_uni: np.ndarray
    i_uni: np.ndarray
    day0: int
    n_days: int
    stride: int
    pair_codes: np.ndarray
    keys: np.ndarray
    vals: dict
    row_unit: np.ndarray
    row_day: np.ndarray


def engagement_features(
    events: pd.DataFrame,
    queries: pd.DataFrame,
    windows_days=WINDOWS_DAYS,
    as_of_days: list | None = None,
    *,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    curve: pd.Series | None = None,
) -> pd.DataFrame:
    """Windowed engagement aggregates for the gated_engagement_fv view.

    Columns: query_id, item_id, event_timestamp, then GATED_ENGAGEMENT_SCHEMA in order.
    Rows: one per (pair, day d) with an impression of the pair on day d; with
    ``as_of_days`` (UTC calendar days), instead one per (pair, as-of day d) for every
    pair with an impression in the trailing longest window ending with d.
    event_timestamp = start of day d + 1, UTC.

    ``curve`` (position -> relative propensity) defaults to
    :func:`position_bias_curve` of ``events``. ``prior_strength`` is the pseudo-exposure
    of the segment prior in ``engagement_smoothed`` / ``engagement_confidence``.
    """
    t0 = time.perf_counter()
    windows, expected = _checked_windows(windows_days, prior_strength)
    wmax = windows[-1]
    out_cols = ["query_id", "item_id", "event_timestamp", *expected]
    if len(events) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in out_cols})

    if curve is None:
        curve = position_bias_curve(events)
    rows = _pair_days(events, _propensities(events, curve), wmax)
    seg_mu, pair_seg = _segment_prior(queries, rows, wmax)
    n_ext = rows.n_days + wmax
    qu, qd = _query_points(rows, as_of_days, n_ext, wmax)
    cols = _window_columns(rows, qu, qd, windows, seg_mu[pair_seg[qu], qd], prior_strength)

    pq = rows.pair_codes[qu]
    n_items = len(rows.i_uni)
    ts = (rows.day0 + qd + 1).astype("datetime64[D]").astype("datetime64[us]")
    df = pd.DataFrame(
        {
            "query_id": rows.q_uni[pq // n_items],
            "item_id": rows.i_uni[pq % n_items],
            "event_timestamp": pd.DatetimeIndex(ts).tz_localize("UTC"),
            **cols,
            "gated_preference": np.full(len(qu), np.nan),
        }
    )
    df = df[out_cols]
    log.info("engagement features: %d rows from %d events in %.1fs", len(df), len(events), time.perf_counter() - t0)
    return df


def _checked_windows(windows_days, prior_strength: float) -> tuple[list[int], list[str]]:
    """The sorted windows and the view schema's feature names; refuses windows or a prior that do not fit."""
    windows = sorted({int(w) for w in windows_days})
    if not windows or windows[0] < 1:
        raise ValueError(f"windows_days must be positive integers, got {windows_days!r}")
    wmax = windows[-1]
    expected = _schema_columns()
    produced = [f"{m}_{w}d" for w in windows for m, _ in _COUNTS] + [
        f"ctr_raw_{wmax}d", f"ctr_debiased_{wmax}d", "engagement_smoothed", "engagement_confidence", "gated_preference",
    ]
    if sorted(produced) != sorted(expected):
        raise ValueError(f"windows_days {windows_days!r} do not produce the view schema {expected}")
    if prior_strength <= 0:
        raise ValueError("prior_strength must be > 0")
    return windows, expected


def _propensities(events: pd.DataFrame, curve: pd.Series) -> np.ndarray:
    """Each event's relative examination propensity from the curve (beyond its end: its last value)."""
    pos = pd.to_numeric(events["position"]).to_numpy(np.int64)
    lut = np.full(max(int(pos.max()), int(curve.index.max())) + 1, float(curve.iloc[-1]))
    lut[curve.index.to_numpy(np.int64)] = curve.to_numpy(np.float64)
    lut[0] = lut[1]
    return lut[pos]


def _pair_days(events: pd.DataFrame, propensity: np.ndarray, wmax: int) -> _PairDays:
    """Daily sums of impressions, clicks, carts, orders and exposure per (pair, day)."""
    qc, q_uni = _codes(events["query_id"])
    ic, i_uni = _codes(events["item_id"])
    day = _day_numbers(events["event_ts"])
    day0 = int(day.min())
    dd = day - day0
    n_days = int(dd.max()) + 1
    stride = n_days + wmax + 1

    pair_raw = qc * len(i_uni) + ic
    pair_codes, pair_inv = np.unique(pair_raw, return_inverse=True)
    key_raw = pair_inv.astype(np.int64) * stride + dd
    keys, k_inv = np.unique(key_raw, return_inverse=True)  # sorted (pair, day) rows
    vals = {
        "impression": np.bincount(k_inv, weights=pd.to_numeric(events["impression"]).to_numpy(np.float64)),
        "click": np.bincount(k_inv, weights=pd.to_numeric(events["click"]).to_numpy(np.float64)),
        "add_to_cart": np.bincount(k_inv, weights=pd.to_numeric(events["add_to_cart"]).to_numpy(np.float64)),
        "order": np.bincount(k_inv, weights=pd.to_numeric(events["order"]).to_numpy(np.float64)),
        "exposure": np.bincount(k_inv, weights=propensity * pd.to_numeric(events["impression"]).to_numpy(np.float64)),
    }
    return _PairDays(q_uni, i_uni, day0, n_days, stride, pair_codes, keys, vals, keys // stride, keys % stride)


def _segment_prior(queries: pd.DataFrame, r: _PairDays, wmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment prior per day (trailing wmax-day debiased CTR of the segment) and each pair's segment."""
    seg_map = {}
    if "segment" in queries.columns:
        seg_map = dict(zip(queries["query_id"].astype(str), queries["segment"].astype(str)))
    # (queries without a segment share one "unknown" prior)
    seg_names, q_seg = np.unique(np.array([seg_map.get(q, "") for q in r.q_uni], dtype=str), return_inverse=True)
    pair_seg = q_seg[r.pair_codes // len(r.i_uni)]
    n_seg, n_ext = len(seg_names), r.n_days + wmax  # as-of days may lie after the last event day
    daily_click = np.zeros(n_seg * n_ext)
    daily_exp = np.zeros(n_seg * n_ext)
    cell = pair_seg[r.row_unit] * n_ext + r.row_day
    daily_click += np.bincount(cell, weights=r.vals["click"], minlength=n_seg * n_ext)
    daily_exp += np.bincount(cell, weights=r.vals["exposure"], minlength=n_seg * n_ext)

    seg_click, seg_exp = _rolling(daily_click, n_seg, n_ext, wmax), _rolling(daily_exp, n_seg, n_ext, wmax)
    all_click, all_exp = seg_click.sum(axis=0), seg_exp.sum(axis=0)
    global_mu = np.divide(all_click, all_exp, out=np.zeros(n_ext), where=all_exp > 0)
    seg_mu = np.where(seg_exp > 0, np.divide(seg_click, seg_exp, out=np.zeros_like(seg_click), where=seg_exp > 0), global_mu[None, :])
    return np.clip(seg_mu, 0.0, 1.0), pair_seg


def _rolling(a: np.ndarray, n_seg: int, n_ext: int, wmax: int) -> np.ndarray:
    """Trailing wmax-day sums per segment of a flat (segment, day) array."""
    a = a.reshape(n_seg, n_ext)
    c = np.concatenate([np.zeros((n_seg, 1)), np.cumsum(a, axis=1)], axis=1)
    idx = np.arange(n_ext)
    return c[:, idx + 1] - c[:, np.maximum(idx + 1 - wmax, 0)]


def _query_points(r: _PairDays, as_of_days: list | None, n_ext: int, wmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The (unit, day) points a row is emitted for: every (pair, day) row, or the pairs active before each as-of day."""
    if as_of_days is None:
        return r.row_unit, r.row_day
    qu_l, qd_l = [], []
    for a in as_of_days:
        t = pd.Timestamp(a)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        da = int(t.normalize().value // DAY_NS) - r.day0
        if da < 0 or da >= n_ext - 1:
            continue  # no event in the trailing window ending that day
        sel = (r.row_day <= da) & (r.row_day > da - wmax)
        units = np.unique(r.row_unit[sel])
        qu_l.append(units)
        qd_l.append(np.full(len(units), da, dtype=np.int64))
    qu = np.concatenate(qu_l) if qu_l else np.empty(0, np.int64)
    qd = np.concatenate(qd_l) if qd_l else np.empty(0, np.int64)
    o = np.lexsort((qu, qd))
    return qu[o], qd[o]


def _window_columns(r: _PairDays, qu: np.ndarray, qd: np.ndarray, windows: list[int], mu: np.ndarray, prior_strength: float) -> dict:
    """Windowed counts, raw and debiased CTR, smoothed engagement and its confidence at the query points."""
    wmax = windows[-1]
    out: dict[str, np.ndarray] = {}
    cums = {k: np.concatenate([[0.0], np.cumsum(v)]) for k, v in r.vals.items()}
    for w in windows:
        for name, src in _COUNTS:
            out[f"{name}_{w}d"] = np.rint(_window_sums(cums[src], r.keys, qu, qd, w, r.stride)).astype(np.int64)
    exposure = _window_sums(cums["exposure"], r.keys, qu, qd, wmax, r.stride)
    imp = out[f"impressions_{wmax}d"].astype(np.float64)
    clk = out[f"clicks_{wmax}d"].astype(np.float64)
    ctr_raw = np.where(imp > 0, clk / np.where(imp > 0, imp, 1.0), np.nan)
    ctr_deb = np.where(exposure > 0, np.clip(clk / np.where(exposure > 0, exposure, 1.0), 0.0, 1.0), np.nan)
    smoothed = np.clip((clk + prior_strength * mu) / (exposure + prior_strength), 0.0, 1.0)
    confidence = exposure / (exposure + prior_strength)
    out[f"ctr_raw_{wmax}d"] = ctr_raw
    out[f"ctr_debiased_{wmax}d"] = ctr_deb
    out["engagement_smoothed"] = smoothed
    out["engagement_confidence"] = confidence
    return out
