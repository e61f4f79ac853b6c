"""A tokenizer for product titles and product-search queries.

Generic word tokenizers (bm25s' default splits on ``\\w\\w+``) lose most of what makes
product text matchable: ``3/4 in. x 10 ft.`` becomes ``["10"]``, ``18v`` never meets
``18-Volt``, and a model code such as ``DCD771C2`` or ``RO-2000`` is either split into
noise or kept in one spelling only. The rules, in order (docs/mining.md has the table):

1. Unicode NFKD, accents dropped, lower case.
2. Inch and foot marks after a number (``10"``, ``8'``) become the words ``inch``,
   ``ft``; mixed numbers ``1-1/2`` and ``1 1/2`` become the single token ``1-1/2``;
   dimensions ``38x64`` / ``2 x 4`` lose the ``x``.
3. A number followed by a unit (with or without a space, hyphen or period:
   ``10 ft.``, ``10ft``, ``600-Watt``, ``18v``, ``6.2 cu. ft.``) gives the number and the
   canonical unit (``10 ft``, ``600 watt``, ``18 volt``, ``6.2 cuft``). Numbers drop a
   trailing ``.0`` (``3.0ah`` -> ``3 ah``).
4. Tokens are runs of letters/digits with inner ``.`` (decimals), ``/`` between digits
   (fractions) and ``-`` (hyphenation). A hyphenated token gives its parts; when it
   mixes letters and digits (a model code such as ``ro-2000``) it also gives the joined
   form (``ro2000``), so either spelling in a query matches.
5. English stop words, the preposition ``in`` (the unit is ``inch``) and single letters
   are dropped; a light plural stemmer maps ``batteries`` -> ``battery``,
   ``clamps`` -> ``clamp``, ``boxes`` -> ``box``.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

# canonical unit -> spellings (matched after a number, case-insensitive, optional period)
UNITS: dict[str, tuple[str, ...]] = {
    "inch": ("inches", "inch", "in"),
    "ft": ("feet", "foot", "ft"),
    "sqft": ("sq ft", "sq. ft", "sq.ft", "sqft", "square feet", "square foot", "sf"),
    "cuft": ("cu ft", "cu. ft", "cu.ft", "cuft", "cubic feet", "cubic foot", "cf"),
    "yd": ("yards", "yard", "yd"),
    "mm": ("millimeters", "millimeter", "mm"),
    "cm": ("centimeters", "centimeter", "cm"),
    "lb": ("pounds", "pound", "lbs", "lb"),
    "oz": ("ounces", "ounce", "fl oz", "fl. oz", "oz"),
    "gal": ("gallons", "gallon", "gal"),
    "qt": ("quarts", "quart", "qt"),
    "volt": ("volts", "volt", "v"),
    "watt": ("watts", "watt", "w"),
    "amp": ("amps", "amp", "a"),
    "ah": ("amp hours", "amp hour", "amp-hour", "ah"),
    "btu": ("btus", "btu"),
    "psi": ("psi",),
    "gpm": ("gpm",),
    "gpf": ("gpf",),
    "cfm": ("cfm",),
    "hp": ("horsepower", "hp"),
    "awg": ("gauge", "ga", "awg"),
    "pack": ("packs", "pack", "pk"),
    "piece": ("pieces", "piece", "pc", "pcs"),
    "light": ("lights", "light"),
    "gang": ("gang",),
    "tier": ("tiers", "tier"),
    "drawer": ("drawers", "drawer"),
    "door": ("doors", "door"),
    "shelf": ("shelves", "shelf"),
    "degree": ("degrees", "degree", "deg"),
    "mil": ("mil",),
    "grit": ("grit",),
    "count": ("count", "ct"),
}
_UNIT_OF: dict[str, str] = {}
for _canon, _spellings in UNITS.items():
    for _s in _spellings:
        _UNIT_OF[_s.replace(".", "").replace("-", " ")] = _canon

STOPWORDS = frozenset(
    """a an and are as at be but by for from has have in into is it its of on or that the
    their this to was were will with without x per w/ your you our""".split()
)

_NUM = r"(?<![a-z0-9.])(?:\d+-\d+/\d+|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
# 1-1/2 and 1 1/2 -> 1-1/2 (a mixed number is one size)
_MIXED = re.compile(r"(?<![\d.])(\d+)[\s-]+(\d+/\d+)(?![\d/])")
# 10" -> 10 inch ; 8' -> 8 ft (also typographic marks after NFKD)
_INCH_MARK = re.compile(r"(\d)\s*(?:\"|''|”|″)")
_FOOT_MARK = re.compile(r"(\d)\s*(?:'|’|′)(?![a-z])")
# dimensions: 38x64, 2 x 4, 3/4 in. x 10 ft.
_DIM_X = re.compile(r"(?:(?<=\d)\s*[x×*]|(?<=[\s.])[x×*])\s*(?=\.?\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_UNIT_ALT = "|".join(
    sorted((re.escape(s).replace(r"\ ", r"[\s.-]*").replace(r"\.", r"\.?") for s in _UNIT_OF), key=len, reverse=True)
)
# number, optional space/hyphen, unit, then not a letter/digit
_NUM_UNIT = re.compile(rf"({_NUM})[\s-]?({_UNIT_ALT})\.?(?![a-z0-9]|-\d)")
_LEAD_DOT = re.compile(r"(?<![a-z0-9.])\.(?=\d)")
_TOKEN = re.compile(r"[a-z0-9]+(?:[./-][a-z0-9]+)*")
_TRAIL_ZERO = re.compile(r"^(\d+)\.0+$")


def _unit_sub(m: re.Match) -> str:
    num, unit = m.group(1), m.group(2)
    key = re.sub(r"[\s.-]+", " ", unit).strip()
    canon = _UNIT_OF.get(key) or _UNIT_OF.get(key.replace(" ", ""), key)
    return f" {num} {canon} "


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


@lru_cache(maxsize=200_000)
def _stem(tok: str) -> str:
    """Light plural stemmer for alphabetic tokens (no dictionary, no over-stemming)."""
    if len(tok) <= 3 or not tok.isalpha():
        return tok
    if tok.endswith("ies") and len(tok) > 4:
        return tok[:-3] + "y"
    if tok.endswith(("sses", "xes", "ches", "shes", "zes")):
        return tok[:-2]
    if tok.endswith("s") and not tok.endswith(("ss", "us", "is", "ous")):
        return tok[:-1]
    return tok


def _number(tok: str) -> str:
    m = _TRAIL_ZERO.match(tok)
    if m:
        return m.group(1)
    if tok.startswith("."):
        return "0" + tok
    return tok


def _expand(tok: str) -> list[str]:
    """One raw token -> index tokens (parts of hyphenated words, joined model codes)."""
    if tok[0].isdigit() and re.fullmatch(r"\d+(?:\.\d+)?", tok):
        return [_number(tok)]
    if re.fullmatch(r"\d+/\d+|\d+-\d+/\d+", tok):  # fraction, mixed number
        return [tok]
    if "-" in tok or ("." in tok and not re.fullmatch(r"[\d.]+", tok)) or ("/" in tok):
        parts = [p for p in re.split(r"[./-]", tok) if p]
        out = [_number(p) if p.isdigit() else p for p in parts]
        joined = "".join(parts)
        has_digit = any(c.isdigit() for c in joined)
        has_alpha = any(c.isalpha() for c in joined)
        if has_digit and has_alpha and len(parts) > 1:
            out.append(joined)  # model code: hd-2000 -> hd, 2000, hd2000
        return out
    return [tok]


def normalize(text: str) -> str:
    """Rules 1-3: folded text with units, marks, mixed numbers and dimensions normalized."""
    t = _fold(str(text))
    t = _INCH_MARK.sub(r"\1 inch ", t)
    t = _FOOT_MARK.sub(r"\1 ft ", t)
    t = t.replace("”", " ").replace("“", " ").replace('"', " ")
    t = _THOUSANDS.sub("", t)
    t = _LEAD_DOT.sub("0.", t)
    t = _MIXED.sub(r"\1-\2", t)
    t = _DIM_X.sub(" ", t)
    t = _NUM_UNIT.sub(_unit_sub, t)
    return t


def tokenize(text: str | None) -> list[str]:
    """Product-text tokens for one string (see the module docstring for the rules)."""
    if text is None:
        return []
    out: list[str] = []
    for raw in _TOKEN.findall(normalize(text)):
        for tok in _expand(raw):
            if not tok or tok in STOPWORDS:
                continue
            if len(tok) == 1 and tok.isalpha():
                continue
            out.append(_stem(tok))
    return out


def tokenize_many(texts: Iterable[str | None]) -> list[list[str]]:
    return [tokenize(t) for t in texts]
