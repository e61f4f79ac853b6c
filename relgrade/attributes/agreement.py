"""Query-item attribute agreement: for each attribute the query names, does the item's
title match it, contradict it, or say nothing?

The item's attributes come from its title with the same catalog lexicon (brand prefix,
finishes, materials, the number patterns) and its head product type
(:func:`relgrade.attributes.lexicon.title_head`). A named value **matches** when all its
product tokens (the mining tokenizer: ``20v`` and ``20-Volt`` are both ``20 volt``) are
in the title; it **contradicts** when it does not and the item states a value of the
same type (``dewalt`` against a Makita drill, ``white`` against a door ``in Black``);
otherwise the item is **silent**.

=================  ==========================================================
feature            definition
=================  ==========================================================
attr_named         attributes the query names, product type excluded
attr_match_share   share of them the item matches (NaN when none is named)
attr_contradict    how many the item contradicts
<type>_agree       per type: 1 match, -1 contradict, 0 silent, NaN not named
                   (type, brand, size, color, material, power)
=================  ==========================================================

:meth:`AttributeAgreement.texts` writes the same as text for a cross-encoder
(``brand dewalt: contradicts; type drill: matches``).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from relgrade.attributes.lexicon import Lexicon, _attribute_spans, stem, title_head
from relgrade.mining.tokenize import tokenize

AGREE_TYPES = ("TYPE", "BRAND", "SIZE", "COLOR", "MATERIAL", "POWER")
FEATURES = ["attr_named", "attr_match_share", "attr_contradict", *(f"{t.lower()}_agree" for t in AGREE_TYPES)]
_WORDS = {1: "matches", -1: "contradicts", 0: "silent"}


def item_attributes(title: str, lex: Lexicon) -> dict[str, set[str]]:
    """``{type: {value, ...}}`` stated by one title (values as joined product tokens)."""
    toks = str(title).split()
    out: dict[str, set[str]] = {}
    for s, e, k in _attribute_spans(toks, lex, fuzzy=False, seed_only=False):
        if k == "BRAND" and s != 0:
            continue  # a brand is the title's prefix; a brand word later is a compatibility note
        out.setdefault(k, set()).add(" ".join(tokenize(" ".join(toks[s:e]))))
    head = title_head(str(title))
    if head:
        out["TYPE"] = {stem(head[-1])}
    return out


def _named(attributes_json: str) -> list[tuple[str, str, list[str]]]:
    """(type, value, product tokens) of each attribute a query names, its product type first."""
    st = json.loads(attributes_json)
    named = []
    if st.get("product_type"):
        named.append(("TYPE", st["product_type"], [stem(st["product_type"].split()[-1])]))
    for a in st["attributes"]:
        if a["type"] in AGREE_TYPES:
            named.append((a["type"], a["value"], tokenize(a["value"])))
    return named


class AttributeAgreement:
    """Fitted on the catalog (titles -> token sets, stated attributes) and the query
    attribute table (``relgrade.attributes.stage.tag_queries``)."""

    def __init__(self, lex: Lexicon, catalog: pd.DataFrame, query_attributes: pd.DataFrame):
        self.lex = lex
        titles = catalog["title"].astype(str).tolist()
        self.item_index = pd.Index(catalog["item_id"].astype(str))
        self.item_tokens = [set(tokenize(t)) for t in titles]
        self.item_attrs = [item_attributes(t, lex) for t in titles]
        self.query_index = pd.Index(query_attributes["query_id"].astype(str))
        self.query_named = [_named(js) for js in query_attributes["attributes_json"]]

    def extend(self, items: pd.DataFrame | None = None, queries: pd.DataFrame | None = None,
               tagger_dir=None) -> "AttributeAgreement":
        """Add items (``item_id, title``) and queries (``query_id, text``) outside the
        tables it was fitted on; new queries are tagged with the saved tagger in
        ``tagger_dir`` (the attributes stage's folder)."""
        if items is not None and len(items):
            it = items[~items["item_id"].astype(str).isin(self.item_index)]
            titles = it["title"].astype(str).tolist()
            self.item_index = self.item_index.append(pd.Index(it["item_id"].astype(str)))
            self.item_tokens += [set(tokenize(t)) for t in titles]
            self.item_attrs += [item_attributes(t, self.lex) for t in titles]
        if queries is not None and len(queries):
            from relgrade.attributes.stage import tag_queries
            from relgrade.attributes.tagger import QueryTagger

            qq = queries[~queries["query_id"].astype(str).isin(self.query_index)]
            if len(qq):
                table = tag_queries(QueryTagger.load(tagger_dir), qq.assign(split=None))
                self.query_index = self.query_index.append(pd.Index(table["query_id"].astype(str)))
                self.query_named += [_named(js) for js in table["attributes_json"]]
        return self

    def _status(self, named: tuple[str, str, list[str]], ii: int) -> int:
        kind, _value, toks = named
        have = self.item_tokens[ii]
        if toks and all(t in have for t in toks):
            return 1
        return -1 if self.item_attrs[ii].get(kind) else 0

    def statuses(self, qi: int, ii: int) -> list[tuple[str, str, int]]:
        return [(k, v, self._status((k, v, t), ii)) for k, v, t in self.query_named[qi]] if qi >= 0 else []

    def codes(self, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        qi = self.query_index.get_indexer(pairs["query_id"].astype(str))
        ii = self.item_index.get_indexer(pairs["item_id"].astype(str))
        if (ii < 0).any():
            from relgrade.contract import ContractError

            raise ContractError(f"{int((ii < 0).sum())} pair(s) name an item missing from the catalog")
        return qi, ii

    def features(self, pairs: pd.DataFrame) -> np.ndarray:
        """(n, len(FEATURES)) float32; a query without attributes gives NaN / 0 rows."""
        qi, ii = self.codes(pairs)
        X = np.full((len(pairs), len(FEATURES)), np.nan, dtype=np.float32)
        col = {t: 3 + j for j, t in enumerate(AGREE_TYPES)}
        for r, (q, i) in enumerate(zip(qi, ii)):
            st = self.statuses(q, i)
            attrs = [s for k, _, s in st if k != "TYPE"]
            X[r, 0] = len(attrs)
            X[r, 1] = np.mean([s == 1 for s in attrs]) if attrs else np.nan
            X[r, 2] = sum(s == -1 for s in attrs)
            for k, _, s in st:
                if np.isnan(X[r, col[k]]) or s < X[r, col[k]]:  # the worst status of a type
                    X[r, col[k]] = s
        return X

    def texts(self, pairs: pd.DataFrame) -> list[str]:
        """The agreement as text per pair (empty when the query names nothing)."""
        qi, ii = self.codes(pairs)
        return ["; ".join(f"{k.lower()} {v}: {_WORDS[s]}" for k, v, s in self.statuses(q, i)) for q, i in zip(qi, ii)]
