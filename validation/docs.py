"""Validation pages that read offline: one self-contained HTML page per validation run
and an index of every run, under ``<data_root>/reports/validation/``.

Great Expectations' own Data Docs (``reports/data_docs/``) print the data's unexpected
values unescaped (the gate keeps those values out of them), and GX's templates load their
CSS and JavaScript from CDNs: :func:`localize_data_docs` copies the vendored copies
(``validation/static/vendor/``, see its README) into the site's ``static/vendor/`` and
points the pages at them, so the Data Docs also render from disk with no network.
These pages have inline CSS and no JavaScript; every value
from the data is escaped; each check says in words what it checks (``NOTES`` for the
``chk_*`` columns the suites compute, GX's expectation type otherwise); runs are named
``<suite> <UTC time>``.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

from relgrade.util import utc_now

# what each computed check column means (validation/suites.py computes them)
NOTES = {
    "chk_query_known": "every query id is in the queries table",
    "chk_item_known": "every item id is in the catalog",
    "chk_seconds_in_future": "no timestamp is later than now (plus the allowed skew)",
    "chk_before_cut": "every event happened before the cut (the mining snapshot)",
    "chk_prob_sum": "the grade probabilities of a row sum to 1",
    "chk_grade0": "random-pair probe: dev queries paired with uniform catalog items are graded 0",
    "chk_expected_grade_over_deep_band": "the top best-rank band's mean expected grade exceeds the deepest band's",
    "chk_judged_binary_agree": "published grades agree (relevant or not) with the human grade on union pairs that carry one",
    "chk_list_size": "union rows per training query within bounds",
    "chk_level_share": "no difficulty level holds more than its allowed share",
    "chk_gate_respected": "a gated preference only where the grade says relevant",
    "chk_query_not_excluded": "no test-split query in the training set",
    "chk_no_leak_retrieval_prior_fv": "no retrieval prior stored after the row's instant reached it",
    "chk_no_leak_relevance_grade_fv": "no grade stored after the row's instant reached it",
    "chk_no_leak_gated_engagement_fv": "no engagement stored after the row's instant reached it",
}
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;color:#222}
table{border-collapse:collapse;margin:.6em 0;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;
vertical-align:top;text-align:left}th{background:#f3f3f3}.ok{color:#1a7f37;font-weight:bold}
.fail{color:#c62828;font-weight:bold}.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff}
.badge.ok{background:#1a7f37}.badge.fail{background:#c62828}code{background:#f6f6f6;padding:0 3px}"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def describe(result: dict) -> str:
    """In words: what one expectation checks."""
    cfg = result["expectation_config"]
    kw = cfg.get("kwargs", {})
    col = kw.get("column") or ",".join(kw.get("column_list") or []) or \
        (f"{kw.get('column_A')}, {kw.get('column_B')}" if kw.get("column_A") else "")
    note = (cfg.get("notes") or NOTES.get(col or "", "")) or ""
    text = cfg["type"].replace("expect_", "").replace("_", " ")
    bounds = [f"{k} {kw[k]}" for k in ("min_value", "max_value") if kw.get(k) is not None]
    if kw.get("value_set") is not None:
        bounds.append(f"in {kw['value_set']}")
    return f"{note + ' - ' if note else ''}{text}" + (f" ({', '.join(bounds)})" if bounds else "")


def write_run_page(out_dir: Path, suite: str, run_name: str, rows: int, result: dict) -> Path:
    """One validation run as a page; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = bool(result["success"])
    body = []
    for r in result["results"]:
        cfg = r["expectation_config"]
        kw = cfg.get("kwargs", {})
        res = r.get("result") or {}
        col = kw.get("column") or ",".join(kw.get("column_list") or []) or kw.get("column_A") or ""
        observed = res.get("observed_value")
        unexpected = res.get("unexpected_count")
        sample = res.get("partial_unexpected_list") or []
        body.append("<tr>" + "".join([
            f"<td class=\"{'ok' if r['success'] else 'fail'}\">{'passed' if r['success'] else 'FAILED'}</td>",
            f"<td><code>{html.escape(str(col))}</code></td>",
            f"<td>{html.escape(describe(r))}</td>",
            f"<td>{html.escape('' if observed is None else json.dumps(observed, default=str)[:200])}</td>",
            f"<td>{'' if unexpected is None else int(unexpected)}</td>",
            f"<td>{html.escape(', '.join(map(str, sample[:10])))}</td>",
        ]) + "</tr>")
    n_ok = sum(1 for r in result["results"] if r["success"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(run_name)}</title>
<style>{STYLE}</style></head><body>
<p><a href="index.html">All validation runs</a></p>
<h1>{html.escape(suite)} <span class="badge {'ok' if ok else 'fail'}">{'passed' if ok else 'FAILED'}</span></h1>
<p>Run <b>{html.escape(run_name)}</b>: {n_ok} of {len(result['results'])} expectations met on {rows} rows.
{'' if ok else 'The batch was refused: nothing was written.'}</p>
<table><tr><th>result</th><th>column</th><th>what it checks</th><th>observed</th><th>unexpected rows</th>
<th>examples of unexpected values</th></tr>{''.join(body)}</table></body></html>"""
    path = out_dir / f"{_slug(run_name)}.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    _append_index(out_dir, {"suite": suite, "run": run_name, "page": path.name, "success": ok, "rows": rows,
                            "met": n_ok, "evaluated": len(result["results"]),
                            "at": utc_now().isoformat(timespec="seconds")})
    return path


def _append_index(out_dir: Path, entry: dict, keep: int = 500) -> None:
    ledger = out_dir / "runs.json"
    runs = json.loads(ledger.read_text()) if ledger.exists() else []
    runs = [entry] + [r for r in runs if r["page"] != entry["page"]]
    runs = runs[:keep]
    tmp = ledger.with_name(".runs.json.tmp")
    tmp.write_text(json.dumps(runs, indent=1))
    tmp.replace(ledger)
    rows = "".join(
        f"<tr><td class=\"{'ok' if r['success'] else 'fail'}\">{'passed' if r['success'] else 'FAILED'}</td>"
        f"<td>{html.escape(r['suite'])}</td><td><a href=\"{html.escape(r['page'])}\">{html.escape(r['run'])}</a></td>"
        f"<td>{r['met']}/{r['evaluated']}</td><td>{r['rows']}</td><td>{html.escape(r['at'])}</td></tr>" for r in runs)
    n_fail = sum(1 for r in runs if not r["success"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>relgrade validation runs</title>
<style>{STYLE}</style></head><body><h1>Validation runs</h1>
<p>{len(runs)} runs, {n_fail} refused. Every table and feature batch is validated before it is written; a refused
batch lands nowhere. Great Expectations' own Data Docs: <a href="../data_docs/index.html">reports/data_docs</a>
(they work offline too).</p>
<table><tr><th>result</th><th>suite</th><th>run</th><th>expectations met</th><th>rows</th><th>at (UTC)</th></tr>
{rows}</table></body></html>"""
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(out_dir / "index.html")


# Data Docs offline: each URL GX 1.24's templates load (render/view/templates/page.j2,
# index_page.j2, js_script_imports.j2) -> its vendored copy under validation/static/vendor/
VENDOR = Path(__file__).parent / "static" / "vendor"
CDN = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table-1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-1.19.1/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-1.19.0/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-1.19.0/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark-1.1.0/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free-6.6.0/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}
# GX's logo comes from S3 (top_navbar.j2, and the dark theme's CSS); GX copies its own
# static/images/ into the site
GX_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}
_SCRIPT = re.compile(r'<script\b[^>]*?\bsrc="(https://[^"]+)"[^>]*>\s*</script>')
_LINK = re.compile(r'<link\b[^>]*?\bhref="(https://[^"]+)"[^>]*>')
_IMAGE = re.compile(re.escape(GX_ASSETS) + r'([A-Za-z0-9_.-]+)(\?[^"\'()\s]*)?')
_FAVICON = re.compile(r'href="(?:\./|(?:\.\./)*)static/images/favicon\.ico"')  # GX's is a folder short on result pages


