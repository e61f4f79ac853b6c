"""The foundation end to end on a slice of the real Home Depot data, with the real
components: Prefect flows (ingest, simulate, materialize), Great Expectations gates,
a Feast repo (DuckDB offline, SQLite online), point-in-time and online retrieval.
Then every bad-input case: the flow stops with a clear message, nothing lands, and a
rerun after the input is fixed succeeds."""
from __future__ import annotations

import io
import zipfile
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from relgrade.config import REPO_ROOT, load_config
from relgrade.contract import ContractError

pytestmark = pytest.mark.integration

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
VIEW = "gated_engagement_fv"


def _overrides(root, **dataset):
    return {
        "data_root": str(root),
        "dataset": {"max_queries": 120, **dataset},
        "simulation": {"days": 10, "searches_per_day": 200},
    }


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """ingest -> simulate -> materialize through the flows, once for the module."""
    from flows.ingest import ingest_flow
    from flows.materialize import materialize_flow
    from flows.simulate import simulate_flow

    root = tmp_path_factory.mktemp("foundation")
    ov = _overrides(root)
    out = {
        "ingest": ingest_flow("quick", ov),
        "simulate": simulate_flow("quick", ov),
        "materialize": materialize_flow("quick", ov),
    }
    return root, ov, out


def _cfg(ov):
    return load_config("quick", overrides=ov)


def test_flows_write_contract_and_materialize(store_root):
    root, ov, out = store_root
    cfg = _cfg(ov)
    assert out["ingest"]["rows"]["queries"] == 120
    for t in ("catalog", "queries", "judgments", "events"):
        assert cfg.paths.table(t).exists(), t
    assert out["simulate"]["events"] > 1000
    published = {r["view"]: r for r in out["materialize"]}
    assert published[VIEW]["rows"] == out["simulate"]["feature_rows"]
    assert (cfg.paths.data_docs / "index.html").exists()
    pages = (cfg.paths.validation_pages / "index.html").read_text()
    assert VIEW in pages and "passed" in pages
    assert cfg.paths.feature_source(VIEW).exists()


def test_historical_and_online_features(store_root):
    from relgrade import featurestore as fs

    root, ov, _ = store_root
    cfg = _cfg(ov)
    feats = pd.read_parquet(cfg.paths.feature_source(VIEW))
    sample = feats.sort_values(["query_id", "item_id", "event_timestamp"]).groupby(["query_id", "item_id"]).tail(1).head(50)
    ent = sample[["query_id", "item_id"]].copy()
    ent["event_timestamp"] = sample["event_timestamp"] + pd.Timedelta(hours=1)
    hist = fs.historical_features(cfg, ent, [f"{VIEW}:impressions_28d", f"{VIEW}:clicks_28d"])
    assert len(hist) == len(ent)
    assert hist["impressions_28d"].tolist() == sample["impressions_28d"].astype(float).tolist()
    online = fs.online_features(cfg, sample, [f"{VIEW}:impressions_28d"])
    assert len(online) == len(sample)
    # the online store holds the latest row per pair
    assert online["impressions_28d"].notna().all()


def test_point_in_time_never_joins_a_later_row(store_root):
    """A feature row stamped after the entity row's time is not joined; the latest
    row at or before it is, while it is within the view's TTL (one day for the daily
    engagement snapshots); beyond it the lookup is null."""
    from relgrade import featurestore as fs
    from validation.gate import gate_for

    root, ov, _ = store_root
    cfg = _cfg(ov)
    feats = pd.read_parquet(cfg.paths.feature_source(VIEW))
    q, i = feats.iloc[0][["query_id", "item_id"]]
    t_early = datetime(2026, 6, 1, tzinfo=timezone.utc)
    t_late = t_early + timedelta(hours=20)
    batch = feats[(feats.query_id == q) & (feats.item_id == i)].head(1).copy()
    early = batch.assign(event_timestamp=t_early, impressions_28d=111, impressions_7d=1)
    late = batch.assign(event_timestamp=t_late, impressions_28d=999, impressions_7d=1)
    fs.publish(cfg, VIEW, pd.concat([early, late]), gate_for(cfg, VIEW))
    ent = pd.DataFrame({
        "query_id": [q] * 5,
        "item_id": [i] * 5,
        "event_timestamp": [t_early - timedelta(seconds=1), t_early, t_late - timedelta(microseconds=1), t_late,
                            t_late + timedelta(days=1, seconds=1)],
    })
    assert cfg.feast.view_ttl_days[VIEW] == 1
    got = fs.historical_features(cfg, ent, [f"{VIEW}:impressions_28d"])["impressions_28d"].tolist()
    assert pd.isna(got[0])
    assert got[1:4] == [111, 111, 999]
    assert pd.isna(got[4])  # the 999 row is older than the TTL there


