"""The gate on a batch larger than ``validation.partition_rows``: row-level expectations
per partition (rows of one query together), batch-level ones on the whole batch, and a
failing partition refuses the whole batch before anything lands."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relgrade.views import QUERY_ATTRIBUTES_FV, RETRIEVAL_PRIOR_FV

pytestmark = pytest.mark.integration
TS = pd.Timestamp("2026-01-01", tz="UTC")


def _prior_batch(n: int = 120) -> pd.DataFrame:
    from relgrade.featurestore import conform_features

    return conform_features(RETRIEVAL_PRIOR_FV, pd.DataFrame({
        "query_id": [f"q{i % 23}" for i in range(n)], "item_id": [f"i{i}" for i in range(n)], "event_timestamp": TS,
        "retrieval_prior": 0.5, "rank_lexical": 1.0, "rank_dense": np.nan, "rank_behavioral": np.nan,
        "rank_external": np.nan, "agreement": 1, "channel_pattern": "L", "category": "other", "difficulty_level": 2}))


@pytest.fixture
def cfg(tmp_path):
    from relgrade.config import load_config

    return load_config("quick", overrides={"data_root": str(tmp_path / "root"), "validation": {"partition_rows": 40}})


def test_partitions_keep_each_query_together():
    from validation.gate import partitions

    b = _prior_batch(122)
    parts = partitions(b, 40)
    assert len(parts) == 4 and sum(len(p) for p in parts) == len(b)
    assert all(len(set(p["query_id"]) & set(q["query_id"])) == 0 for i, p in enumerate(parts) for q in parts[i + 1:])
    assert partitions(b, None)[0] is b and len(partitions(b, len(b))) == 1


def test_a_key_duplicated_across_partitions_is_caught(cfg):
    """The events suite's second key (search_id, position): one search's rows under two
    queries land in two partitions; uniqueness is checked on the whole batch."""
    from validation.gate import ValidationFailed, partitions, validate
    from validation.suites import GateContext

    n = 100
    ev = pd.DataFrame({"search_id": [i // 10 for i in range(n)],
                       "query_id": [f"q{i // 10}" for i in range(n)], "item_id": [f"i{i}" for i in range(n)],
                       "position": [1 + i % 10 for i in range(n)], "slot": "organic",
                       "event_ts": TS + pd.to_timedelta(np.arange(n), unit="s"), "impression": 1, "click": 0,
                       "add_to_cart": 0, "order": 0})
    ev.loc[0, "click"] = 1
    from relgrade.contract import TABLES

    for c in TABLES["events"].names:
        assert c in ev.columns, c
    for j in range(100):  # a query id that hashes to another partition than q0
        dup = ev.iloc[[0]].assign(query_id=f"q_other{j}", item_id="i_other", event_ts=TS + pd.Timedelta(seconds=500))
        bad = pd.concat([ev, dup], ignore_index=True)
        parts = partitions(bad, 40)
        where = [i for i, p in enumerate(parts) for _ in p[(p["search_id"] == 0) & (p["position"] == 1)].index]
        if len(set(where)) == 2:  # the two rows of (search 0, position 1) sit in different partitions
            break
    assert len(set(where)) == 2
    with pytest.raises(ValidationFailed) as exc:
        validate(bad, "events", cfg, GateContext())
    assert [(f.expectation, f.column) for f in exc.value.report.failures] == [
        ("expect_compound_columns_to_be_unique", "search_id,position")]


def test_a_bad_row_in_any_partition_refuses_the_batch_and_nothing_lands(cfg):
    from relgrade import featurestore as fs
    from validation.gate import ValidationFailed, partitions, validate
    from validation.suites import GateContext

    good = _prior_batch()
    rep = validate(good, RETRIEVAL_PRIOR_FV, cfg, GateContext())
    assert rep.success and rep.partitions == 3
    fs.publish(cfg, RETRIEVAL_PRIOR_FV, good, lambda b: validate(b, RETRIEVAL_PRIOR_FV, cfg, GateContext()))
    stored = fs.read_offline(cfg, RETRIEVAL_PRIOR_FV)
    bad = good.copy()
    parts = partitions(bad, 40)
    rows = [parts[0].index[0], parts[2].index[1]]  # one bad row in two different partitions
    bad.loc[rows, "retrieval_prior"] = [1.5, -0.2]
    bad["event_timestamp"] = TS + pd.Timedelta(days=1)
    with pytest.raises(ValidationFailed) as exc:
        fs.publish(cfg, RETRIEVAL_PRIOR_FV, bad, lambda b: validate(b, RETRIEVAL_PRIOR_FV, cfg, GateContext()))
    f = exc.value.report.failures
    assert [(x.expectation, x.column, x.unexpected_count) for x in f] == [
        ("expect_column_values_to_be_between", "retrieval_prior", 2)]  # counted across partitions
    assert "partition" in exc.value.report.data_docs.name  # the page of the partition that failed
    pd.testing.assert_frame_equal(fs.read_offline(cfg, RETRIEVAL_PRIOR_FV), stored)


def test_batch_level_expectations_see_the_whole_batch(cfg):
    """Two tagger versions in one batch, each alone in its partitions, and a row count
    below the minimum: both are batch-level and caught on the whole batch."""
    import json

    from relgrade.attributes.schema import COLUMNS
    from relgrade.featurestore import conform_features
    from validation.gate import ValidationFailed, partitions, validate
    from validation.suites import GateContext

    n = 90
    q = [f"q{i}" for i in range(n)]
    batch = pd.DataFrame({"query_id": q, "event_timestamp": TS, "n_attributes": 0,
                          "attributes_json": json.dumps({"attributes": []}), **{c: None for c in COLUMNS.values()}})
    parts = partitions(batch, 40)
    first = set(parts[0]["query_id"])
    batch["tagger_version"] = ["tagger-a" if x in first else "tagger-b" for x in q]
    batch = conform_features(QUERY_ATTRIBUTES_FV, batch)
    ctx = GateContext(query_texts=pd.Series("some query words", index=q), min_rows=n + 1)
    with pytest.raises(ValidationFailed) as exc:
        validate(batch, QUERY_ATTRIBUTES_FV, cfg, ctx)
    rep = exc.value.report
    assert rep.partitions == 3
    assert {x.expectation for x in rep.failures} == {"expect_column_unique_value_count_to_be_between",
                                                     "expect_table_row_count_to_be_between"}
