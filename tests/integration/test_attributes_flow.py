"""The attributes flow on a real Prefect server: trains the tagger on the tiny root's
weak labels, tags every query, scores it on the bundled gold set, and a rerun is cached."""
from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _overrides(grading_root):
    return {**grading_root["overrides"], "attributes": {"max_train_queries": 120, "epochs": 1}}


def test_attributes_flow_tags_every_query_and_reports_span_f1(grading_root):
    from flows.attributes import attributes_flow
    from relgrade.attributes.schema import COLUMNS, TYPES
    from relgrade.attributes.stage import QUERY_ATTRIBUTE_COLUMNS
    from relgrade.attributes.tagger import QueryTagger

    ov = _overrides(grading_root)
    cfg = grading_root["cfg"]
    res = attributes_flow("quick", ov)
    p = cfg.paths
    table = pd.read_parquet(p.query_attributes)
    queries = pd.read_parquet(p.table("queries"))
    assert list(table.columns) == QUERY_ATTRIBUTE_COLUMNS
    assert sorted(table["query_id"]) == sorted(queries["query_id"])
    assert res["stats"]["train_queries"] == min(120, int((queries["split"] == "train").sum()))
    assert table["tagger_version"].nunique() == 1
    # the structured attributes agree with the tags
    for _, r in table.head(50).iterrows():
        st = json.loads(r["attributes_json"])
        assert st["product_type"] == r["product_type"]
        assert len(st["attributes"]) == r["n_attributes"]
        assert set(COLUMNS.values()) <= set(r.index)
    ev = res["evaluation"]
    assert ev["queries"] >= 300  # the bundled gold set (data/homedepot/attributes_gold.jsonl)
    for split in ("dev", "test"):
        s = ev["splits"][split]
        for system in ("tagger", "weak_labels", "dictionary_baseline"):
            assert set(s[system]["per_type"]) == set(TYPES)
            assert 0.0 <= s[system]["micro"]["f1"] <= 1.0
        assert s["tagger"]["micro"]["gold"] == s["weak_labels"]["micro"]["gold"] > 0
    html = (p.report("attributes") / "report.html").read_text()
    assert "dictionary_baseline" in html and "<script" not in html
    assert QueryTagger.load(p.tagger).version == res["stats"]["tagger_version"]


def test_a_rerun_is_cached_and_returns_the_same_summary(grading_root):
    from flows.attributes import attributes_flow

    ov = _overrides(grading_root)
    first = attributes_flow("quick", ov)
    stamp = grading_root["cfg"].paths.query_attributes.stat().st_mtime_ns
    again = attributes_flow("quick", ov)
    assert grading_root["cfg"].paths.query_attributes.stat().st_mtime_ns == stamp
    assert again == first


def test_a_missing_gold_file_fails_before_anything_is_written(grading_root, tmp_path):
    from flows.attributes import attributes_flow
    from relgrade.contract import ContractError

    ov = {**_overrides(grading_root), "data_root": str(tmp_path / "other"),
          "attributes": {"max_train_queries": 50, "epochs": 1, "gold_path": str(tmp_path / "nope.jsonl")}}
    import shutil

    src = grading_root["cfg"].paths.contract
    shutil.copytree(src, tmp_path / "other" / "contract")
    with pytest.raises(ContractError, match="gold set not found"):
        attributes_flow("quick", ov)
    assert not (tmp_path / "other" / "attributes").exists()
