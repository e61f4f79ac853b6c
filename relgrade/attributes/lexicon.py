"""Catalog-mined dictionaries, the weak labeller and the dictionary baseline.

Distant supervision from the catalog (no hand labels): :func:`build_lexicon` reads the
titles and keeps

- **brands**: the title prefix a brand occupies (``Hampton Bay ...``, ``DEWALT ...``):
  the shortest prefix of one to three tokens that most titles starting with its first
  token continue with, seen at the start of at least ``min_count`` titles; a single word
  that titles use more often inside than at the start (``home``, ``commercial``) is
  not a brand on its own;
- **product types**: the head noun of each title (the last word before the colour,
  ``with``, ``for`` or pack clause: ``... Bathroom Faucet in Brushed Nickel`` ->
  ``faucet``), and the adjacent word pairs of the compound before it
  (``bathroom faucet``, ``shower curtain`` + ``curtain rod``);
- **colours and finishes**: the ``in <finish>`` clause that ends Home Depot titles, with
  a seed list of colour words (``SEED_COLORS``) seen in the catalog;
- **materials**: a seed list (``SEED_MATERIALS``) kept where the catalog uses the word;
- sizes, counts, power and model numbers come from patterns (``classify_numeric``).

:func:`weak_tags` projects that onto a query: longest dictionary match, one-edit
spelling variants of dictionary words (``dewlat`` -> ``dewalt``), the number patterns,
and one head product type (the rightmost type word before a ``for``/``with`` clause,
with its compound modifiers), so that a colour or material before the head is an
attribute of it (the decorative relation), not a second product. :func:`dictionary_tags`
is the baseline the tagger is measured against: exact dictionary and pattern lookups,
every type word tagged ``TYPE``.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from relgrade.attributes.schema import Span, tags_from_spans

SEED_COLORS = (
    "white", "black", "brown", "gray", "grey", "silver", "gold", "red", "blue", "green", "yellow", "orange", "purple",
    "pink", "beige", "tan", "ivory", "cream", "bone", "almond", "bisque", "biscuit", "clear", "chrome", "nickel",
    "brushed nickel", "satin nickel", "polished nickel", "oil rubbed bronze", "bronze", "brass", "polished brass",
    "antique brass", "copper", "pewter", "espresso", "cherry", "mahogany", "walnut", "natural", "charcoal", "navy",
    "teal", "aqua", "taupe", "sand", "matte black", "stainless", "satin", "gloss", "semi-gloss", "matte", "flat",
    "eggshell", "frosted", "champagne", "graphite", "slate", "khaki", "burgundy", "mocha", "chocolate", "linen",
    "snow", "oatmeal", "gunmetal", "primed", "unfinished",
)
SEED_MATERIALS = (
    "wood", "wooden", "pvc", "cpvc", "pex", "abs", "copper", "brass", "steel", "stainless steel", "galvanized",
    "galvanized steel", "aluminum", "iron", "cast iron", "vinyl", "plastic", "resin", "cedar", "pine", "oak", "maple",
    "birch", "bamboo", "teak", "redwood", "poplar", "hickory", "fir", "doug fir", "plywood", "mdf", "concrete",
    "cement", "stone", "granite", "marble", "quartz", "travertine", "slate", "porcelain", "ceramic", "glass", "fiberglass",
    "acrylic", "polycarbonate", "polyethylene", "polypropylene", "nylon", "rubber", "silicone", "leather", "cotton",
    "polyester", "wool", "jute", "sisal", "wicker", "rattan", "composite", "laminate", "metal", "wrought iron", "zinc",
    "titanium", "carbide", "cobalt", "brick", "gravel", "mulch", "foam", "latex", "epoxy", "felt", "canvas", "burlap",
    "chain link", "lead", "tin", "bronze",
)
# materials that read as finishes on fixtures: when both, the guideline prefers COLOR
_COLOR_FIRST = {("bronze",), ("brass",), ("chrome",), ("nickel",)}
PREPOSITIONS = {"for", "with", "to", "that", "without", "under", "over", "on"}
_STOP = {"a", "an", "and", "the", "of", "in", "or", "x", "by", "at", "&", "-", "/", "+", "w/", "no", "not",
         *PREPOSITIONS}

# unit words after a number (lower case, trailing period stripped)
SIZE_UNITS = {"in", "inch", "inches", '"', "''", "ft", "feet", "foot", "'", "gal", "gallon", "gallons", "qt", "quart",
              "quarts", "pint", "oz", "ounce", "lb", "lbs", "pound", "pounds", "mm", "cm", "m", "yd", "yard", "yards",
              "sq", "sq.ft", "sqft", "cu", "cu.ft", "cuft", "gauge", "ga", "awg", "degree", "degrees", "deg", "mil",
              "l", "liter", "ml", "cf", "sf", "tier", "gang", "drawer", "door", "inch.", "psi", "gpm", "gpf", "cfm", "lf",
              "btu.", "x"}
POWER_UNITS = {"v", "volt", "volts", "w", "watt", "watts", "amp", "amps", "a", "ah", "mah", "btu", "btus", "hp", "kw",
               "kwh", "lumen", "lumens", "vac", "vdc", "cc"}
COUNT_UNITS = {"pack", "packs", "pk", "pc", "pcs", "piece", "pieces", "count", "ct", "per", "set", "sets", "box",
               "pair", "pairs", "roll", "rolls", "bag", "bags", "case"}
_NUM = r"(?:\d+(?:[.,]\d+)?(?:-\d+/\d+)?|\d+/\d+|\.\d+)"
_RE_NUM = re.compile(rf"^{_NUM}$")
_RE_DIM = re.compile(rf"^{_NUM}(?:x{_NUM})+(?:in|ft|\"|')?\.?$")
_RE_ATTACHED = re.compile(rf"^({_NUM})-?([a-z\"'.]+)$")
_RE_MODEL = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9][a-z0-9\-./#]{2,}$")


def _unit(tok: str) -> str:
    return tok.rstrip(".,").lower() if tok not in ('"', "''", "'") else tok


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The mining tokenizer's light plural stem of one word (``batteries`` -> ``battery``)."""
    from relgrade.mining.tokenize import _stem

    w = word.lower().strip(".,;:()[]!?\"'")
    return _stem(w) if w.isalpha() else w