def test_a_batch_replaces_every_row_at_its_instants(store_root):
    """A batch is the complete snapshot of the instants it carries: a pair an earlier
    batch wrote at the same instant but the new one lacks is gone, not left with values
    derived from the earlier run's inputs (a changed log, a re-graded union); rows at other
    instants stay."""
    from relgrade import featurestore as fs
    from validation.gate import gate_for

    root, ov, _ = store_root
    cfg = _cfg(ov)
    feats = pd.read_parquet(cfg.paths.feature_source(VIEW))
    pairs = feats.drop_duplicates(["query_id", "item_id"]).head(2)
    t = datetime(2026, 5, 1, tzinfo=timezone.utc)
    first = pairs.assign(event_timestamp=t, impressions_28d=[5, 6], impressions_7d=1)
    fs.publish(cfg, VIEW, first, gate_for(cfg, VIEW))
    before = len(fs.read_offline(cfg, VIEW))
    fs.publish(cfg, VIEW, first.head(1).assign(impressions_28d=7), gate_for(cfg, VIEW))
    after = fs.read_offline(cfg, VIEW)
    assert len(after) == before - 1
    ent = pairs[["query_id", "item_id"]].assign(event_timestamp=t)
    got = fs.historical_features(cfg, ent, [f"{VIEW}:impressions_28d"])["impressions_28d"].tolist()
    assert got[0] == 7 and pd.isna(got[1])
    fs.publish(cfg, VIEW, first.head(1).assign(impressions_28d=7), gate_for(cfg, VIEW))  # the same batch again: no-op
    assert len(fs.read_offline(cfg, VIEW)) == len(after)


# --------------------------------------------------------------------------- bad input
def _hd_rows(n=400):
    with zipfile.ZipFile(HD_ZIP) as zf:
        raw = zf.read(zf.namelist()[0]).decode("latin-1")
    return pd.read_csv(io.StringIO(raw), dtype=str).head(n)


def _write_csv(df: pd.DataFrame, path, encoding="utf-8"):
    path.write_bytes(df.to_csv(index=False).encode(encoding))
    return path


def _assert_nothing_landed(cfg):
    for t in ("catalog", "queries", "judgments"):
        assert not cfg.paths.table(t).exists(), f"{t} landed despite bad input"


def _ingest(ov):
    from flows.ingest import ingest_flow

    return ingest_flow("quick", ov)



@pytest.mark.parametrize(
    "case",
    ["null_item_id", "rating_7", "missing_column", "non_utf8_line", "empty_file"],
)
def test_bad_dataset_stops_ingest_then_fixed_rerun_succeeds(case, tmp_path):
    from validation.gate import ValidationFailed

    rows = _hd_rows()
    bad = rows.copy()
    encoding = "latin-1"
    if case == "null_item_id":
        bad.loc[3, "product_uid"] = None
        expect = (ValidationFailed, "item_id")
    elif case == "rating_7":
        bad.loc[5, "relevance"] = "7"
        expect = (ContractError, "relevance")
    elif case == "missing_column":
        bad = bad.drop(columns=["relevance"])
        expect = (ContractError, "missing column")
    elif case == "non_utf8_line":
        encoding = "utf-8"
        bad.loc[7, "product_title"] = "Caf\u00e9 table"
        expect = (ContractError, "not valid utf-8")
    else:
        bad = bad.head(0)
        expect = (ContractError, "empty")
    src = tmp_path / "hd.csv"
    if case == "non_utf8_line":
        _write_csv(bad, src, encoding="latin-1")  # a latin-1 byte in a file declared UTF-8
    elif case == "empty_file":
        src.write_bytes(b"")
    else:
        _write_csv(bad, src)
    # the whole 400-row file (no query limit, so the bad row cannot be sliced away)
    ov = _overrides(tmp_path / "root", path=str(src), encoding=encoding, max_queries=None)
    cfg = _cfg(ov)
    with pytest.raises(expect[0]) as err:
        _ingest(ov)
    assert expect[1] in str(err.value).lower() or expect[1] in str(err.value)
    _assert_nothing_landed(cfg)
    # fix the input, rerun: it lands
    fixed = rows.copy()
    fixed.loc[7, "product_title"] = "Cafe table"
    _write_csv(fixed, src, encoding="utf-8")
    out = _ingest(ov)
    assert out["rows"]["judgments"] > 0 and cfg.paths.table("judgments").exists()


