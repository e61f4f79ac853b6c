"""Adapters: Home Depot on the real bundled file, ESCI and WANDS on real-format fixtures,
bad inputs for every adapter, and the dataset registry."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from relgrade.adapters import ADAPTERS, limit_queries, load_dataset
from relgrade.adapters import contract, esci, homedepot, wands
from relgrade.adapters.common import normalize_query, query_id_of, split_bucket, split_of
from relgrade.config import REPO_ROOT, DatasetConfig
from relgrade.contract import ContractError

FIX = Path(__file__).resolve().parents[1] / "fixtures"
HD_ZIP = REPO_ROOT / "data" / "homedepot" / "train.csv.zip"
ESCI_EX = FIX / "esci_tiny" / "test-sample.parquet"
ESCI_PROD = FIX / "esci_tiny" / "sample-products.jsonl"
W_Q, W_P, W_L = (FIX / "wands" / n for n in ("query.csv", "product.csv", "label.csv"))


def _replace_line(src: Path, dst: Path, lineno: int, new: bytes) -> Path:
    lines = src.read_bytes().split(b"\n")
    lines[lineno - 1] = new
    dst.write_bytes(b"\n".join(lines))
    return dst


# --------------------------------------------------------------------------- Home Depot


@pytest.fixture(scope="module")
def hd():
    return homedepot.load(HD_ZIP, judged_at="2026-06-01T00:00:00Z")


@pytest.fixture(scope="module")
def hd_raw():
    return pd.read_csv(HD_ZIP, encoding="latin-1", dtype=str)


def test_homedepot_real_counts(hd, hd_raw):
    c, q, j = hd["catalog"], hd["queries"], hd["judgments"]
    # 74,067 rated rows; 5 pairs were rated under two spellings of one query and are
    # merged into one judgment (mean rating) -> 74,062 judgments
    assert len(hd_raw) == 74_067
    assert len(j) == 74_062
    assert len(c) == c["item_id"].nunique() == 54_667
    assert set(j["item_id"]) == set(c["item_id"])
    # 11,795 distinct raw search terms; relgrade normalizes case/whitespace, which merges
    # two pairs ("fence  mesh"/"fence mesh", "slide  bolt"/"slide bolt") -> 11,793 queries
    assert hd_raw["search_term"].nunique() == 11_795
    assert len(q) == q["query_id"].nunique() == 11_793
    assert q["query_id"].tolist() == q["text"].map(query_id_of).tolist()
    assert (j["source"] == "homedepot").all()
    assert c.loc[c["item_id"] == "100001", "title"].item() == "Simpson Strong-Tie 12-Gauge Angle"


def test_homedepot_grade_distribution(hd):
    j = hd["judgments"]
    assert j["grade"].value_counts().sort_index().to_dict() == {0: 5115, 1: 6793, 2: 27799, 3: 34355}
    assert j["raw_label"].value_counts()["3"] == 19_122  # 19,125 rows, 3 merged into "3|3" etc.
    assert j["raw_score"].between(1, 3).all()


def test_homedepot_duplicates(hd_raw):
    # no duplicated (search_term, product) pair as written ...
    assert not hd_raw.duplicated(["search_term", "product_uid"]).any()
    # ... but 5 once the query text is normalized (whitespace variants of one query)
    key = hd_raw["search_term"].map(query_id_of) + "|" + hd_raw["product_uid"]
    dups = hd_raw[key.duplicated(keep=False)]
    assert key.duplicated().sum() == 5
    assert set(dups["search_term"].map(normalize_query)) == {"fence mesh", "slide bolt"}
    assert sorted(dups["product_uid"].unique()) == ["102276", "104270", "106032", "115368", "146695"]


def test_homedepot_every_judgment_has_a_query_and_unique_key(hd):
    j = hd["judgments"]
    assert j["query_id"].notna().all()
    assert not j.duplicated(["query_id", "item_id"]).any()


@pytest.mark.parametrize(
    "rating,grade",
    [(1.0, 0), (1.33, 0), (1.49, 0), (1.5, 1), (4.5 / 3, 1), (1.67, 1), (2.0, 2), (2.33, 2),
     (2.5, 3), (2.67, 3), (3.0, 3)],
)
def test_homedepot_grade_rule_boundaries(rating, grade):
    assert homedepot.grade_from_rating(pd.Series([rating])).item() == grade


def test_split_rule_formula_and_invariance():
    for text in ["angle bracket", "Fence Mesh", "  deck  over ", "1/2 in. pvc"]:
        b = int(hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest(), 16) % 10
        assert split_bucket(text) == b
        assert split_of(text) == {0: "test", 1: "dev"}.get(b, "train")
    for a, b in [("fence mesh", "Fence  Mesh"), ("slide bolt", "  SLIDE\tbolt\n"), ("a b", "A B ")]:
        assert split_of(a) == split_of(b) and query_id_of(a) == query_id_of(b)
    # all three outcomes are reachable
    assert {split_of(f"query {i}") for i in range(60)} == {"train", "dev", "test"}


def test_homedepot_split_shares(hd):
    q = hd["queries"]
    counts = q["split"].value_counts().to_dict()
    assert counts == {"train": 9441, "dev": 1144, "test": 1208}
    shares = q["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.01
    assert abs(shares["dev"] - 0.1) < 0.01 and abs(shares["test"] - 0.1) < 0.01
    assert (q["split"] == q["text"].map(split_of)).all()


HD_HEADER = b"id,product_uid,product_title,search_term,relevance\n"
HD_ROWS = [b'2,100001,"Simpson Strong-Tie 12-Gauge Angle",angle bracket,3\n',
           b'3,100001,"Simpson Strong-Tie 12-Gauge Angle",l bracket,2.5\n',
           b'9,100002,"BEHR Premium Textured DeckOver 1-gal.",deck over,3\n']


def test_homedepot_bad_inputs(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ContractError, match="empty file"):
        homedepot.load(empty)
    nocol = tmp_path / "nocol.csv"
    nocol.write_bytes(b"id,product_uid,product_title,search_term\n2,100001,x,angle bracket\n")
    with pytest.raises(ContractError, match=r"missing column\(s\) \['relevance'\]"):
        homedepot.load(nocol)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(HD_HEADER + HD_ROWS[0] + b"3,100001,\xff\xfe,l bracket,2.5\n" + HD_ROWS[2])
    with pytest.raises(ContractError, match="line 3 is not valid utf-8"):
        homedepot.load(bad, encoding="utf-8")
    good = tmp_path / "good.csv"
    good.write_bytes(HD_HEADER + b"".join(HD_ROWS))
    out = homedepot.load(good, encoding="utf-8")
    assert out["judgments"]["grade"].tolist() == [3, 3, 3]
    assert len(out["queries"]) == 3 and len(out["catalog"]) == 2


# --------------------------------------------------------------------------- ESCI


@pytest.fixture(scope="module")
def es():
    return esci.load(ESCI_EX, ESCI_PROD, judged_at="2026-06-01T00:00:00Z")


def test_esci_fixture(es):
    c, q, j = es["catalog"], es["queries"], es["judgments"]
    src = pd.read_parquet(ESCI_EX)
    assert len(j) == 16 and len(c) == 16 and len(q) == 1
    assert j["grade"].value_counts().to_dict() == {0: 7, 2: 6, 3: 3}
    assert j["raw_label"].value_counts().to_dict() == {"I": 7, "S": 6, "E": 3}
    assert (j["grade"] == j["raw_label"].map({"E": 3, "S": 2, "C": 1, "I": 0})).all()
    assert j["raw_score"].isna().all() and (j["source"] == "esci").all()
    assert j["item_id"].tolist() == ("esci:" + src["product_id"]).tolist()
    row = j.set_index("item_id").loc["esci:B08PB9TTKT"]
    assert row["raw_label"] == "E" and row["grade"] == 3
    qr = q.iloc[0]
    assert qr["query_id"] == "esci:535" and qr["text"] == "06 bmw 325i radio oem not navigation system"
    # relgrade's split rule, not the source's split column (which says 'test')
    assert qr["split"] == split_of(qr["text"]) == "train" and src["split"].unique().tolist() == ["test"]


def test_esci_products_from_vespa_documents(es):
    c = es["catalog"].set_index("item_id")
    first = c.loc["esci:B08VSJGP1N"]
    assert first["title"].startswith("Apple Carplay Double Din Car Stereo, Rimoody 7 Inch")
    assert first["description"].startswith("<b>Features</b><br>")
    assert first["brand"] == "Rimoody" and first["category"] is None
    attrs = json.loads(first["attributes"])
    assert attrs["color"] == "black" and attrs["locale"] == "us" and attrs["bullets"].startswith("【2 Din")
    # Vespa feeds write Python's None as the string "None": that is a null description
    assert c.loc["esci:B0742BZXC2", "description"] is None
    assert c.loc["esci:B0742BZXC2", "brand"] == "Nilight"
    assert json.loads(c.loc["esci:B08SHMLP5S", "attributes"]).get("color") is None


def test_esci_flat_product_records(tmp_path, es):
    flat = tmp_path / "products.jsonl"
    with flat.open("w", encoding="utf-8") as f:
        for line in ESCI_PROD.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)["fields"]
            f.write(json.dumps({"product_id": d["id"], "product_title": d["title"],
                                "product_description": d["description"], "product_brand": d["brand"],
                                "product_locale": d["locale"]}) + "\n")
    out = esci.load(ESCI_EX, flat)
    a = out["catalog"].sort_values("item_id").reset_index(drop=True)
    b = es["catalog"].sort_values("item_id").reset_index(drop=True)
    assert a["title"].tolist() == b["title"].tolist()
    assert a["brand"].tolist() == b["brand"].tolist()
    assert a["description"].tolist() == b["description"].tolist()


def test_esci_missing_product_is_an_error(tmp_path):
    lines = ESCI_PROD.read_text(encoding="utf-8").splitlines()
    kept = [l for l in lines if "B0007KPRIS" not in l and "B01M0SFMIH" not in l]
    assert len(kept) == 14
    p = tmp_path / "products.jsonl"
    p.write_text("\n".join(kept) + "\n", encoding="utf-8")
    with pytest.raises(ContractError, match=r"2 judged product\(s\) missing.*B0007KPRIS.*B01M0SFMIH"):
        esci.load(ESCI_EX, p)


def test_esci_bad_products_file(tmp_path):
    bad = _replace_line(ESCI_PROD, tmp_path / "bad.jsonl", 5, b'{"put": "x", "fields": {"id": "\xff\xfe"}}')
    with pytest.raises(ContractError, match="line 5 is not valid utf-8"):
        esci.load(ESCI_EX, bad)
    broken = _replace_line(ESCI_PROD, tmp_path / "broken.jsonl", 3, b'{"put": "id:commerce:product::B08SHMLP5S", "fields": {')
    with pytest.raises(ContractError, match="line 3 is not valid JSON"):
        esci.load(ESCI_EX, broken)
    noid = _replace_line(ESCI_PROD, tmp_path / "noid.jsonl", 2, b'{"title": "no id here"}')
    with pytest.raises(ContractError, match="line 2: product has no id"):
        esci.load(ESCI_EX, noid)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    with pytest.raises(ContractError, match="empty file"):
        esci.load(ESCI_EX, empty)


def test_esci_bad_examples_file(tmp_path):
    src = pd.read_parquet(ESCI_EX)
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(ContractError, match="empty file"):
        esci.load(empty, ESCI_PROD)
    notpq = tmp_path / "x.parquet"
    notpq.write_bytes(b"query,product_id\nfoo,B0\n")
    with pytest.raises(ContractError, match="cannot read as parquet"):
        esci.load(notpq, ESCI_PROD)
    nolabel = tmp_path / "nolabel.parquet"
    src.drop(columns=["esci_label"]).to_parquet(nolabel)
    with pytest.raises(ContractError, match=r"missing column\(s\) \['esci_label'\]"):
        esci.load(nolabel, ESCI_PROD)
    badlabel = tmp_path / "badlabel.parquet"
    src.assign(esci_label=src["esci_label"].where(src.index != src.index[2], "X")).to_parquet(badlabel)
    with pytest.raises(ContractError, match=r"unknown esci_label value\(s\) \['X'\]"):
        esci.load(badlabel, ESCI_PROD)


def test_esci_locale_filter(tmp_path):
    src = pd.read_parquet(ESCI_EX)
    es_only = tmp_path / "es.parquet"
    src.assign(product_locale="es").to_parquet(es_only)
    with pytest.raises(ContractError, match=r"no examples for locale 'us'; locales present: \['es'\]"):
        esci.load(es_only, ESCI_PROD)
    mixed = tmp_path / "mixed.parquet"
    src.assign(product_locale=["us"] * 10 + ["es"] * 6).to_parquet(mixed)
    assert len(esci.load(mixed, ESCI_PROD)["judgments"]) == 10
    assert len(esci.load(ESCI_EX, ESCI_PROD, locale=None)["judgments"]) == 16


# --------------------------------------------------------------------------- WANDS


@pytest.fixture(scope="module")
def wd():
    return wands.load(W_Q, W_P, W_L, judged_at="2026-06-01T00:00:00Z")


def test_wands_fixture(wd):
    c, q, j = wd["catalog"], wd["queries"], wd["judgments"]
    assert len(j) == 14
    assert j["raw_label"].value_counts().to_dict() == {"Exact": 5, "Partial": 5, "Irrelevant": 4}
    assert (j["grade"] == j["raw_label"].map({"Exact": 3, "Partial": 1, "Irrelevant": 0})).all()
    assert j["raw_score"].isna().all() and (j["source"] == "wands").all()
    assert q.set_index("query_id")["text"].to_dict() == {
        "wands:10": "king poster bed", "wands:26": "leather chairs", "wands:34": "bar stool with backrest"}
    assert (q["split"] == q["text"].map(split_of)).all()
    # judged products only: 1612 (a lamp nobody judged) is not in the catalog
    assert len(c) == 11 and "wands:1612" not in set(c["item_id"])
    assert set(j["item_id"]) == set(c["item_id"]) and set(j["query_id"]) == set(q["query_id"])
    g = j.set_index(["query_id", "item_id"])["grade"]
    assert g[("wands:34", "wands:1410")] == 3 and g[("wands:26", "wands:1410")] == 1


def test_wands_catalog_fields(wd):
    c = wd["catalog"].set_index("item_id")
    bed = c.loc["wands:1201"]
    assert bed["title"] == "arlo solid wood four poster bed"
    assert bed["category"] == "Furniture > Bedroom Furniture > Beds & Headboards > Beds"
    assert bed["brand"] is None and bed["description"].startswith("this four poster bed")
    a = json.loads(bed["attributes"])
    assert a["product_class"] == "Beds" and a["rating_count"] == 212 and a["average_rating"] == 4.5
    assert a["features"] == {"overallwidth-sidetoside": "80.5", "dsprimaryproductstyle": "traditional",
                             "bedsize": "king", "framematerial": "solid wood", "numberofposts": "4"}
    assert json.loads(c.loc["wands:1306", "attributes"])["product_class"] == "Teen Lounge Furniture|Accent Chairs"
    rug = c.loc["wands:1511"]
    ra = json.loads(rug["attributes"])
    assert pd.isna(rug["description"]) and rug["category"] == "Rugs > Area Rugs"
    assert ra["rating_count"] is None and ra["average_rating"] is None
    assert ra["features"] == {"rugsize": "5' x 8'", "pileheight": "low pile"}  # empty key dropped


def test_wands_parse_features():
    assert wands.parse_features("a:1|b : x y| : orphan|noval|a:2") == {"a": "1", "b": "x y"}
    assert wands.parse_features(None) == {} and wands.parse_features(float("nan")) == {}


def test_wands_readme_column_spelling(tmp_path, wd):
    p = tmp_path / "product.csv"
    p.write_bytes(W_P.read_bytes().replace(b"category hierarchy", b"category_hierarchy", 1))
    out = wands.load(W_Q, p, W_L)
    assert out["catalog"]["category"].tolist() == wd["catalog"]["category"].tolist()


def test_wands_referential_and_label_errors(tmp_path):
    lab = W_L.read_bytes()
    bad_p = tmp_path / "l1.csv"
    bad_p.write_bytes(lab + b"9000\t10\t99999\tExact\n")
    with pytest.raises(ContractError, match=r"1 labelled product id\(s\) not found.*99999"):
        wands.load(W_Q, W_P, bad_p)
    bad_q = tmp_path / "l2.csv"
    bad_q.write_bytes(lab + b"9001\t4242\t1201\tExact\n")
    with pytest.raises(ContractError, match=r"1 labelled query id\(s\) not found.*4242"):
        wands.load(W_Q, W_P, bad_q)
    bad_l = tmp_path / "l3.csv"
    bad_l.write_bytes(lab + b"9002\t10\t1612\tSomewhat\n")
    with pytest.raises(ContractError, match=r"unknown label value\(s\) \['Somewhat'\]"):
        wands.load(W_Q, W_P, bad_l)
    dup = tmp_path / "p.csv"
    lines = W_P.read_bytes().split(b"\n")
    dup.write_bytes(b"\n".join(lines + [lines[1]]))
    with pytest.raises(ContractError, match=r"duplicated product_id.*'1201'"):
        wands.load(W_Q, dup, W_L)


@pytest.mark.parametrize("which", ["query", "product", "label"])
def test_wands_bad_inputs(tmp_path, which):
    files = {"query": W_Q, "product": W_P, "label": W_L}
    src = files[which]

    def run(path):
        args = dict(files)
        args[which] = path
        return wands.load(args["query"], args["product"], args["label"])

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ContractError, match="empty file"):
        run(empty)
    # drop a required column from every line
    col = {"query": "query_id", "product": "product_id", "label": "label"}[which]
    rows = [l.split("\t") for l in src.read_text(encoding="utf-8").splitlines()]
    k = rows[0].index(col)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("\n".join("\t".join(r[:k] + r[k + 1:]) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(ContractError, match=rf"missing column\(s\) \['{col}'\]"):
        run(nocol)
    bad = _replace_line(src, tmp_path / "bad.csv", 4, src.read_bytes().split(b"\n")[3] + b"\xff\xfe")
    with pytest.raises(ContractError, match="line 4 is not valid utf-8"):
        run(bad)


# --------------------------------------------------------------------------- registry


def test_registry():
    assert ADAPTERS == {"homedepot": homedepot.load, "esci": esci.load, "wands": wands.load, "contract": contract.load}


def test_load_dataset_homedepot_max_queries(hd):
    ds = DatasetConfig(max_queries=50)
    out = load_dataset(ds)
    q, j, c = out["queries"], out["judgments"], out["catalog"]
    assert list(q.columns) == ["query_id", "text", "split"]
    assert sorted(q["query_id"]) == sorted(hd["queries"]["query_id"])[:50]
    assert set(j["query_id"]) == set(q["query_id"])
    assert set(c["item_id"]) == set(j["item_id"])
    full = hd["judgments"]
    assert len(j) == full["query_id"].isin(set(q["query_id"])).sum()
    assert str(j["grade"].dtype) == "int8" and str(j["judged_at"].dtype) == "datetime64[us, UTC]"
    assert (j["judged_at"] == pd.Timestamp("2026-06-01", tz="UTC")).all()
    assert list(c.columns) == ["item_id", "title", "description", "brand", "category", "attributes"]


def test_limit_queries_ignores_row_order(wd):
    a = limit_queries(wd, 2)
    shuffled = {k: v.sample(frac=1, random_state=3) for k, v in wd.items()}
    b = limit_queries(shuffled, 2)
    assert sorted(a["queries"]["query_id"]) == sorted(b["queries"]["query_id"]) == ["wands:10", "wands:26"]
    assert set(a["catalog"]["item_id"]) == set(b["catalog"]["item_id"]) == {
        "wands:1201", "wands:1202", "wands:1203", "wands:1204",
        "wands:1305", "wands:1306", "wands:1307", "wands:1410", "wands:1511"}
    with pytest.raises(ContractError, match="max_queries must be >= 1"):
        limit_queries(wd, 0)


def test_load_dataset_wands_and_esci():
    rel = lambda p: str(p.relative_to(REPO_ROOT))  # relative paths resolve against the repo
    w = load_dataset(DatasetConfig(adapter="wands", path=rel(W_Q), products_path=rel(W_P),
                                   labels_path=rel(W_L), encoding="utf-8"))
    assert len(w["judgments"]) == 14 and len(w["queries"]) == 3 and len(w["catalog"]) == 11
    assert w["judgments"]["grade"].tolist()[:4] == [3, 1, 1, 0]
    e = load_dataset(DatasetConfig(adapter="esci", path=str(ESCI_EX), products_path=str(ESCI_PROD),
                                   encoding="utf-8"))
    assert len(e["judgments"]) == 16 and e["queries"]["query_id"].tolist() == ["esci:535"]
    assert e["catalog"]["title"].notna().all()


def test_load_dataset_missing_paths():
    with pytest.raises(ContractError, match=r"'esci' needs dataset.products_path"):
        load_dataset(DatasetConfig(adapter="esci", path=str(ESCI_EX)))
    with pytest.raises(ContractError, match=r"'wands' needs dataset.products_path, dataset.labels_path"):
        load_dataset(DatasetConfig(adapter="wands", path=str(W_Q)))
    with pytest.raises(ContractError, match="input file not found"):
        load_dataset(DatasetConfig(path="data/nope/train.csv"))


def test_esci_products_parquet(tmp_path, es):
    # the official shopping_queries_dataset_products.parquet layout, with a second locale
    rows = [json.loads(l)["fields"] for l in ESCI_PROD.read_text(encoding="utf-8").splitlines()]
    prod = pd.DataFrame({
        "product_id": [r["id"] for r in rows] + ["B08VSJGP1N"],
        "product_title": [r["title"] for r in rows] + ["Autorradio Apple Carplay doble DIN"],
        "product_description": [None if r["description"] == "None" else r["description"] for r in rows] + [None],
        "product_bullet_point": [r["bullets"] for r in rows] + [None],
        "product_brand": [r["brand"] for r in rows] + ["Rimoody"],
        "product_color": [r["color"] for r in rows] + [None],
        "product_locale": ["us"] * len(rows) + ["es"],
    })
    path = tmp_path / "products.parquet"
    prod.to_parquet(path)
    out = esci.load(ESCI_EX, path)  # locale 'us' drops the Spanish record of the same ASIN
    a = out["catalog"].sort_values("item_id").reset_index(drop=True)
    b = es["catalog"].sort_values("item_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ContractError, match=r"\['B08VSJGP1N'\] have conflicting records"):
        esci.load(ESCI_EX, path, locale=None)


def test_html_entities_are_decoded_at_ingest():
    """Scraped titles keep entities (`Thompson&#39;s`, `&amp;`): ingest decodes them once,
    leaves other text alone and is idempotent; the bundled data holds such titles."""
    from relgrade.ingest import decode_entities

    cat = pd.DataFrame({"item_id": ["1", "2", "3", "4"],
                        "title": ["Thompson&#39;s Water Seal", "Nuts &amp; Bolts 1/4&quot; x 2", "AT&T cable", None],
                        "description": [None, "5&nbsp;ft", "plain", "x"], "brand": None, "category": None})
    q = pd.DataFrame({"query_id": ["a", "b"], "text": ["nuts &amp; bolts", "r&d"]})
    out = decode_entities({"catalog": cat, "queries": q})
    assert out["catalog"]["title"].tolist()[:3] == ["Thompson's Water Seal", 'Nuts & Bolts 1/4" x 2', "AT&T cable"]
    assert pd.isna(out["catalog"]["title"].iloc[3]) and out["catalog"]["description"].iloc[1] == "5\xa0ft"
    assert out["queries"]["text"].tolist() == ["nuts & bolts", "r&d"]
    again = decode_entities(out)
    pd.testing.assert_frame_equal(again["catalog"], out["catalog"])
    assert cat["title"].iloc[0] == "Thompson&#39;s Water Seal"  # the input is not modified
    hd = load_dataset(DatasetConfig())
    raw_has = hd["catalog"]["title"].str.contains(r"&#?\w+;", regex=True).sum()
    assert raw_has > 0  # the bundled source keeps entities ...
    dec = decode_entities(hd)["catalog"]["title"]
    assert dec.str.contains(r"&(?:#\d+|quot|amp|lt|gt);", regex=True).sum() < raw_has  # ... and ingest decodes them


# --------------------------------------------------------------------------- the contract's label scale


def _contract_files(tmp_path: Path, labels: list[str], suffix: str = ".csv") -> tuple[Path, Path]:
    cat = pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["a drill", "a saw", "a lamp"]})
    j = pd.DataFrame({"query": ["drill", "saw", "lamp"][:len(labels)], "item_id": ["1", "2", "3"][:len(labels)],
                      "label": labels})
    cp, jp = tmp_path / "catalog.csv", tmp_path / f"judgments{suffix}"
    cat.to_csv(cp, index=False)
    j.to_parquet(jp, index=False) if suffix == ".parquet" else j.to_csv(jp, index=False)
    return cp, jp


def test_a_label_outside_the_declared_scale_is_refused_with_its_line(tmp_path):
    cp, jp = _contract_files(tmp_path, ["3", "1", "7.5"])
    ds = DatasetConfig(adapter="contract", catalog_path=str(cp), judgments_path=str(jp), encoding="utf-8",
                       label_cuts=[1.5, 2.0, 2.5], label_range=[1, 3])
    with pytest.raises(ContractError, match=r"judgments.csv: 1 label\(s\) outside dataset.label_range \[1, 3\], "
                                            r"first on line 4: '7.5'"):
        load_dataset(ds)
    # without the declared scale the same file lands (7.5 is grade 3), as before
    assert load_dataset(ds.model_copy(update={"label_range": None}))["judgments"]["grade"].tolist() == [3, 0, 3]
    # the ends of the scale are inside it
    cp, jp = _contract_files(tmp_path, ["3", "1", "2"])
    assert load_dataset(ds)["judgments"]["grade"].tolist() == [3, 0, 2]
    # a Parquet file names the row; a `grade` column does not exempt a `label` beside it
    cp, jp = _contract_files(tmp_path, ["0.5", "2", "3"], ".parquet")
    with pytest.raises(ContractError, match=r"first on row 1: '0.5'"):
        load_dataset(ds.model_copy(update={"judgments_path": str(jp)}))
    j = pd.read_csv(_contract_files(tmp_path, ["3", "9", "2"])[1]).assign(grade=[3, 3, 2])
    j.to_csv(tmp_path / "graded.csv", index=False)
    with pytest.raises(ContractError, match="first on line 3: '9'"):
        contract.load(cp, tmp_path / "graded.csv", label_range=[1, 3])


def test_label_range_must_be_low_then_high():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="low < high"):
        DatasetConfig(adapter="contract", label_range=[3, 1])
    with pytest.raises(ValidationError):
        DatasetConfig(adapter="contract", label_range=[1, 2, 3])


def test_home_depot_paths_are_the_homedepot_adapters_defaults_only():
    hd = DatasetConfig()
    assert hd.path == "data/homedepot/train.csv.zip" and hd.blind_ratings_path == "data/homedepot/blind_ratings.csv"
    assert DatasetConfig(adapter="homedepot", blind_ratings_path=None).blind_ratings_path is None
    for adapter in ("contract", "esci", "wands"):
        ds = DatasetConfig(adapter=adapter)
        assert ds.path is None and ds.blind_ratings_path is None, adapter