def classify_numeric(tokens: list[str], i: int) -> tuple[str, int] | None:
    """``(type, length)`` of a size / count / power / model span starting at token ``i``,
    or None. Patterns: ``30 in``, ``1/2 in.``, ``2x4x8``, ``2 x 4``, ``20v``, ``18 volt``,
    ``10-pack``, ``set of 4``, ``3.0ah``, ``dw059b``."""
    t = tokens[i].lower()
    nxt = _unit(tokens[i + 1]) if i + 1 < len(tokens) else ""
    if t == "set" and nxt == "of" and i + 2 < len(tokens) and _RE_NUM.match(tokens[i + 2]):
        return "COUNT", 3
    if _RE_DIM.match(t):
        return "SIZE", 1
    if _RE_NUM.match(t.rstrip(".")):
        if nxt == "x" and i + 2 < len(tokens) and _RE_NUM.match(tokens[i + 2].rstrip(".")):
            n = 3
            if i + 3 < len(tokens) and _unit(tokens[i + 3]) in SIZE_UNITS - {"x"}:
                n = 4
            return "SIZE", n
        if nxt in POWER_UNITS:
            return "POWER", 2
        if nxt in COUNT_UNITS:
            return "COUNT", 2
        if nxt in SIZE_UNITS - {"x"}:
            return "SIZE", 2
        return None
    m = _RE_ATTACHED.match(t)
    if m:
        u = _unit(m.group(2))
        if u in POWER_UNITS:
            return "POWER", 1
        if u in COUNT_UNITS:
            return "COUNT", 1
        if u in SIZE_UNITS or u in ('"', "'"):
            return "SIZE", 1
    if t.endswith('"') and _RE_NUM.match(t[:-1]):
        return "SIZE", 1
    if _RE_MODEL.match(t) and not t.startswith("#"):
        return "MODEL", 1
    return None


