"""The validation pages (validation/docs.py): one offline page per gate run, an index of
runs, every value from the data escaped, and GX's own Data Docs free of raw values."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from relgrade.config import load_config
from validation.gate import ValidationFailed, validate

EVIL = "<script>alert(1)</script>"


def _catalog(ids):
    return pd.DataFrame({"item_id": ids, "title": ["a title"] * len(ids), "description": None, "brand": None,
                         "category": None, "attributes": None})


@pytest.mark.parametrize("gx_docs", [False, True])
def test_a_refused_batch_gets_an_escaped_offline_page(tmp_path, gx_docs):
    cfg = load_config("quick", overrides={"data_root": str(tmp_path / "var"),
                                          "validation": {"gx_data_docs": gx_docs}})
    ok = validate(_catalog(["1", "2"]), "catalog", cfg)
    assert ok.success and ok.data_docs.exists()
    with pytest.raises(ValidationFailed) as err:
        validate(_catalog([EVIL, EVIL, "3"]), "catalog", cfg)
    page = err.value.report.data_docs
    assert str(page) in str(err.value)
    text = page.read_text()
    assert EVIL not in text
    assert "FAILED" in text and "expect_column_values_to_be_unique".replace("expect_", "").replace("_", " ") in text
    # the offending rows are counted; their values are shown (escaped) only without GX Data Docs
    assert re.search(r"<td>2</td>", text)
    assert ("&lt;script&gt;alert(1)&lt;/script&gt;" in text) is (not gx_docs)
    assert "<script" not in text and "http://" not in text and "https://" not in text  # no JS, no CDN
    index = (cfg.paths.validation_pages / "index.html").read_text()
    assert index.count("<tr>") == 3  # header + two runs, newest first
    assert index.index("FAILED") < index.index("passed</td>")
    if gx_docs:
        for f in cfg.paths.data_docs.rglob("*.html"):
            assert EVIL not in f.read_text(), f


@pytest.mark.integration
def test_the_validation_pages_render_offline_in_chromium(tmp_path):
    """The index and a refused run's page as headless Chromium draws them, with no
    network: the screenshots are not blank and the rendered text names the suite, the
    verdict and the failed expectation."""
    from browser import ink, render

    cfg = load_config("quick", overrides={"data_root": str(tmp_path / "var")})
    validate(_catalog(["1", "2"]), "catalog", cfg)
    with pytest.raises(ValidationFailed) as err:
        validate(_catalog([EVIL, EVIL, "3"]), "catalog", cfg)
    for page, key in ((cfg.paths.validation_pages / "index.html", ["catalog", "FAILED", "passed"]),
                      (err.value.report.data_docs, ["catalog", "FAILED", "unique"])):
        shot = tmp_path / f"{page.stem}.png"
        text = render(page, shot)
        assert all(k in text for k in key), (page, text[:500])
        assert "alert(1)" not in text or "<script>alert(1)</script>" in text  # shown as text, never run
        assert ink(shot) > 0.005, f"{page}: the screenshot is blank"

