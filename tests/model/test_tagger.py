"""The query tagger trains for real on weak labels of bundled train queries, and its
saved folder loads on its own in a fresh process with the same predictions."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relgrade.attributes.evaluate import span_scores
from relgrade.attributes.lexicon import build_lexicon, weak_tags
from relgrade.attributes.tagger import QueryTagger, TaggerArgs


@pytest.fixture(scope="module")
def world():
    import pandas as pd

    from relgrade.adapters.common import normalize_query, split_of

    df = pd.read_csv("data/homedepot/train.csv.zip", encoding="latin-1")
    lex = build_lexicon(df["product_title"].unique())
    qs = sorted(set(df["search_term"].map(normalize_query)))
    train = [q.split() for q in qs if split_of(q) == "train"][:480]
    dev = [q.split() for q in qs if split_of(q) == "dev"][:200]
    tagger = QueryTagger.train(train, [weak_tags(t, lex) for t in train], lex, TaggerArgs(epochs=2, batch_size=16))
    return {"lex": lex, "train": train, "dev": dev, "tagger": tagger}


def test_the_tagger_learns_the_weak_labels_beyond_the_queries_it_saw(world):
    lex, tagger = world["lex"], world["tagger"]
    dev = world["dev"]
    weak = [weak_tags(t, lex) for t in dev]
    untrained = QueryTagger.train(dev[:1], [weak[0]], lex, TaggerArgs(epochs=1, learning_rate=1e-12,
                                                                        head_learning_rate=1e-12))
    learned = span_scores(weak, tagger.predict_tags(dev))["micro"]["f1"]
    before = span_scores(weak, untrained.predict_tags(dev))["micro"]["f1"]
    assert learned > 0.45, learned
    assert learned > before + 0.3, (learned, before)


def test_every_prediction_is_valid_bio_with_one_head_type(world):
    from relgrade.attributes.schema import check_tags

    for toks, tags in zip(world["dev"], world["tagger"].predict_tags(world["dev"])):
        check_tags(toks, tags)
        assert tags.count("B-TYPE") <= 1


def test_the_saved_folder_loads_on_its_own_in_a_fresh_process(world, tmp_path):
    tagger = world["tagger"]
    path = tagger.save(tmp_path / "tagger")
    assert {p.name for p in path.iterdir()} >= {"encoder", "head.pt", "tagger.json", "lexicon.json"}
    queries = [" ".join(t) for t in world["dev"][:40]]
    code = ("import json, sys; from relgrade.attributes.tagger import QueryTagger; "
            f"t = QueryTagger.load({str(path)!r}); qs = json.loads(sys.stdin.read()); "
            "print(json.dumps([t.version, t.predict_tags([q.split() for q in qs])]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(queries), capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    version, tags = json.loads(out.stdout.strip().splitlines()[-1])
    assert version == tagger.version
    assert tags == tagger.predict_tags([q.split() for q in queries])


def test_a_query_longer_than_the_encoder_window_keeps_one_tag_per_word(world):
    long_q = ("dewalt " * 40).split()
    tags = world["tagger"].predict_tags([long_q, []])
    assert len(tags[0]) == 40 and tags[1] == []