def _deletes(w: str) -> set[str]:
    return {w[:k] + w[k + 1:] for k in range(len(w))}


_TITLE_CUT = re.compile(r"\s(?:in|with|for|and|by|includes|featuring)\s(?=[a-z])|\s[-–(,]|\s/\s|,|\(")
_FINISH = re.compile(r"\sin\s([a-z][a-z \-]{1,40}?)\s*(?:\(|$| with | - )")
_ALPHA = re.compile(r"^[a-z][a-z\-]*[a-z]$")


def title_head(title: str) -> tuple[str, ...]:
    """The last one to three alphabetic words of a title's main clause (its product type
    and the compound words before it)."""
    main = _TITLE_CUT.split(" " + title.lower(), maxsplit=1)[0]
    words = [w.strip(".,;:") for w in main.split()]
    tail: list[str] = []
    for w in reversed(words):
        if not _ALPHA.match(w) or len(w) < 3:
            break
        tail.insert(0, w)
        if len(tail) == 3:
            break
    return tuple(tail)


@dataclass
class Lexicon:
    """Dictionaries mined from a catalog (token tuples in lower case; type words stemmed)."""

    brands: dict[tuple[str, ...], int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # stemmed head word -> titles
    type_compounds: dict[tuple[str, str], int] = field(default_factory=dict)  # (stemmed modifier, stemmed head)
    colors: dict[tuple[str, ...], int] = field(default_factory=dict)
    materials: dict[tuple[str, ...], int] = field(default_factory=dict)

    # ------------------------------------------------------------------ io
    def to_json(self) -> dict:
        return {k: [[list(e) if isinstance(e, tuple) else e, n] for e, n in sorted(getattr(self, k).items())]
                for k in ("brands", "types", "type_compounds", "colors", "materials")}

    @classmethod
    def from_json(cls, doc: dict) -> "Lexicon":
        def load(k, tup=True):
            return {(tuple(e) if tup else e): int(n) for e, n in doc[k]}

        return cls(brands=load("brands"), types=load("types", False), type_compounds=load("type_compounds"),
                   colors=load("colors"), materials=load("materials"))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> "Lexicon":
        return cls.from_json(json.loads(Path(path).read_text()))

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("brands", "types", "type_compounds", "colors", "materials")}

    # ------------------------------------------------------------------ lookups
    def __post_init__(self):
        self._fuzzy: dict[str, list[tuple[str, tuple[str, ...]]]] | None = None

    def phrase_types(self) -> list[tuple[str, dict[tuple[str, ...], int]]]:
        return [("BRAND", self.brands), ("COLOR", self.colors), ("MATERIAL", self.materials)]

    def fuzzy(self, word: str) -> tuple[str, tuple[str, ...]] | None:
        """The dictionary word one edit away from ``word`` (length >= 5), most frequent
        first: ``(kind, entry)`` with kind BRAND, COLOR, MATERIAL or TYPE."""
        if len(word) < 5 or not word.isalpha():
            return None
        if self._fuzzy is None:
            idx: dict[str, list] = defaultdict(list)
            entries = [(k, e, n) for k, d in self.phrase_types() for e, n in d.items() if len(e) == 1]
            entries += [("TYPE", (w,), n) for w, n in self.types.items()]
            for k, e, n in entries:
                w = e[0]
                if len(w) < 5:
                    continue
                for v in {w, *_deletes(w)}:
                    idx[v].append((n, k, e))
            self._fuzzy = {v: [(k, e) for _, k, e in sorted(c, key=lambda x: -x[0])] for v, c in idx.items()}
        for v in (word, *sorted(_deletes(word))):
            hit = self._fuzzy.get(v)
            if hit:
                return hit[0]
        return None


