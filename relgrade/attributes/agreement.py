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
        self.query_named: list[list[tuple[str, str, list[str]]]] = []
        for js in query_attributes["attributes_json"]:
            st = json.loads(js)
            named = []
            if st.get("product_type"):
                named.append(("TYPE", st["product_type"], [stem(st["product_type"].split()[-1])]))
            for a in st["attributes"]:
                if a["type"] in AGREE_TYPES:
                    named.append((a["type"], a["value"], tokenize(a["value"])))
            self.query_named.append(named)

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
