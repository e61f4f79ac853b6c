"""Great Expectations' Data Docs work offline (validation/docs.py ``localize_data_docs``):
the scripts and styles GX's templates load from CDNs are vendored
(validation/static/vendor/), copied into the site's ``static/vendor/`` and the pages point
at them. Checked in headless Chromium with no network: every request stays on the disk,
the index's bootstrap-table lists every validation, and a failed validation's page shows
the failing expectation."""
from __future__ import annotations

import json
import re
from pathlib import Path

import great_expectations
import pandas as pd
import pytest

from relgrade.config import load_config
from validation.docs import CDN, GX_ASSETS, GX_IMAGES, VENDOR, localize
from validation.gate import ValidationFailed, validate

TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
LOADS = re.compile(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="(https?://[^"{]+)"')


def _catalog(ids):
    return pd.DataFrame({"item_id": ids, "title": ["a title"] * len(ids), "description": None, "brand": None,
                         "category": None, "attributes": None})


def test_every_url_the_gx_templates_load_is_vendored():
    """Each script and stylesheet URL in GX's templates has a vendored file, and every
    vendored file is one the pages load (or the font its stylesheet draws the icons with):
    a GX upgrade that loads something new fails here."""
    urls = {u for f in TEMPLATES.glob("*.j2") for u in LOADS.findall(f.read_text())}
    assert urls, "no CDN URL found in GX's templates: has their layout changed?"
    assert urls - set(CDN) == set(), "loaded by GX's templates but not vendored"
    for local in CDN.values():
        assert (VENDOR / local).is_file(), local
    shipped = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file()
               and not re.match(r"(README\.md|LICENSE(\.txt)?)$", p.name)}
    assert shipped - set(CDN.values()) == {"fontawesome-free-6.6.0/webfonts/fa-solid-900.woff2"}
    for pkg in {Path(v).parts[0] for v in CDN.values()}:
        assert any((VENDOR / pkg / n).is_file() for n in ("LICENSE", "LICENSE.txt")), f"{pkg} has no license"


def test_localize_points_every_load_at_the_site():
    page = ('<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
            '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-x"'
            ' crossorigin="anonymous"></script><img src="' + GX_ASSETS + 'logo-long.png?d=1&amp;dataContextId=2">'
            '<link rel="shortcut icon" href="../../../static/images/favicon.ico" type="image/x-icon"/>'
            '<a href="https://greatexpectations.io">GX</a>')
    out = localize(page, "../../")
    assert 'href="../../static/vendor/bootstrap-4.3.1/bootstrap.min.css"' in out
    assert '<script src="../../static/vendor/bootstrap-4.3.1/bootstrap.min.js"></script>' in out  # no integrity
    assert 'src="../../static/images/logo-long.png"' in out and 'href="../../static/images/favicon.ico"' in out
    assert '<a href="https://greatexpectations.io">' in out  # a link is not a load
    assert set(GX_IMAGES.values()) <= {p.name for p in (TEMPLATES.parent / "static" / "images").iterdir()}


@pytest.mark.integration
def test_the_offline_check_sees_a_cdn_load(tmp_path):
    """The browser helper's evidence is real: a page that loads from a CDN shows that
    request, and its failure, and the script's absence."""
    from browser import Browser

    page = tmp_path / "cdn.html"
    page.write_text('<!doctype html><script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
                    '<p id="p">x</p><script>document.getElementById("p").textContent = typeof jQuery;</script>')
    with Browser() as b:
        b.open(page)
        assert b.off_disk() == ["https://code.jquery.com/jquery-3.7.1.min.js"]
        assert [u for u, _ in b.failed] == b.off_disk()
        assert b.eval("document.getElementById('p').textContent") == "undefined"


@pytest.mark.integration
def test_gx_data_docs_render_offline_in_chromium(tmp_path):
    from browser import Browser

    cfg = load_config("quick", overrides={"data_root": str(tmp_path / "var"), "validation": {"gx_data_docs": True}})
    validate(_catalog(["1", "2"]), "catalog", cfg)
    with pytest.raises(ValidationFailed):
        validate(_catalog(["x", "x", "3"]), "catalog", cfg)
    runs = {r["run"]: r["success"] for r in json.loads((cfg.paths.validation_pages / "runs.json").read_text())}
    assert sorted(runs.values()) == [False, True]
    site = cfg.paths.data_docs
    assert (site / "static" / "vendor" / "jquery-3.7.1" / "jquery.min.js").is_file()
    for f in site.rglob("*.html"):  # no page loads anything from the network any more
        assert not LOADS.findall(f.read_text()), f

    with Browser() as b:
        b.open(site / "index.html")
        assert b.off_disk() == [] and b.failed == [] and b.errors == [], (b.off_disk(), b.failed, b.errors)
        assert any(u.endswith("/static/vendor/bootstrap-table-1.19.1/bootstrap-table.min.js") for u in b.requests)
        # the rows bootstrap-table drew: one per validation (newest first), one per suite
        rows = b.eval("""[...document.querySelectorAll('table tbody tr[data-index]')].map(tr => ({
            table: tr.closest('table').id, href: tr.getAttribute('data-href'), text: tr.innerText,
            failed: !!tr.querySelector('.ge-failed-icon'), passed: !!tr.querySelector('.ge-success-icon')}))""")
        validations = [r for r in rows if r["href"].startswith("validations/")]
        suites = [r for r in rows if r["href"].startswith("expectations/")]
        assert len(validations) == len(runs) == 2, rows
        for name, ok in runs.items():
            (row,) = [r for r in validations if name in r["text"]]
            assert (row["passed"], row["failed"]) == (ok, not ok), row
        assert [r["text"].strip() for r in suites] == ["catalog"]
        # styled: Bootstrap's sticky navbar, Font Awesome's solid face drawn for the status icons
        assert b.eval("getComputedStyle(document.querySelector('nav.navbar')).position") == "sticky"
        assert b.eval("""[...document.fonts].some(f => f.family.replace(/"/g, '') === 'Font Awesome 6 Free'
                                                    && f.weight === '900' && f.status === 'loaded')""")
        assert b.eval("document.querySelector('.navbar-brand img').naturalWidth") > 0  # GX's logo, from the site

        # the failed run's page, reached through the index's own row link
        failed = next(r for r in validations if r["failed"])
        b.requests.clear()
        b.open(b.eval(f"new URL({json.dumps(failed['href'])}, location.href).href"))
        assert b.off_disk() == [] and b.failed == [] and b.errors == [], (b.off_disk(), b.failed, b.errors)
        text = b.text()
        assert "Status: Failed" in text and "Unsuccessful Expectations 1" in text, text[:1500]
        # the failing expectation, drawn with its failed mark and the offending-row count
        bad = b.eval("""[...document.querySelectorAll('tr')].filter(tr => tr.querySelector('.fa-times'))
                        .map(tr => tr.innerText)""")
        assert len(bad) == 1 and "values must be unique" in bad[0] and "2 unexpected values" in bad[0], bad
        assert b.eval("getComputedStyle(document.querySelector('nav.navbar')).position") == "sticky"
