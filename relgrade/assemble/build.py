"""Point-in-time assembly of the training set through Feast (docs/assemble.md).

Entity rows are the mining snapshot's union pairs of the wanted splits, all stamped at the
cut instant T. They go through ``get_historical_features`` with the training feature
service, so each feature comes from the latest row of its view stamped <= T. The leakage
cross-check (:func:`feature_known_at`) then finds, for each joined row and view, the
earliest stored row carrying exactly the values Feast returned: if that instant is after
T, a later write leaked in (the ``training_set`` suite fails the batch).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from relgrade.assemble.gating import refresh_gated_engagement
from relgrade.assemble.targets import add_targets
from relgrade.config import RelgradeConfig
from relgrade.io import file_digest, frame_digest, read_parquet
from relgrade.views import (FEATURE_VIEWS, GATED_ENGAGEMENT_FV, QUERY_ATTRIBUTES_FV, RELEVANCE_GRADE_FV,
                            RETRIEVAL_PRIOR_FV)

log = logging.getLogger("relgrade.assemble")

VIEWS = FEATURE_VIEWS
ENGAGEMENT_VIEW = GATED_ENGAGEMENT_FV
TRAINSET_COLUMNS = [
    "query_id", "item_id", "event_timestamp", "query_text", "item_title", "segment",
    "retrieval_prior", "agreement", "category", "difficulty_level",
    "grade", "expected_grade", "confidence",
    "impressions_28d", "clicks_28d", "ctr_raw_28d", "ctr_debiased_28d", "gated_preference",
    "target", "grade_target", "click_target",
    # provenance and intermediate terms (beyond the contract; the trainer may ignore them)
    "split", "engagement_smoothed", "engagement_confidence", "preference_term", "target_source",
    "teacher_version", "level_source",
    # the query's attributes (query_attributes_fv)
    "product_type", "brand", "size", "color", "material", "count", "power", "model_number", "n_attributes",
]
INT_COLUMNS = ("agreement", "difficulty_level", "grade", "impressions_28d", "clicks_28d")


def cut_instant(cfg: RelgradeConfig) -> pd.Timestamp:
    from relgrade.mining.stage import default_snapshot
    from relgrade.util import utc_timestamp

    return utc_timestamp(cfg.assemble.cut_ts) if cfg.assemble.cut_ts is not None else default_snapshot(cfg)


def output_paths(cfg: RelgradeConfig) -> dict[str, Path]:
    p = cfg.paths
    r = p.report("assemble")
    return {"trainset": p.trainset, "lists": p.trainset_lists, "manifest": p.trainset_manifest,
            "report_html": r / "report.html", "report_json": r / "report.json"}


def load_union(cfg: RelgradeConfig) -> tuple[pd.DataFrame, Path, pd.Timestamp]:
    """(query_id, item_id) of the mining snapshot's union, its path and the snapshot."""
    from relgrade.mining.stage import default_snapshot

    snap = default_snapshot(cfg)
    path = cfg.paths.union(snap)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `relgrade mine` for snapshot {snap.isoformat()} first")
    u = read_parquet(path, columns=["query_id", "item_id"])
    if len(u) == 0:
        raise ValueError(f"{path} holds no (query, item) pair")
    return u, path, snap


def entity_rows(union: pd.DataFrame, queries: pd.DataFrame, splits: list[str], cut: pd.Timestamp) -> pd.DataFrame:
    """Union pairs of queries in ``splits``, each stamped at the cut; with ``split``."""
    split = dict(zip(queries["query_id"].astype(str), queries["split"].astype(str)))
    q = union["query_id"].astype(str)
    s = q.map(split)
    if s.isna().any():
        bad = sorted(q[s.isna()].unique())[:5]
        raise ValueError(f"{int(s.isna().sum())} union row(s) have a query that is not in queries.parquet, e.g. {bad}")
    keep = s.isin(splits).to_numpy()
    out = pd.DataFrame({"query_id": q.to_numpy()[keep], "item_id": union["item_id"].astype(str).to_numpy()[keep],
                        "split": s.to_numpy()[keep]})
    out = out.drop_duplicates(["query_id", "item_id"]).reset_index(drop=True)
    out["event_timestamp"] = pd.Series(cut, index=out.index).astype("datetime64[us, UTC]")
    return out


