"""Feast's Spark offline store (``feast.offline_store: spark``, a local[2] Spark) against
the default DuckDB store: the same feature tables, the same entity rows, the same
point-in-time training join through the training feature service, row for row,
including nulls, TTL edges, a query-keyed view, and feature rows stamped after the
entity row's time (which neither store may return)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

pytestmark = pytest.mark.integration



def _require_spark() -> None:
    """scripts/test.sh installs both; a bare ``pytest`` without them fails here, clearly."""
    try:
        import pyspark  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.fail('the Spark offline store needs the spark extra: RELGRADE_EXTRAS=test,spark bash scripts/setup.sh',
                    pytrace=False)
    if shutil.which("java") is None:  # pragma: no cover
        pytest.fail("the Spark offline store needs Java 17 (scripts/test.sh installs it with apt-get)", pytrace=False)

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _cfg(root, store: str):
    from relgrade.config import load_config

    return load_config("quick", overrides={"data_root": str(root), "feast": {
        "offline_store": store, "online_views": [],
        "spark_conf": {"spark.master": "local[2]", "spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
                       "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "1g"}}})


def _tables(seed: int = 7) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Every view's offline table and the entity rows, drawn so that each edge occurs:
    rows before, at and after the entity time; engagement rows just inside and just
    outside its one-day TTL; null values; queries with no attribute row."""
    from relgrade import featurestore as fs

    rng = np.random.default_rng(seed)
    queries = [f"q{i}" for i in range(12)]
    items = [f"i{i}" for i in range(25)]
    pairs = pd.DataFrame([(q, str(i)) for q in queries for i in rng.choice(items, 6, replace=False)],
                         columns=["query_id", "item_id"])
    hours = lambda n: pd.to_timedelta(rng.integers(0, 24 * 6, n), unit="h")  # noqa: E731
    out = {}
    for view in fs.view_names():
        keys = list(fs.view_keys(view))
        base = pairs[keys].drop_duplicates().reset_index(drop=True)
        frames = []
        for k in range(3):  # three versions of each key at random instants
            f = base.sample(frac=0.8, random_state=seed + k).reset_index(drop=True)
            f["event_timestamp"] = (T0 + hours(len(f))).astype("datetime64[us, UTC]")
            frames.append(f)
        df = pd.concat(frames, ignore_index=True).drop_duplicates([*keys, "event_timestamp"])
        for name, t in fs.definitions().VIEW_SCHEMAS[view]:
            n = len(df)
            kind = str(t)
            if kind == "Float64":
                v = pd.Series(rng.random(n).round(6), dtype="float64")
            elif kind == "Int64":
                v = pd.Series(rng.integers(1, 5, n), dtype="Int64")
            else:
                v = pd.Series([f"{name}-{x}" for x in rng.integers(0, 9, n)], dtype=object)
            v[rng.random(n) < 0.15] = None  # nulls in every column
            df[name] = v.to_numpy()
        out[view] = df.reset_index(drop=True)
    # entity rows: every pair at random instants, plus exact edges of one engagement row
    ent = pairs.sample(n=60, replace=True, random_state=seed).reset_index(drop=True)
    ent["event_timestamp"] = (T0 + hours(len(ent))).astype("datetime64[us, UTC]")
    e = out["gated_engagement_fv"].iloc[0]
    edges = pd.DataFrame({"query_id": e["query_id"], "item_id": e["item_id"], "event_timestamp": [
        e["event_timestamp"],  # at the row's instant: the row
        e["event_timestamp"] - pd.Timedelta(microseconds=1),  # just before: not yet known
        e["event_timestamp"] + pd.Timedelta(days=1),  # the TTL's edge
        e["event_timestamp"] + pd.Timedelta(days=1, microseconds=1)]})  # beyond it
    ent = pd.concat([ent, edges, pd.DataFrame({"query_id": ["q-none"], "item_id": ["i-none"],
                                               "event_timestamp": [T0 + pd.Timedelta(days=2)]})], ignore_index=True)
    return out, ent


