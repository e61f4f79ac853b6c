"""The attribute schema (docs/attribute_guideline.md) and BIO tags over whitespace tokens.

A query is tagged token by token (``query.split()``): ``B-<TYPE>`` opens a span,
``I-<TYPE>`` continues it, ``O`` is outside. A span is ``(start, end, type)`` with ``end``
exclusive."""
from __future__ import annotations

from relgrade.views import QUERY_ATTRIBUTE_FIELDS

TYPES = ("TYPE", "BRAND", "SIZE", "COLOR", "MATERIAL", "COUNT", "POWER", "MODEL")
TAGS = ("O", *(f"{p}-{t}" for t in TYPES for p in ("B", "I")))
TAG_INDEX = {t: i for i, t in enumerate(TAGS)}
# the feature view's column per type (query_attributes_fv; named in relgrade/views.py)
COLUMNS = QUERY_ATTRIBUTE_FIELDS
assert tuple(COLUMNS) == TYPES

Span = tuple[int, int, str]


def tokens_of(query: str) -> list[str]:
    return str(query).split()


def spans_from_tags(tags: list[str]) -> list[Span]:
    """Spans of a BIO sequence; an ``I-X`` that does not continue an ``X`` span opens one
    (the usual lenient reading, as in seqeval's default mode)."""
    spans: list[Span] = []
    start, kind = None, None
    for i, t in enumerate(list(tags) + ["O"]):
        p, _, k = t.partition("-")
        if p == "I" and kind == k:
            continue
        if kind is not None:
            spans.append((start, i, kind))
            start, kind = None, None
        if p in ("B", "I"):
            start, kind = i, k
    return spans


def tags_from_spans(n: int, spans: list[Span]) -> list[str]:
    tags = ["O"] * n
    for s, e, k in spans:
        tags[s] = f"B-{k}"
        for i in range(s + 1, e):
            tags[i] = f"I-{k}"
    return tags


def check_tags(tokens: list[str], tags: list[str]) -> None:
    """Raise ValueError unless ``tags`` is a valid BIO sequence over ``tokens``."""
    if len(tags) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    prev = "O"
    for i, t in enumerate(tags):
        if t not in TAG_INDEX:
            raise ValueError(f"unknown tag {t!r} at token {i}")
        if t.startswith("I-") and prev[2:] != t[2:]:
            raise ValueError(f"{t} at token {i} does not continue a span (previous tag {prev})")
        prev = t


def attributes_of(tokens: list[str], spans: list[Span]) -> dict[str, list[str]]:
    """``{type: [span text, ...]}`` in query order."""
    out: dict[str, list[str]] = {}
    for s, e, k in spans:
        out.setdefault(k, []).append(" ".join(tokens[s:e]))
    return out