def grade_lookup(cfg: RelgradeConfig) -> Callable[[pd.DataFrame, pd.Timestamp], pd.DataFrame]:
    """Cascade grade and confidence known at the cut, through Feast."""
    from relgrade.featurestore import historical_features

    def look(pairs: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
        ent = pairs[["query_id", "item_id"]].copy()
        ent["event_timestamp"] = pd.Series(cut, index=ent.index).astype("datetime64[us, UTC]")
        return historical_features(cfg, ent, ["relevance_grade_fv:grade", "relevance_grade_fv:confidence"])

    return look


# --------------------------------------------------------------------------- leakage
_MULT = np.uint64(0x9E3779B97F4A7C15)


def _row_hash(df: pd.DataFrame, cols: list[str], keys: tuple[str, ...] = ("query_id", "item_id")) -> np.ndarray:
    """uint64 hash per row of (*keys, *cols); numbers compared as float64
    (Feast returns an int feature as float once nulls appear), null == null."""
    h = np.zeros(len(df), dtype=np.uint64)
    for c in [*keys, *cols]:
        s = df[c]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            arr = np.asarray(s.astype("float64"), dtype=np.float64)
        else:
            arr = s.to_numpy(dtype=object)
        with np.errstate(over="ignore"):
            h = (h * _MULT) ^ pd.util.hash_array(arr, categorize=True)
    return h


FAR_FUTURE = pd.Timestamp("2262-01-01", tz="UTC")


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (no per-element Timestamp objects)."""
    return pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]").array.asi8


def feature_known_at(cfg: RelgradeConfig, joined: pd.DataFrame, view: str) -> pd.Series:
    """Per joined row: the earliest ``event_timestamp`` of a stored ``view`` row with the
    same entity key (the pair, or the query for a query view) and exactly the values
    Feast returned; NaT when the view returned nothing for the row; FAR_FUTURE when no
    stored row carries those values."""
    from relgrade.featurestore import definitions, read_offline, view_keys

    cols = [n for n, _ in definitions().VIEW_SCHEMAS[view]]
    present = joined[cols].notna().any(axis=1).to_numpy()
    known = np.full(len(joined), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    off = read_offline(cfg, view) if present.any() else None
    far = FAR_FUTURE.value
    if present.any():
        known[present] = far
    if off is not None and len(off):
        keys = view_keys(view)
        h_off = _row_hash(off, cols, keys)
        t_off = _ns(off["event_timestamp"])
        order = np.lexsort((t_off, h_off))  # by hash, then time: the first of a run is the earliest
        hs, ts = h_off[order], t_off[order]
        first = np.r_[True, hs[1:] != hs[:-1]]
        uh, umin = hs[first], ts[first]
        h = _row_hash(joined, cols, keys)[present]
        pos = np.minimum(np.searchsorted(uh, h), len(uh) - 1)
        hit = uh[pos] == h
        known[present] = np.where(hit, umin[pos], far)
    return pd.Series(pd.to_datetime(known, utc=True), index=joined.index)


# --------------------------------------------------------------------------- assembly
def _lookup(keys: pd.Series, table: pd.DataFrame, key: str, col: str) -> np.ndarray:
    idx = pd.Index(table[key].astype(str))
    pos = idx.get_indexer(keys.astype(str))
    vals = table[col].to_numpy(dtype=object)
    return np.where(pos >= 0, vals[np.maximum(pos, 0)], None)


def assemble_rows(cfg: RelgradeConfig, entities: pd.DataFrame, queries: pd.DataFrame, catalog: pd.DataFrame,
                  check_leakage: bool = True) -> tuple[pd.DataFrame, dict]:
    """Feast point-in-time join of ``entities`` with the training service, texts,
    refined levels, targets and (optionally) the known-at columns of the leakage check."""
    from relgrade.featurestore import definitions, historical_features
    from relgrade.mining.prior import refine_levels

    a, m = cfg.assemble, cfg.mining
    t = {}
    t0 = time.perf_counter()
    joined = historical_features(cfg, entities[["query_id", "item_id", "event_timestamp"]], definitions().TRAINING_SERVICE)
    t["feast_join_s"] = round(time.perf_counter() - t0, 2)
    log.info("feast point-in-time join: %d rows in %.1fs (%.0f rows/s)", len(joined), t["feast_join_s"],
             len(joined) / max(t["feast_join_s"], 1e-9))
    if len(joined) != len(entities):
        raise RuntimeError(f"Feast returned {len(joined)} rows for {len(entities)} entity rows")
    joined["split"] = entities["split"].to_numpy()
    t1 = time.perf_counter()
    if check_leakage:
        for v in VIEWS:
            joined[f"known_at_{v}"] = feature_known_at(cfg, joined, v)
    t["leakage_check_s"] = round(time.perf_counter() - t1, 2)
    t2 = time.perf_counter()
    for c in (*INT_COLUMNS, "n_attributes"):
        joined[c] = pd.to_numeric(joined[c]).round().astype("Int64")
    for c in [c for c in joined.columns if c.startswith("rank_")]:
        joined[c] = pd.to_numeric(joined[c]).round().astype("Int64")
    if a.refine_levels:
        need = ["query_id", "item_id", "category", "difficulty_level", *[c for c in joined.columns if c.startswith("rank_")]]
        ref = refine_levels(joined[need], joined[["query_id", "item_id", "grade"]], m.near_top_rank, m.high_rank,
                            m.positive_grade)
        joined["category"], joined["difficulty_level"] = ref["category"].to_numpy(), ref["difficulty_level"].to_numpy()
        joined["level_source"] = ref["level_source"].to_numpy()
    else:
        joined["level_source"] = "pattern"
    joined["difficulty_level"] = joined["difficulty_level"].astype("Int64")
    joined["query_text"] = _lookup(joined["query_id"], queries, "query_id", "text")
    joined["segment"] = _lookup(joined["query_id"], queries, "query_id", "segment")
    joined["item_title"] = _lookup(joined["item_id"], catalog, "item_id", "title")
    out = add_targets(joined, a.weight_grade, a.weight_prior, a.weight_preference, a.click_prior_impressions)
    t["targets_s"] = round(time.perf_counter() - t2, 2)
    return out, t


def assemble(cfg: RelgradeConfig, publish_gated: Callable[[pd.DataFrame], dict] | None = None,
             check_leakage: bool = True) -> dict:
    """The whole stage's logic, nothing written except through ``publish_gated`` (the
    flow passes featurestore.publish with the validation gate).

    Returns {"train": trainset frame (with known_at_* columns), "report_rows": the
    report split's rows, "cut", "snapshot", "union_path", "gated": stats, "timings"}."""
    a = cfg.assemble
    t0 = time.perf_counter()
    if "test" in a.splits:
        raise ValueError("assemble.splits must not contain the test split")
    cut = cut_instant(cfg)
    stage_of = {RETRIEVAL_PRIOR_FV: "relgrade mine", RELEVANCE_GRADE_FV: "relgrade grade",
                GATED_ENGAGEMENT_FV: "relgrade simulate && relgrade materialize",
                QUERY_ATTRIBUTES_FV: "relgrade attributes"}
    for v in VIEWS:
        if not cfg.paths.feature_source(v).exists():
            raise FileNotFoundError(f"feature view {v} has no offline table {cfg.paths.feature_source(v)}: "
                                    f"run `{stage_of[v]}` first")
    union, upath, snap = load_union(cfg)
    if cut < snap:
        raise ValueError(f"cut {cut.isoformat()} precedes the mining snapshot {snap.isoformat()}: "
                         "the retrieval prior of the union is not known at the cut")
    queries = read_parquet(cfg.paths.table("queries"))
    catalog = read_parquet(cfg.paths.table("catalog"), columns=["item_id", "title"])
    timings: dict[str, float] = {"load_s": round(time.perf_counter() - t0, 2)}
    gated = None
    if a.refresh_engagement:
        t1 = time.perf_counter()
        events = read_parquet(cfg.paths.table("events"))
        batch, gated = refresh_gated_engagement(
            events, queries, grade_lookup(cfg), cut, prior_strength=a.engagement_prior_strength, min_grade=a.gate_min_grade, min_confidence=a.gate_min_confidence)
        del events
        if publish_gated is not None:
            gated["publish"] = publish_gated(batch)
        timings["gated_engagement_s"] = round(time.perf_counter() - t1, 2)
    splits = list(dict.fromkeys([*a.splits, a.report_split]))
    ent = entity_rows(union, queries, splits, cut)
    if not (ent["split"].isin(a.splits)).any():
        raise ValueError(f"the union holds no pair of a {a.splits} query")
    log.info("assembling %d entity rows (%s) at %s", len(ent), ent["split"].value_counts().to_dict(), cut.isoformat())
    rows, t = assemble_rows(cfg, ent, queries, catalog, check_leakage)
    timings.update(t)
    train = rows[rows["split"].isin(a.splits)].reset_index(drop=True)
    report_rows = rows[rows["split"] == a.report_split].reset_index(drop=True)
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    log.info("assembled %d training rows (%d queries) and %d %s rows in %.1fs", len(train),
             train["query_id"].nunique(), len(report_rows), a.report_split, timings["total_s"])
    return {"train": train, "report_rows": report_rows, "cut": cut, "snapshot": snap, "union_path": upath,
            "gated": gated, "timings": timings, "queries": queries}


# --------------------------------------------------------------------------- outputs
def trainset_frame(train: pd.DataFrame) -> pd.DataFrame:
    """The contract columns (known_at_* check columns dropped)."""
    return train[[c for c in TRAINSET_COLUMNS if c in train.columns]].reset_index(drop=True)


def _view_digest(store, view: str) -> str:
    spec = store.get_feature_view(view).to_proto().spec.SerializeToString(deterministic=True)
    return hashlib.sha256(spec).hexdigest()[:16]


def build_manifest(cfg: RelgradeConfig, res: dict, trainset: pd.DataFrame, lists) -> dict:
    from relgrade.featurestore import definitions, get_store

    d = definitions()
    store = get_store(cfg)
    fs = store.get_feature_service(d.TRAINING_SERVICE)
    views = {}
    for v in VIEWS:
        path = cfg.paths.feature_source(v)
        import pyarrow.parquet as pq

        views[v] = {
            "definition_digest": _view_digest(store, v),
            "offline_path": str(path),
            "offline_digest": file_digest(path) if path.exists() else None,
            "offline_rows": pq.ParquetFile(path).metadata.num_rows if path.exists() else 0,
            "features": [n for n, _ in d.VIEW_SCHEMAS[v]],
        }
    teachers_dir = cfg.paths.teachers
    teacher_files = {}
    if teachers_dir.exists():
        for p in sorted(teachers_dir.rglob("meta.json"))[:50]:
            try:
                meta = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                meta = {}
            teacher_files[str(p.parent.relative_to(cfg.paths.root))] = {
                "version": meta.get("version"), "meta_digest": file_digest(p)[:16]}
    tv = trainset["teacher_version"].fillna("<none>").value_counts()
    return {
        "stage": "assemble",
        "feature_service": {"name": fs.name, "features": [f"{p.name}:{f.name}" for p in fs.feature_view_projections for f in p.features]},
        "feature_views": views,
        "teacher_versions": {str(k): int(v) for k, v in tv.items()},
        "teacher_files": teacher_files,
        "cut_ts": res["cut"].isoformat(),
        "snapshot_ts": res["snapshot"].isoformat(),
        "union": {"path": str(res["union_path"]), "digest": file_digest(res["union_path"])},
        "rows": {"trainset": int(len(trainset)), "queries": int(trainset["query_id"].nunique()),
                 "lists": int(lists.num_rows), "report_split_rows": int(len(res["report_rows"])),
                 "with_grade": int(trainset["grade"].notna().sum()),
                 "with_preference": int(trainset["gated_preference"].notna().sum()),
                 "with_impressions": int(trainset["impressions_28d"].fillna(0).gt(0).sum())},
        "splits": list(cfg.assemble.splits),
        "content_hash": frame_digest(trainset),
        "lists_hash": hashlib.sha256(json.dumps(lists.column("query_id").to_pylist()).encode()).hexdigest()[:16],
        "config": cfg.assemble.model_dump(mode="json"),
        "gated_engagement": {k: v for k, v in (res["gated"] or {}).items() if k != "publish"},
        "timings": res["timings"],
    }
