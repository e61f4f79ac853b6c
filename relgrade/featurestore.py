"""Feast access for one data root: store construction, offline upserts, materialization,
point-in-time retrieval.

Write path for a feature batch (see :func:`publish`): conform to the view's schema ->
validate with the view's expectation suite (raises before anything lands) -> merge into
the view's offline Parquet (atomic rename, previous file kept as a backup) ->
materialize the batch's time range online. If materialization fails the previous
offline file is restored and re-materialized, so a rejected or failed batch never
half-lands.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from relgrade.config import FEATURE_REPO_DIR, RelgradeConfig
from relgrade.io import normalize_timestamps, write_parquet_atomic

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def definitions() -> ModuleType:
    """feature_repo/definitions.py, imported by path (the Feast repo is not a package;
    it imports only Feast)."""
    path = FEATURE_REPO_DIR / "definitions.py"
    spec = importlib.util.spec_from_file_location("relgrade_feature_repo_definitions", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def view_names() -> list[str]:
    return list(definitions().VIEW_SCHEMAS)


def view_keys(view: str) -> tuple[str, ...]:
    """The view's join keys: ("query_id", "item_id") for a pair view, ("query_id",) for
    a query view."""
    return tuple(definitions().VIEW_KEYS[view])


def view_columns(view: str) -> list[str]:
    d = definitions()
    return [*view_keys(view), d.TIMESTAMP_FIELD, *(n for n, _ in d.VIEW_SCHEMAS[view])]


def write_store_yaml(cfg: RelgradeConfig) -> Path:
    """<data_root>/feast/feature_store.yaml with absolute paths for this data root."""
    p = cfg.paths
    p.feast.mkdir(parents=True, exist_ok=True)
    doc = {
        "project": cfg.feast.project,
        "provider": "local",
        "registry": str(p.feast / "registry.db"),
        "offline_store": ({"type": "spark", "spark_conf": dict(cfg.feast.spark_conf)}
                          if cfg.feast.offline_store == "spark" else {"type": "duckdb"}),
        "online_store": {"type": "sqlite", "path": str(p.feast / "online_store.db")},
        "entity_key_serialization_version": 3,
        "auth": {"type": "no_auth"},
    }
    out = p.feast / "feature_store.yaml"
    text = yaml.safe_dump(doc, sort_keys=False)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out


def get_store(cfg: RelgradeConfig):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(FEATURE_REPO_DIR), fs_yaml_file=write_store_yaml(cfg))


def source_for(cfg: RelgradeConfig, view: str, name: str):
    """The offline source of ``view`` for this data root: a FileSource over its Parquet
    file for the DuckDB store, a SparkSource over the same file for the Spark store."""
    d = definitions()
    path = str(cfg.paths.feature_source(view))
    if cfg.feast.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field=d.TIMESTAMP_FIELD)
    from feast import FileSource

    return FileSource(name=name, timestamp_field=d.TIMESTAMP_FIELD, path=path)


def objects_for(cfg: RelgradeConfig) -> dict[str, object]:
    """The repository's Feast objects for this data root: every view's source under the
    root's ``features/`` (:func:`source_for`), its ``online`` flag from ``feast.online_views``, its TTL from
    ``feast.view_ttl_days`` (else ``feast.ttl_days``); every training service version over
    its views, the serving service over the online ones."""
    from feast import FeatureService, FeatureView

    d = definitions()
    out: dict[str, object] = {"query": d.query, "item": d.item}
    entity = {"query_id": d.query, "item_id": d.item}
    views = {}
    for name in d.VIEW_SCHEMAS:
        fv = getattr(d, name)
        src = source_for(cfg, name, fv.batch_source.name)
        days = cfg.feast.view_ttl_days.get(name, cfg.feast.ttl_days)
        keys = view_keys(name)
        views[name] = FeatureView(name=name, entities=[entity[k] for k in keys], ttl=timedelta(days=days),
                                  schema=d._fields(d.VIEW_SCHEMAS[name], keys),
                                  source=src, online=name in cfg.feast.online_views, description=fv.description,
                                  tags=dict(fv.tags))
        out[src.name] = src
        out[name] = views[name]
    for svc, names in d.TRAINING_SERVICES.items():
        out[svc] = FeatureService(name=svc, features=[views[n] for n in names],
                                  description=getattr(d, svc).description)
    online = [v for n, v in views.items() if n in cfg.feast.online_views]
    if online:
        out[d.SERVING_SERVICE] = FeatureService(name=d.SERVING_SERVICE, features=online,
                                                description=d.serving_v1.description)
    return out


def apply_definitions(cfg: RelgradeConfig):
    """Register entities, views and the services for this data root (idempotent)."""
    store = get_store(cfg)
    store.apply(list(objects_for(cfg).values()))
    return store


# --------------------------------------------------------------------------- schema
_PA_TYPES = {"Float64": pa.float64(), "Int64": pa.int64(), "String": pa.string()}


def view_arrow_schema(view: str) -> pa.Schema:
    d = definitions()
    fields = [pa.field(k, pa.string()) for k in view_keys(view)]
    fields.append(pa.field(d.TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC")))
    for name, ftype in d.VIEW_SCHEMAS[view]:
        fields.append(pa.field(name, _PA_TYPES[str(ftype)]))
    return pa.schema(fields)


def conform_features(view: str, df: pd.DataFrame) -> pd.DataFrame:
    """Exactly the view's columns, in order, with the view's types. Missing columns are
    an error (a producer must say "null" explicitly, not forget a column)."""
    from relgrade.contract import ContractError

    if view not in definitions().VIEW_SCHEMAS:
        raise ContractError(f"unknown feature view {view!r}; known: {view_names()}")
    schema = view_arrow_schema(view)
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise ContractError(f"{view}: missing column(s) {missing}")
    if len(df) == 0:
        raise ContractError(f"{view}: empty batch (0 rows)")
    out = normalize_timestamps(df[[f.name for f in schema]].reset_index(drop=True))
    try:
        table = pa.Table.from_pandas(out, schema=schema, preserve_index=False, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ContractError(f"{view}: values do not fit the view schema: {exc}") from exc
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


# --------------------------------------------------------------------------- offline
def read_offline(cfg: RelgradeConfig, view: str) -> pd.DataFrame | None:
    path = cfg.paths.feature_source(view)
    if not path.exists():
        return None
    return pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def merge_offline(existing: pd.DataFrame | None, batch: pd.DataFrame, snapshot: bool = True,
                  keys: tuple[str, ...] = ("query_id", "item_id")) -> pd.DataFrame:
    """The offline table after publishing ``batch``.

    ``snapshot`` (every relgrade publisher): the batch is the complete set of rows for
    each event_timestamp it carries, so every existing row at those instants is replaced.
    A pair an earlier run wrote at the same instant but the new batch lacks (a changed
    search log, a smaller union) is gone, rather than surviving with values derived from
    the earlier run's inputs. Otherwise only rows with the batch's (``keys``,
    event_timestamp) are replaced. Either way re-publishing the same batch is a
    no-op, never a duplicate."""
    if existing is None or existing.empty:
        merged = batch
    elif snapshot:
        stamps = pd.Index(batch["event_timestamp"].unique())
        keep = ~existing["event_timestamp"].isin(stamps)
        merged = pd.concat([existing[keep], batch], ignore_index=True)
    else:
        key = [*keys, "event_timestamp"]
        idx = pd.MultiIndex.from_frame(existing[key])
        keep = ~idx.isin(pd.MultiIndex.from_frame(batch[key]))
        merged = pd.concat([existing[keep], batch], ignore_index=True)
    return merged.sort_values(["event_timestamp", *keys], kind="stable").reset_index(drop=True)


def materialize(cfg: RelgradeConfig, views: list[str], start: datetime, end: datetime):
    """Feast's own materialization of [start, end] from the offline store (the CLI's
    ``feast materialize``); used for repairs. Publishing writes online with
    :func:`write_online`, which bounds memory."""
    store = get_store(cfg)
    store.materialize(start_date=start, end_date=end, feature_views=views)
    return store


def write_online(cfg: RelgradeConfig, view: str, batch: pd.DataFrame, store=None) -> int:
    """Write the latest row per entity key of ``batch`` to the online store, in
    chunks of ``feast.online_write_chunk_rows`` so memory stays bounded at any batch
    size (Feast's materialize loads the whole range at once: 18 GB for 2M rows).
    Views not in ``feast.online_views`` are offline-only and skipped."""
    if view not in cfg.feast.online_views:
        return 0
    store = store or get_store(cfg)
    latest = (batch.sort_values("event_timestamp", kind="stable")
              .drop_duplicates(list(view_keys(view)), keep="last").reset_index(drop=True))
    step = cfg.feast.online_write_chunk_rows
    from relgrade.util import Progress

    progress = Progress(f"online {view}", len(latest), 10.0, log, unit="rows")
    for lo in range(0, len(latest), step):
        chunk = _as_float_for_feast(latest.iloc[lo:lo + step])
        store.write_to_online_store(view, chunk)
        progress.update(min(lo + step, len(latest)))
    # record the interval as Feast's own materialize does, so that
    # `feast materialize-incremental` continues from here instead of reloading now - TTL
    start = batch["event_timestamp"].min().to_pydatetime()
    end = batch["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    store.registry.apply_materialization(store.get_feature_view(view), store.project, start, end, commit=True)
    return len(latest)


def _as_float_for_feast(df: pd.DataFrame) -> pd.DataFrame:
    """Nullable Int64 -> float64 with NaN (Feast's proto conversion rejects pd.NA)."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.Int64Dtype):
            out[c] = out[c].astype("float64")
    return out


def publish(
    cfg: RelgradeConfig,
    view: str,
    batch: pd.DataFrame,
    validate: Callable[[pd.DataFrame], object] | None,
    keep_backup: bool = False,
) -> dict:
    """Validate, write offline and materialize online one feature batch, as one unit.

    With ``keep_backup`` the previous offline table stays beside the new one (the
    result's ``backup``) until :func:`commit_publish` drops it or
    :func:`rollback_publish` puts it back: a flow publishing several views inside one
    Prefect transaction can undo the ones that landed when a later one fails."""
    batch = conform_features(view, batch)
    if validate is not None:
        validate(batch)  # raises ValidationFailed: nothing has been written yet
    path = cfg.paths.feature_source(view)
    backup = path.with_suffix(".parquet.bak")
    had_previous = path.exists()
    if had_previous:
        shutil.copy2(path, backup)
    merged = merge_offline(read_offline(cfg, view), batch, keys=view_keys(view))
    write_parquet_atomic(pa.Table.from_pandas(merged, schema=view_arrow_schema(view), preserve_index=False), path)
    start = batch["event_timestamp"].min().to_pydatetime() - timedelta(seconds=1)
    end = batch["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    result = {"view": view, "rows": len(batch), "offline_rows": len(merged), "path": str(path),
              "materialized": [start.isoformat(), end.isoformat()], "had_previous": had_previous,
              "backup": str(backup) if had_previous else None}
    try:
        store = apply_definitions(cfg)
        result["online_rows"] = write_online(cfg, view, batch, store)
    except BaseException:
        log.error("online write of %s failed: restoring the previous offline table", view)
        rollback_publish(result, cfg)
        raise
    if not keep_backup:
        commit_publish(result)
        result["backup"] = None
    return result


def commit_publish(result: dict) -> None:
    """Drop the backup :func:`publish` kept."""
    if result.get("backup"):
        Path(result["backup"]).unlink(missing_ok=True)


def rollback_publish(result: dict, cfg: RelgradeConfig | None = None) -> None:
    """Undo :func:`publish`: the previous offline table back in place (or none, if there
    was none), and its rows re-materialized online for the batch's time range."""
    path = Path(result["path"])
    if result.get("had_previous") and result.get("backup") and Path(result["backup"]).exists():
        shutil.move(result["backup"], path)
    elif not result.get("had_previous"):
        path.unlink(missing_ok=True)
    if cfg is not None and result["view"] in cfg.feast.online_views and path.exists():
        try:
            start, end = (datetime.fromisoformat(t) for t in result["materialized"])
            materialize(cfg, [result["view"]], start, end)
        except Exception:  # pragma: no cover - best effort restore of online rows
            log.exception("re-materializing the previous %s rows failed", result["view"])


# --------------------------------------------------------------------------- retrieval
def historical_features(
    cfg: RelgradeConfig,
    entity_df: pd.DataFrame,
    features: list[str] | str | None = None,
) -> pd.DataFrame:
    """Point-in-time join through Feast. ``entity_df`` needs query_id, item_id and
    event_timestamp; ``features`` is a list of "view:feature" refs or a feature service
    name (default: the training service). Rows come back in ``entity_df``'s order."""
    store = get_store(cfg)
    need = {"query_id", "item_id", "event_timestamp"}
    if not need <= set(entity_df.columns):
        raise ValueError(f"entity_df needs columns {sorted(need)}; got {list(entity_df.columns)}")
    ent = normalize_timestamps(entity_df.reset_index(drop=True)).copy()
    for k in ("query_id", "item_id"):  # plain Python strings (Spark cannot type numpy's)
        ent[k] = pd.Series([str(x) for x in ent[k]], dtype=object, index=ent.index)
    ent["_row"] = range(len(ent))
    feats = features or definitions().TRAINING_SERVICE
    if isinstance(feats, str):
        feats = store.get_feature_service(feats)
        views = [p.name for p in feats.feature_view_projections]
    else:
        views = sorted({ref.split(":", 1)[0] for ref in feats})
    empty = [v for v in views if not cfg.paths.feature_source(v).exists()]
    if empty:
        raise FileNotFoundError(
            f"feature view(s) {empty} hold no data under {cfg.paths.features}: run the stage that "
            "publishes them first (docs/architecture.md)"
        )
    job = store.get_historical_features(entity_df=ent, features=feats, full_feature_names=False)
    out = job.to_df()
    # DuckDB does not keep the entity frame's order
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def online_features(cfg: RelgradeConfig, pairs: pd.DataFrame, features: list[str] | str | None = None) -> pd.DataFrame:
    store = get_store(cfg)
    feats = features or definitions().SERVING_SERVICE
    if isinstance(feats, str):
        feats = store.get_feature_service(feats)
    rows = pairs[["query_id", "item_id"]].to_dict("records")
    return store.get_online_features(features=feats, entity_rows=rows).to_df()

