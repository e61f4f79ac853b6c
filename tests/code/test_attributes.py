"""Attribute schema, catalog lexicon, weak labels, the dictionary baseline, the
decorative-relation correction and span scoring, on hand-built inputs."""
from __future__ import annotations

import json

import pytest

from relgrade.attributes.evaluate import span_scores
from relgrade.attributes.lexicon import build_lexicon, classify_numeric, dictionary_tags, title_head, weak_tags
from relgrade.attributes.schema import check_tags, spans_from_tags, tags_from_spans
from relgrade.attributes.tagger import decorative_correction, structured

TITLES = [
    "DEWALT 20-Volt MAX Lithium-Ion Cordless Drill",
    "DEWALT 20-Volt MAX Cordless Impact Driver",
    "DEWALT 12 in. Compound Miter Saw",
    "DEWALT Drill Bit Set (20-Piece)",
    "Hampton Bay 52 in. Ceiling Fan in Brushed Nickel",
    "Hampton Bay Shaker 30 in. Cabinet Door in White",
    "Hampton Bay Shaker 24 in. Cabinet Door in White",
    "Hampton Bay 3-Light Vanity Light in Brushed Nickel",
    "Everbilt 1/2 in. Copper 90-Degree Elbow",
    "Everbilt 3/4 in. Copper Pipe Elbow",
    "SharkBite 1/2 in. Brass Push-to-Connect Elbow",
    "Everbilt Satin Nickel Door Knob",
    "Everbilt Brass Door Knob in Brushed Nickel",
    "Kwikset Door Knob in Brushed Nickel",
    "Kwikset Entry Door Knob in White",
    "Kwikset Passage Door Knob in White",
    "Glacier Bay Shower Curtain Rod in Chrome",
    "Glacier Bay Curved Shower Curtain Rod in Chrome",
    "Glacier Bay Tension Shower Curtain Rod in White",
    "Makita 18-Volt Lithium-Ion Cordless Drill",
    "Makita 18-Volt Compact Drill",
    "Makita 18-Volt 3.0Ah Battery (2-Pack)",
]


@pytest.fixture(scope="module")
def lex():
    return build_lexicon(TITLES, min_count=3)


def test_bio_round_trip_and_lenient_reading():
    tags = ["B-SIZE", "I-SIZE", "B-MATERIAL", "O", "B-TYPE"]
    spans = spans_from_tags(tags)
    assert spans == [(0, 2, "SIZE"), (2, 3, "MATERIAL"), (4, 5, "TYPE")]
    assert tags_from_spans(5, spans) == tags
    assert spans_from_tags(["O", "I-TYPE", "I-TYPE"]) == [(1, 3, "TYPE")]  # an orphan I- opens a span


def test_invalid_bio_is_rejected_with_the_position():
    with pytest.raises(ValueError, match="token 1"):
        check_tags(["a", "b"], ["B-TYPE", "I-COLOR"])
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        check_tags(["a", "b"], ["O"])
    with pytest.raises(ValueError, match="unknown tag"):
        check_tags(["a"], ["B-PRICE"])


@pytest.mark.parametrize("query,start,expect", [
    ("30 in cabinet", 0, ("SIZE", 2)),
    ("1/2 in. copper", 0, ("SIZE", 2)),
    ("2 x 4 x 8", 0, ("SIZE", 3)),
    ("2x4x8 lumber", 0, ("SIZE", 1)),
    ("dewalt 20v drill", 1, ("POWER", 1)),
    ("18 volt battery", 0, ("POWER", 2)),
    ("battery 3.0ah", 1, ("POWER", 1)),
    ("10-pack bulbs", 0, ("COUNT", 1)),
    ("set of 4 chairs", 0, ("COUNT", 3)),
    ("dewalt dw059b", 1, ("MODEL", 1)),
    ("drill 2", 1, None),
    ("drill", 0, None),
])
def test_number_patterns(query, start, expect):
    assert classify_numeric(query.split(), start) == expect


def test_lexicon_mines_brands_types_and_finishes_from_titles(lex):
    assert ("dewalt",) in lex.brands and ("hampton", "bay") in lex.brands and ("glacier", "bay") in lex.brands
    assert "knob" in lex.types and "drill" in lex.types and "rod" in lex.types
    assert ("brushed", "nickel") in lex.colors and ("white",) in lex.colors
    assert ("copper",) in lex.materials
    assert title_head("Hampton Bay Shaker 30 in. Cabinet Door in White") == ("cabinet", "door")
    assert title_head("Makita 18-Volt 3.0Ah Battery (2-Pack)") == ("battery",)


def test_lexicon_survives_a_json_round_trip(lex, tmp_path):
    from relgrade.attributes.lexicon import Lexicon

    lex.save(tmp_path / "lexicon.json")
    again = Lexicon.load(tmp_path / "lexicon.json")
    assert again.to_json() == lex.to_json()
    q = "dewalt 20v cordless drill".split()
    assert weak_tags(q, again) == weak_tags(q, lex)


def test_weak_labels_tag_the_reference_queries(lex):
    assert weak_tags("dewalt 20v drill".split(), lex) == ["B-BRAND", "B-POWER", "B-TYPE"]
    assert weak_tags("brushed nickel door knob".split(), lex) == ["B-COLOR", "I-COLOR", "B-TYPE", "I-TYPE"]
    assert weak_tags("1/2 in. copper elbow".split(), lex) == ["B-SIZE", "I-SIZE", "B-MATERIAL", "B-TYPE"]


