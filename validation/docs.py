"""Validation pages that read offline: one self-contained HTML page per validation run
and an index of every run, under ``<data_root>/reports/validation/``.

Great Expectations' own Data Docs (``reports/data_docs/``) load their CSS and JavaScript
from CDNs, so their index renders blank without internet, and they print the data's
unexpected values unescaped. These pages have inline CSS and no JavaScript; every value
from the data is escaped; each check says in words what it checks (``NOTES`` for the
``chk_*`` columns the suites compute, GX's expectation type otherwise); runs are named
``<suite> <UTC time>``.
"""
from __future__ import annotations

import html
import json
import re
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
(they need internet for their styling).</p>
<table><tr><th>result</th><th>suite</th><th>run</th><th>expectations met</th><th>rows</th><th>at (UTC)</th></tr>
{rows}</table></body></html>"""
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(out_dir / "index.html")