def _install_vendor(site: Path) -> bool:
    """Copy the vendored files into ``site/static/vendor``; True when any was (re)written."""
    fresh = False
    for src in VENDOR.rglob("*"):
        if not src.is_file():
            continue
        dst = site / "static" / "vendor" / src.relative_to(VENDOR)
        if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        fresh = True
    return fresh


def localize(text: str, up: str) -> str:
    """``text`` (one GX page) with every CDN script and stylesheet it loads pointed at the
    vendored copy, ``up`` (``"../"`` per folder between the page and the site root) before
    ``static/``; GX's logo and favicon likewise at the site's ``static/images/``. The tags
    are written anew: the CDN tags' ``integrity``/``crossorigin`` would make Chromium
    refuse a ``file://`` script."""
    def script(m: re.Match) -> str:
        local = CDN.get(m.group(1))
        return m.group(0) if local is None else f'<script src="{html.escape(up)}static/vendor/{local}"></script>'

    def link(m: re.Match) -> str:
        local = CDN.get(m.group(1))
        return m.group(0) if local is None else \
            f'<link rel="stylesheet" href="{html.escape(up)}static/vendor/{local}">'

    def image(m: re.Match) -> str:
        local = GX_IMAGES.get(m.group(1))
        return m.group(0) if local is None else f"{html.escape(up)}static/images/{local}"

    text = _IMAGE.sub(image, _LINK.sub(link, _SCRIPT.sub(script, text)))
    return _FAVICON.sub(f'href="{html.escape(up)}static/images/favicon.ico"', text)


def localize_data_docs(site: Path, since: float | None = None) -> int:
    """Make the GX Data Docs site ``site`` work offline: install the vendored scripts and
    styles under ``site/static/vendor`` and rewrite the CDN URLs of the pages GX wrote
    since ``since`` (a ``time.time()``; every page when None, or when the vendored files
    were just installed). Returns how many pages were rewritten."""
    site = Path(site)
    if not site.is_dir():
        return 0
    every = _install_vendor(site) or since is None
    n = 0
    for page in site.rglob("*.html"):
        if not every and page.stat().st_mtime < since - 2:  # filesystem clocks round
            continue
        text = page.read_text(encoding="utf-8")
        new = localize(text, "../" * (len(page.relative_to(site).parts) - 1))
        if new != text:
            tmp = page.with_name(f".{page.name}.{os.getpid()}.tmp")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, page)
            n += 1
    return n