def build_lexicon(titles: Iterable[str], min_count: int = 3) -> Lexicon:
    """Mine brands, product types, colours and materials from catalog titles."""
    titles = [str(t) for t in titles if t]
    low = [t.lower().split() for t in titles]
    # ---- brands: prefixes
    prefix = [Counter() for _ in range(3)]
    inner = Counter()
    for ws in low:
        for n in range(min(3, len(ws))):
            prefix[n][tuple(ws[: n + 1])] += 1
        inner.update(set(ws[1:]))
    brands: dict[tuple[str, ...], int] = {}
    for p1, c1 in prefix[0].items():
        w = p1[0]
        if c1 < min_count or not re.search(r"[a-z]", w) or _RE_NUM.match(w) or w in _STOP:
            continue
        best, cb = p1, c1
        for n in (1, 2):
            conts = [(p, c) for p, c in prefix[n].items() if p[:n] == best]
            if not conts:
                break
            p, c = max(conts, key=lambda x: x[1])
            if c >= 0.6 * cb and c >= min_count and not re.search(r"\d", p[-1]) and p[-1] not in _STOP:
                best, cb = p, c
            else:
                break
        if len(best) == 1 and inner[w] > c1:
            continue  # a common word that happens to start some titles
        brands[tuple(x.strip(".,") for x in best)] = cb
    # ---- product types: title heads
    types: Counter = Counter()
    compounds: Counter = Counter()
    colors: Counter = Counter()
    for t in titles:
        head = title_head(t)
        if head:
            types[stem(head[-1])] += 1
            for a, b in zip(head, head[1:]):
                compounds[(stem(a), stem(b))] += 1
        m = _FINISH.search(t.lower() + " ")
        if m:
            ph = tuple(w for w in m.group(1).split() if w)
            if 1 <= len(ph) <= 3:
                colors[ph] += 1
    vocab = Counter(w.strip(".,()") for ws in low for w in set(ws))
    seed_colors = {tuple(c.split()): vocab[c.split()[-1]] for c in SEED_COLORS if vocab[c.split()[-1]] >= 1}
    colors_kept = {c: n for c, n in colors.items() if n >= min_count and not any(_RE_NUM.match(w) for w in c)}
    all_colors = {**colors_kept, **seed_colors}
    materials = {tuple(m.split()): vocab[m.split()[-1]] for m in SEED_MATERIALS if vocab[m.split()[-1]] >= 1}
    attr_words = {w for c in (*all_colors, *materials) for w in c}
    type_words = {w: n for w, n in types.items()
                  if n >= min_count and w not in _STOP and w not in attr_words and len(w) >= 3}
    comp = {k: n for k, n in compounds.items() if n >= min_count and k[0] not in attr_words and k[0] not in _STOP}
    return Lexicon(brands=brands, types=type_words, type_compounds=comp, colors=all_colors, materials=materials)


# --------------------------------------------------------------------------- projection onto queries
def _phrase_match(words: list[str], i: int, d: dict[tuple[str, ...], int], max_len: int = 3) -> int:
    for n in range(min(max_len, len(words) - i), 0, -1):
        if tuple(words[i:i + n]) in d:
            return n
    return 0


