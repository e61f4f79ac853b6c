"""The mine flow end to end through Prefect, Great Expectations and Feast on a tiny data
root: the union and retrieval_prior_fv land together, a rerun is served from cache, a
bad external file writes nothing."""
from __future__ import annotations

import pandas as pd
import pytest

from relgrade.config import REPO_ROOT
from relgrade.contract import ContractError

HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
SNAP = pd.Timestamp("2026-07-15T00:00:00Z")


# --------------------------------------------------------------------------- flow
@pytest.mark.integration
def test_mine_flow_publishes_retrieval_prior(tmp_path, monkeypatch):
    """ingest -> simulate -> mine on a tiny data root; then point-in-time retrieval."""
    import flows.runtime
    from flows.runtime import get_config

    # cache keys include a digest of the source tree; other work edits the tree while
    # this test runs, so hold the code version still for its duration
    monkeypatch.setattr(flows.runtime, "_code_version", lambda: "test-fixed")

    overrides = {"data_root": str(tmp_path), "dataset": {"max_queries": 60},
                 "simulation": {"days": 7, "searches_per_day": 200}, "mining": {"k": 20}}
    cfg = get_config("quick", overrides)  # sets the Prefect environment before prefect is imported
    from flows.ingest import ingest_flow
    from flows.mine import mine_flow
    from flows.simulate import simulate_flow
    from relgrade.featurestore import historical_features
    from relgrade.io import read_parquet
    from relgrade.mining.stage import default_snapshot

    ingest_flow("quick", overrides)
    simulate_flow("quick", overrides)
    m = mine_flow("quick", overrides)
    snap = default_snapshot(cfg)
    assert m["snapshot_ts"] == snap.isoformat()
    assert set(m["channels"]) == {"lexical", "dense", "behavioral"}
    union = read_parquet(cfg.paths.union(snap))
    assert len(union) == m["union_rows"] > 0
    assert (cfg.paths.reports / "mining" / "report.html").exists()
    rep = m["report"]["union_vs_best_single"]
    assert rep["union_beats_every_channel"] is True
    html_text = (cfg.paths.reports / "mining" / "report.html").read_text()
    assert "data:image/png;base64," in html_text

    # cached: a rerun skips the channels (their files are not rewritten) and gives the same result
    mtimes = {c: cfg.paths.channel(snap, c).stat().st_mtime_ns for c in m["channels"]}
    again = mine_flow("quick", overrides)
    assert again["digests"] == m["digests"]
    assert {c: cfg.paths.channel(snap, c).stat().st_mtime_ns for c in m["channels"]} == mtimes

    # point-in-time: rows at/after the snapshot see the prior, a time before sees nothing
    sample = union.groupby("agreement", group_keys=False).head(3).reset_index(drop=True)
    ent = pd.concat([
        sample[["query_id", "item_id"]].assign(event_timestamp=snap + pd.Timedelta(hours=1)),
        sample[["query_id", "item_id"]].assign(event_timestamp=snap - pd.Timedelta(days=1)),
    ], ignore_index=True)
    feats = [f"retrieval_prior_fv:{c}" for c in ("retrieval_prior", "rank_lexical", "rank_dense",
                                                 "rank_behavioral", "agreement", "channel_pattern")]
    out = historical_features(cfg, ent, feats)
    n = len(sample)
    after, before = out.iloc[:n].reset_index(drop=True), out.iloc[n:].reset_index(drop=True)
    assert after["retrieval_prior"].to_numpy() == pytest.approx(sample["retrieval_prior"].to_numpy())
    assert after["agreement"].astype(int).tolist() == sample["agreement"].astype(int).tolist()
    for c in ("rank_lexical", "rank_dense", "rank_behavioral"):
        got = pd.to_numeric(after[c]).astype("Float64")
        exp = sample[c].astype("Float64")
        assert got.isna().tolist() == exp.isna().tolist()
        assert got.dropna().tolist() == exp.dropna().tolist()
    assert before[["retrieval_prior", "agreement", "channel_pattern"]].isna().all().all()


@pytest.mark.integration
def test_mine_flow_rejects_bad_external_file_and_writes_nothing(tmp_path):
    from flows.runtime import get_config

    bad = tmp_path / "ext.parquet"
    pd.DataFrame({"query_id": ["q1"], "item_id": ["1"], "rank": [0], "score": [1.0]}).to_parquet(bad)
    overrides = {"data_root": str(tmp_path / "root"), "dataset": {"max_queries": 20},
                 "mining": {"k": 10, "channels": ["lexical"], "external_path": str(bad)}}
    cfg = get_config("quick", overrides)
    from flows.ingest import ingest_flow
    from flows.mine import mine_flow
    from relgrade.mining.stage import default_snapshot

    ingest_flow("quick", overrides)
    with pytest.raises(ContractError, match="rank must be an integer"):
        mine_flow("quick", overrides)
    assert not cfg.paths.union(default_snapshot(cfg)).exists()
    assert not cfg.paths.feature_source("retrieval_prior_fv").exists()