def test_weak_labels_read_misspellings_the_dictionary_misses(lex):
    q = "dewlat cordless drill".split()
    assert weak_tags(q, lex)[0] == "B-BRAND"
    assert dictionary_tags(q, lex)[0] == "O"


def test_one_head_type_and_the_decorative_relation(lex):
    # the head is the type before the "for" clause; the nouns after it are not a second product
    assert weak_tags("drill for door knob".split(), lex) == ["B-TYPE", "O", "O", "O"]
    assert dictionary_tags("drill for door knob".split(), lex).count("B-TYPE") == 2
    # a compound names one product
    assert weak_tags("shower curtain rod".split(), lex) == ["B-TYPE", "I-TYPE", "I-TYPE"]


def test_decorative_correction_keeps_one_head_type(lex):
    toks = "white cabinet door for kitchen".split()
    # a tagger output with three TYPE spans: "white" (a colour), "cabinet door" (the head) and "kitchen"
    spans = [(0, 1, "TYPE"), (1, 3, "TYPE"), (4, 5, "TYPE")]
    fixed = decorative_correction(toks, spans, lex)
    assert fixed == [(0, 1, "COLOR"), (1, 3, "TYPE")]
    # a type span directly before the head joins it
    assert decorative_correction("cabinet door".split(), [(0, 1, "TYPE"), (1, 2, "TYPE")], lex) == [(0, 2, "TYPE")]
    st = structured(toks, fixed)
    assert st == {"product_type": "cabinet door",
                  "attributes": [{"type": "COLOR", "value": "white", "modifies": "cabinet door"}]}


def test_span_scores_count_exact_span_and_type_matches():
    gold = [["B-BRAND", "B-POWER", "B-TYPE"], ["B-COLOR", "B-TYPE", "I-TYPE"]]
    pred = [["B-BRAND", "O", "B-TYPE"], ["B-COLOR", "B-TYPE", "O"]]  # POWER missed, one TYPE span too short
    s = span_scores(gold, pred)
    assert s["per_type"]["BRAND"]["f1"] == 1.0
    assert s["per_type"]["POWER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gold": 1, "predicted": 0,
                                      "correct": 0}
    assert s["per_type"]["TYPE"]["precision"] == 0.5 and s["per_type"]["TYPE"]["recall"] == 0.5
    assert s["micro"]["correct"] == 3 and s["micro"]["gold"] == 5 and s["micro"]["predicted"] == 4
    with pytest.raises(ValueError):
        span_scores(gold, pred[:1])


def test_the_gold_loader_rejects_train_queries_and_bad_tags(tmp_path):
    from relgrade.adapters.common import split_of
    from relgrade.attributes.stage import load_gold
    from relgrade.contract import ContractError

    def write(rows):
        p = tmp_path / "gold.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in rows))
        return p

    words = [f"drill {i}" for i in range(60)]
    train_q = next(q for q in words if split_of(q) == "train")
    dev_q = next(q for q in words if split_of(q) == "dev")
    ok = {"query_id": "q1", "split": "dev", "query": dev_q, "tokens": dev_q.split(), "tags": ["B-TYPE", "O"]}
    assert len(load_gold(write([ok]))) == 1
    with pytest.raises(ContractError, match="not a dev/test query"):
        load_gold(write([{**ok, "query": train_q, "tokens": train_q.split()}]))
    with pytest.raises(ContractError, match=":1: .*does not continue"):
        load_gold(write([{**ok, "tags": ["O", "I-TYPE"]}]))
    with pytest.raises(ContractError, match="whitespace tokens"):
        load_gold(write([{**ok, "tokens": ["x", "y"]}]))


def test_attribute_agreement_matches_contradicts_or_is_silent(lex):
    import json

    import numpy as np
    import pandas as pd

    from relgrade.attributes.agreement import FEATURES, AttributeAgreement

    catalog = pd.DataFrame({"item_id": ["a", "b", "c"], "title": [
        "DEWALT 20-Volt MAX Lithium-Ion Cordless Drill",
        "Makita 18-Volt Lithium-Ion Cordless Drill",
        "Kwikset Door Knob in White"]})
    st = {"product_type": "drill", "attributes": [{"type": "BRAND", "value": "dewalt", "modifies": "drill"},
                                                  {"type": "POWER", "value": "20v", "modifies": "drill"}]}
    qa = pd.DataFrame({"query_id": ["q1", "q2"], "attributes_json": [
        json.dumps(st), json.dumps({"product_type": None, "attributes": []})]})
    ag = AttributeAgreement(lex, catalog, qa)
    pairs = pd.DataFrame({"query_id": ["q1", "q1", "q1", "q2"], "item_id": ["a", "b", "c", "a"]})
    X = pd.DataFrame(ag.features(pairs), columns=FEATURES)
    assert X.loc[0, ["attr_named", "attr_match_share", "attr_contradict", "type_agree", "brand_agree",
                     "power_agree"]].tolist() == [2, 1.0, 0, 1, 1, 1]  # 20v meets 20-Volt
    assert X.loc[1, ["brand_agree", "power_agree", "type_agree", "attr_contradict"]].tolist() == [-1, -1, 1, 2]
    assert X.loc[2, "type_agree"] == -1  # a knob is not a drill
    assert X.loc[3, "attr_named"] == 0 and np.isnan(X.loc[3, "attr_match_share"]) and np.isnan(X.loc[3, "type_agree"])
    texts = ag.texts(pairs)
    assert texts[1] == "type drill: matches; brand dewalt: contradicts; power 20v: contradicts"
    assert texts[3] == ""