def _attribute_spans(tokens: list[str], lex: Lexicon, fuzzy: bool, seed_only: bool) -> list[Span | None]:
    """Per token: the non-type span starting there (or None), longest match first."""
    words = [t.lower().strip(",;:()") for t in tokens]
    colors = {tuple(c.split()) for c in SEED_COLORS} if seed_only else lex.colors
    materials = {tuple(m.split()) for m in SEED_MATERIALS} if seed_only else lex.materials
    spans: list[Span] = []
    i = 0
    while i < len(words):
        num = classify_numeric(words, i)
        if num:
            kind, n = num
            spans.append((i, i + n, kind))
            i += n
            continue
        best = None
        for kind, d in (("BRAND", lex.brands), ("COLOR", colors), ("MATERIAL", materials)):
            n = _phrase_match(words, i, d)
            if not n or (best is not None and n < best[1]):
                continue
            if best is not None and n == best[1]:  # a word both a colour and a material
                color_first = tuple(words[i:i + n]) in _COLOR_FIRST
                if (kind == "MATERIAL" and color_first) or best[0] == "BRAND":
                    continue
            best = (kind, n)
        if best:
            spans.append((i, i + best[1], best[0]))
            i += best[1]
            continue
        if fuzzy and stem(words[i]) not in lex.types:
            hit = lex.fuzzy(words[i])
            if hit and hit[0] != "TYPE":
                spans.append((i, i + 1, hit[0]))
        i += 1
    return spans


def _is_type_word(w: str, lex: Lexicon, fuzzy: bool) -> bool:
    if not w.isalpha() or w in _STOP:
        return False
    if stem(w) in lex.types:
        return True
    if fuzzy:
        hit = lex.fuzzy(w)
        return bool(hit and hit[0] == "TYPE")
    return False


def head_type_span(tokens: list[str], taken: set[int], lex: Lexicon, fuzzy: bool = True) -> Span | None:
    """The one head product type: the rightmost type word before the first preposition
    (else the rightmost one), extended left over the compound words that name it
    (``shower curtain rod``), never over an attribute."""
    words = [t.lower().strip(",;:()") for t in tokens]
    cut = next((i for i, w in enumerate(words) if w in PREPOSITIONS and i > 0), len(words))
    cands = [i for i in range(len(words)) if i not in taken and _is_type_word(words[i], lex, fuzzy)]
    before = [i for i in cands if i < cut]
    if not (before or cands):
        return None
    head = (before or cands)[-1]
    start = head
    while start - 1 >= 0 and start - 1 not in taken and head - start < 2:
        w = words[start - 1]
        if not (w.isalpha() and w not in _STOP):
            break
        if (stem(w), stem(words[start])) in lex.type_compounds or (
                _is_type_word(w, lex, fuzzy) and (stem(w), stem(words[head])) in lex.type_compounds):
            start -= 1
            continue
        break
    return (start, head + 1, "TYPE")


def weak_spans(tokens: list[str], lex: Lexicon) -> list[Span]:
    """The weak labels of one query (see the module docstring)."""
    spans = _attribute_spans(tokens, lex, fuzzy=True, seed_only=False)
    taken = {i for s, e, _ in spans for i in range(s, e)}
    head = head_type_span(tokens, taken, lex, fuzzy=True)
    return sorted(spans + ([head] if head else []))


def weak_tags(tokens: list[str], lex: Lexicon) -> list[str]:
    return tags_from_spans(len(tokens), weak_spans(tokens, lex))


def dictionary_spans(tokens: list[str], lex: Lexicon) -> list[Span]:
    """The baseline: exact brand / seed colour / seed material lookups and the number
    patterns; every other word that is a catalog product type is ``TYPE`` (runs merged)."""
    spans = _attribute_spans(tokens, lex, fuzzy=False, seed_only=True)
    taken = {i for s, e, _ in spans for i in range(s, e)}
    words = [t.lower().strip(",;:()") for t in tokens]
    i = 0
    while i < len(words):
        if i not in taken and _is_type_word(words[i], lex, fuzzy=False):
            j = i
            while j + 1 < len(words) and j + 1 not in taken and _is_type_word(words[j + 1], lex, fuzzy=False):
                j += 1
            spans.append((i, j + 1, "TYPE"))
            i = j + 1
        else:
            i += 1
    return sorted(spans)


def dictionary_tags(tokens: list[str], lex: Lexicon) -> list[str]:
    return tags_from_spans(len(tokens), dictionary_spans(tokens, lex))