def _write(cfg, tables: dict[str, pd.DataFrame]) -> None:
    from relgrade import featurestore as fs
    from relgrade.io import write_parquet_atomic

    cfg.paths.features.mkdir(parents=True, exist_ok=True)
    for view, df in tables.items():
        schema = fs.view_arrow_schema(view)
        write_parquet_atomic(pa.Table.from_pandas(fs.conform_features(view, df), schema=schema, preserve_index=False),
                             cfg.paths.feature_source(view))
    fs.apply_definitions(cfg)


def _normal(df: pd.DataFrame) -> pd.DataFrame:
    """Comparable values: numbers as float64 (Feast returns an int feature as float once
    nulls appear), nulls as None, timestamps in UTC."""
    out = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s):
            out[c] = pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")
        elif pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out[c] = pd.to_numeric(s).astype("float64")
        else:
            out[c] = s.astype(object).where(s.notna(), None)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    from relgrade import featurestore as fs

    _require_spark()
    tables, ent = _tables()
    res = {}
    for store in ("duckdb", "spark"):
        cfg = _cfg(tmp_path_factory.mktemp(store), store)
        _write(cfg, tables)
        res[store] = fs.historical_features(cfg, ent, fs.definitions().TRAINING_SERVICE)
        res[f"{store}_cfg"] = cfg
    res["tables"], res["entities"] = tables, ent
    return res


def test_the_spark_store_writes_spark_sources_and_its_yaml(joined):
    import yaml

    from relgrade import featurestore as fs

    cfg = joined["spark_cfg"]
    doc = yaml.safe_load((cfg.paths.feast / "feature_store.yaml").read_text())
    assert doc["offline_store"]["type"] == "spark" and doc["offline_store"]["spark_conf"]["spark.master"] == "local[2]"
    store = fs.get_store(cfg)
    for view in fs.view_names():
        src = store.get_feature_view(view).batch_source
        assert type(src).__name__ == "SparkSource" and src.path == str(cfg.paths.feature_source(view))
    duck = yaml.safe_load((joined["duckdb_cfg"].paths.feast / "feature_store.yaml").read_text())
    assert duck["offline_store"] == {"type": "duckdb"}


def test_spark_point_in_time_join_equals_duckdb_row_for_row(joined):
    a, b = _normal(joined["duckdb"]), _normal(joined["spark"])
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == len(joined["entities"])
    pd.testing.assert_frame_equal(a, b[a.columns], check_exact=True)
    # the join is not vacuous: values, nulls and misses all occur
    feats = [c for c in a.columns if c not in ("query_id", "item_id", "event_timestamp")]
    assert a[feats].notna().any().all() and a[feats].isna().any().all()


def test_both_stores_return_only_rows_stamped_at_or_before_the_entity_time_within_ttl(joined):
    """Recomputed from the tables by hand: the latest row at or before the entity time and
    within the view's TTL, for the engagement view (one-day TTL, pair key) and the query
    view (query key)."""
    ent, tables = joined["entities"], joined["tables"]
    cfg = joined["duckdb_cfg"]
    for view, col, keys in (("gated_engagement_fv", "gated_preference", ["query_id", "item_id"]),
                            ("query_attributes_fv", "brand", ["query_id"])):
        ttl = pd.Timedelta(days=cfg.feast.view_ttl_days.get(view, cfg.feast.ttl_days))
        t = tables[view]
        want = []
        for _, r in ent.iterrows():
            m = (t[keys] == r[keys].to_numpy()).all(axis=1)
            m &= (t["event_timestamp"] <= r["event_timestamp"]) & (t["event_timestamp"] >= r["event_timestamp"] - ttl)
            hit = t[m].sort_values("event_timestamp")
            want.append(hit[col].iloc[-1] if len(hit) else None)
        for store in ("duckdb", "spark"):
            got = joined[store][col].astype(object).where(joined[store][col].notna(), None).tolist()
            want_n = [None if (w is None or (isinstance(w, float) and np.isnan(w))) else w for w in want]
            assert got == want_n, (store, view)