@pytest.mark.parametrize("case", ["null_item_id", "duplicate_key_rows", "future_timestamp", "missing_column", "grade_7"])
def test_bad_feature_batch_never_materializes(case, store_root):
    """A staged feature batch that fails its gate lands neither offline nor online;
    the fixed batch then materializes."""
    from flows.materialize import materialize_flow
    from relgrade import featurestore as fs
    from validation.gate import ValidationFailed

    root, ov, _ = store_root
    cfg = _cfg(ov)
    view = "relevance_grade_fv" if case == "grade_7" else VIEW
    if view == VIEW:
        good = pd.read_parquet(cfg.paths.feature_source(VIEW)).drop_duplicates(["query_id", "item_id"]).head(20).copy()
        good["event_timestamp"] = datetime(2026, 6, 2, tzinfo=timezone.utc)
    else:
        feats = pd.read_parquet(cfg.paths.feature_source(VIEW)).drop_duplicates(["query_id", "item_id"]).head(20)
        good = feats[["query_id", "item_id"]].assign(
            event_timestamp=datetime(2026, 6, 2, tzinfo=timezone.utc), grade=2, expected_grade=2.1, confidence=0.7,
            p_grade_0=0.05, p_grade_1=0.15, p_grade_2=0.5, p_grade_3=0.3, deciding_stage=1, teacher_version="test",
        )
    bad = good.copy()
    if case == "null_item_id":
        bad.loc[bad.index[0], "item_id"] = None
    elif case == "duplicate_key_rows":
        bad = pd.concat([bad, bad.head(2)], ignore_index=True)
    elif case == "future_timestamp":
        bad.loc[bad.index[0], "event_timestamp"] = datetime.now(timezone.utc) + timedelta(days=30)
    elif case == "missing_column":
        bad = bad.drop(columns=["impressions_7d"])
    else:
        bad.loc[bad.index[0], "grade"] = 7
    before = fs.read_offline(cfg, view)
    staged = cfg.paths.staging(view)
    from relgrade.io import write_parquet_atomic

    write_parquet_atomic(bad, staged)
    with pytest.raises((ValidationFailed, ContractError)) as err:
        materialize_flow("quick", ov, views=[view])
    msg = str(err.value)
    assert ("offending" in msg or "missing" in msg) and "Nothing was written" in msg or isinstance(err.value, ContractError)
    after = fs.read_offline(cfg, view)
    if before is None:
        assert after is None
    else:
        pd.testing.assert_frame_equal(before, after)
    ent = good[["query_id", "item_id"]].head(3).assign(event_timestamp=datetime(2026, 6, 3, tzinfo=timezone.utc))
    col = "impressions_28d" if view == VIEW else "grade"
    if before is None:
        with pytest.raises(FileNotFoundError, match="hold no data"):
            fs.historical_features(cfg, ent, [f"{view}:{col}"])
    elif view != VIEW:
        assert fs.historical_features(cfg, ent, [f"{view}:{col}"])[col].isna().all()
    # fixed input: rerun lands it
    write_parquet_atomic(good, staged)
    out = materialize_flow("quick", ov, views=[view])
    assert out[0]["rows"] == len(good)
    hist = fs.historical_features(cfg, ent, [f"{view}:{col}"])
    assert hist[col].notna().all()
