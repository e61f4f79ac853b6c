"""The attributes flow on a real Prefect server: trains the tagger on the tiny root's
weak labels, tags every query, scores it on the bundled gold set, and a rerun is cached."""
from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _overrides(grading_root):
    return grading_root["overrides"]  # the tiny root ran this flow once (tests/grading_world.py)


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


def test_the_flow_publishes_query_attributes_fv_and_the_gate_refuses_invented_values(grading_root):
    """query_attributes_fv holds one row per query at the mining snapshot; every
    (query, item) entity row of a query joins it point in time; a batch whose value is
    not a span of its query fails the gate and lands nowhere."""
    from flows.attributes import attributes_flow
    from relgrade import featurestore as fs
    from relgrade.attributes.stage import feature_batch
    from relgrade.mining.stage import default_snapshot
    from validation.gate import ValidationFailed, gate_for

    cfg = grading_root["cfg"]
    attributes_flow("quick", _overrides(grading_root))
    table = pd.read_parquet(cfg.paths.query_attributes)
    off = fs.read_offline(cfg, "query_attributes_fv")
    assert len(off) == len(table) and off["query_id"].is_unique
    assert (off["event_timestamp"] == default_snapshot(cfg)).all()
    # two items of the same query get the query's attributes
    typed = table[table["product_type"].notna()].head(3)
    ent = pd.DataFrame({"query_id": list(typed["query_id"]) * 2, "item_id": ["x1"] * 3 + ["x2"] * 3})
    got = fs.historical_features(cfg, ent.assign(event_timestamp=default_snapshot(cfg)),
                                 ["query_attributes_fv:product_type", "query_attributes_fv:brand"])
    assert got["product_type"].tolist() == list(typed["product_type"]) * 2
    before = fs.historical_features(cfg, ent.assign(event_timestamp=default_snapshot(cfg) - pd.Timedelta(seconds=1)),
                                    ["query_attributes_fv:product_type"])
    assert before["product_type"].isna().all()  # not known before the snapshot it is stamped at
    # an invented value: refused before anything is written
    bad = feature_batch(cfg, table)
    bad.loc[bad.index[0], "brand"] = "zzinvented"
    bad["event_timestamp"] = bad["event_timestamp"] + pd.Timedelta(days=1)
    texts = pd.Series(table["text"].to_numpy(), index=table["query_id"].astype(str))
    stored = fs.read_offline(cfg, "query_attributes_fv")
    with pytest.raises(ValidationFailed, match="chk_values_in_query"):
        fs.publish(cfg, "query_attributes_fv", bad,
                   gate_for(cfg, "query_attributes_fv", query_texts=texts))
    pd.testing.assert_frame_equal(fs.read_offline(cfg, "query_attributes_fv"), stored)


def test_a_refused_batch_leaves_the_previous_tagger_table_and_view_in_place(grading_root, tmp_path, monkeypatch):
    """The tagger folder (whose lexicon the grade stage reads), the query table and the
    view land together: a run whose batch the gate refuses changes none of them."""
    import shutil

    from flows.attributes import attributes_flow
    from relgrade import featurestore as fs
    from relgrade.attributes import stage as S
    from relgrade.config import load_config
    from validation.gate import ValidationFailed

    ov = {**_overrides(grading_root), "data_root": str(tmp_path / "root")}
    shutil.copytree(grading_root["cfg"].paths.contract, tmp_path / "root" / "contract")
    cfg = load_config("quick", overrides=ov)
    first = attributes_flow("quick", ov)
    p = cfg.paths
    before = {"tagger": (p.tagger / "tagger.json").read_text(), "lexicon": (p.tagger / "lexicon.json").read_bytes(),
              "table": p.query_attributes.read_bytes(), "view": fs.read_offline(cfg, "query_attributes_fv")}
    real = S.tag_queries

    def inventing(tagger, queries):  # a tagger that writes a word the query does not hold
        t = real(tagger, queries)
        t.loc[t.index[0], "brand"] = "zzinvented"
        return t

    monkeypatch.setattr(S, "tag_queries", inventing)
    ov2 = {**ov, "attributes": {**ov["attributes"], "seed": 14}}  # another tagger: the stage runs again
    with pytest.raises(ValidationFailed, match="chk_values_in_query"):
        attributes_flow("quick", ov2)
    assert (p.tagger / "tagger.json").read_text() == before["tagger"]
    assert (p.tagger / "lexicon.json").read_bytes() == before["lexicon"]
    assert p.query_attributes.read_bytes() == before["table"]
    pd.testing.assert_frame_equal(fs.read_offline(cfg, "query_attributes_fv"), before["view"])
    assert not S.staged_tagger_dir(cfg).exists()
    assert first["stats"]["tagger_version"] in before["tagger"]
