"""The evaluation report as HTML: plots, tables, examples, metric definitions; every
string from the data is escaped. Input: the dict :func:`training.evaluate.evaluate`
returns."""
from __future__ import annotations

import html
import json

import numpy as np

from relgrade.contract import SEGMENTS
from relgrade.reporting import png
from training.args import CLICK, HARDNEG, STUDENT

MODEL_LABELS = {STUDENT: "student (relgrade)", CLICK: "click-trained",
                HARDNEG: "hardneg_human (sentence-transformers recipe)", "base": "base MiniLM", "bm25": "BM25",
                "teacher": "teacher cascade (judged set only)"}


def _png(fig) -> str:
    return png(fig, dpi=90)


def _plots(rep: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = rep["models"]
    models = list(res)
    mnames = list(next(iter(res.values())).keys())
    out = {}
    fig, axes = plt.subplots(1, len(mnames), figsize=(4 * len(mnames), 3.6))
    for ax, m in zip(np.atleast_1d(axes), mnames):
        vals = [res[mo][m]["all"] for mo in models]
        mean = [v["mean"] or 0 for v in vals]
        err = [[(v["mean"] or 0) - (v["lo"] or 0) for v in vals], [(v["hi"] or 0) - (v["mean"] or 0) for v in vals]]
        ax.bar(range(len(models)), mean, yerr=err, capsize=3, color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([MODEL_LABELS.get(mo, mo) for mo in models], rotation=35, ha="right", fontsize=8)
        for i, v in enumerate(vals):
            if v["mean"] is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ax.set_title(m)
        # bars start at 0: a truncated axis would make small differences look large (the
        # paired differences with their intervals are in the table below the plot)
        ax.set_ylim(0.0, max(1.0 if not m.startswith("emb") else 0.0, max((v["hi"] or 0) for v in vals) * 1.15))
        goal = rep.get("target_lines", {}).get(m)
        if goal is not None:  # the evaluation target, relative to the click-trained model
            ax.axhline(goal, color="k", ls="--", lw=1, label="target")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{rep['split']} queries, {int(rep['ci'] * 100)}% bootstrap intervals; dashed: target vs click-trained")
    out["overall"] = _png(fig)
    fig, axes = plt.subplots(1, len(mnames), figsize=(4 * len(mnames), 3.6))
    w = 0.8 / max(len(models), 1)
    for ax, m in zip(np.atleast_1d(axes), mnames):
        for i, mo in enumerate(models):
            vals = [res[mo][m][s]["mean"] or 0 for s in SEGMENTS]
            ax.bar(np.arange(3) + i * w, vals, w, label=MODEL_LABELS.get(mo, mo), color=f"C{i}")
        ax.set_xticks(np.arange(3) + w * (len(models) - 1) / 2)
        ax.set_xticklabels(SEGMENTS)
        ax.set_title(m)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("by query segment")
    out["segments"] = _png(fig)
    return out


def _budget_plot(rep: dict) -> str:
    """Each metric against the step-budget multiplier: the student, click-trained and
    (where trained at every budget) peer-recipe runs of the same budget, with their
    bootstrap intervals; BM25 and the base model as lines."""
    from relgrade.reporting import interval_panels

    rows, res = rep["step_budget"], rep["models"]
    mnames = [m for m in next(iter(res.values())) if m in rows[0]]
    xs = [r["budget_multiplier"] for r in rows]
    series = [{"label": lab, "marker": "o", "color": color,
               "points": {m: [(r["budget_multiplier"], res[r[key]][m]["all"]) for r in rows] for m in mnames}}
              for key, color, lab in (("student", "C0", "student (relgrade)"), ("click_trained", "C1", "click-trained"),
                                      ("hardneg_human", "C2", "peer recipe (hardneg_human)"))
              if all(r.get(key) for r in rows)]
    refs = [{"label": MODEL_LABELS.get(ref, ref), "ls": ls, "values": {m: res[ref][m]["all"]["mean"] for m in mnames}}
            for ref, ls in (("bm25", ":"), ("base", "-.")) if ref in res]
    return interval_panels(mnames, series, xs, [f"{x:g}x" for x in xs], "examples per stage (x the default budget)",
                           "step budget: the same multiplier for both models", log_base=2, refs=refs)


def _budget_section(rep: dict) -> str:
    esc = html.escape
    rows = rep["step_budget"]
    mnames = [m for m in next(iter(rep["models"].values())) if m in rows[0]]
    p = ["<h2>Step budget</h2><p>Every curriculum stage's examples multiplied for both models. Ratio: student / "
         "click-trained of the same budget, paired bootstrap interval; best click: against the click-trained run of "
         "any budget that scores best on the metric.</p>",
         "<table><tr><th>budget</th>" + "".join(f"<th>{esc(m)}: student / click [CI]</th><th>{esc(m)}: vs best click</th>"
                                               f"<th>{esc(m)}: student / peer [CI]</th>"
                                               for m in mnames) + "<th>targets met</th></tr>"]
    for r in rows:
        cells = []
        for m in mnames:
            c, b = r[m], r.get("vs_best_click_trained", {}).get(m)
            cells.append(f"<td>{_f(c['student'])} / {_f(c['click_trained'])} = {_f(c['ratio'])} "
                         f"[{_f(c['ratio_ci'][0])}, {_f(c['ratio_ci'][1])}]</td>")
            cells.append(f"<td>{_f(b['ratio'])} ({esc(b['click_trained'])})</td>" if b else "<td>-</td>")
            v = (r.get("vs_hardneg_human") or {}).get(m)
            cells.append(f"<td>{_f(v['ratio'])} [{_f(v['ratio_ci'][0])}, {_f(v['ratio_ci'][1])}]</td>" if v else "<td>-</td>")
        met = [t for t in r.get("targets", []) if t["met"]]
        cells.append("<td>" + (esc("; ".join(t["target"] for t in met)) or "none") + "</td>")
        p.append(f"<tr><td>{r['budget_multiplier']:g}x</td>" + "".join(cells) + "</tr>")
    p.append("</table>")
    p.append(f"<img src='data:image/png;base64,{_budget_plot(rep)}'>")
    return "\n".join(p)


def _drift_section(d: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    esc = html.escape
    ms = d["models"]
    c = d["catalog"]
    p = [f"<h2>What the top {d['k']} leans toward</h2><p>Pooled over the test queries' full-catalog top {d['k']}: the "
         "simulator's title appeal (z over the catalog; the one click driver visible in the text: brand and title "
         "length), the mean title length, and the distinct items all queries' lists cover. Catalog: title appeal "
         f"{_f(c['title_appeal_z'])}, {_f(c['title_chars'])} characters, {c['items']} items.</p>",
         "<table><tr><th>model</th><th>title appeal z</th><th>title characters</th><th>distinct items</th></tr>"]
    for n, v in ms.items():
        p.append(f"<tr><td>{esc(MODEL_LABELS.get(n, n))}</td><td>{_f(v['title_appeal_z'])}</td><td>{_f(v['title_chars'])}</td>"
                 f"<td>{v['distinct_items']} ({_f(v['distinct_share'])})</td></tr>")
    p.append("</table>")
    names = list(ms)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.4))
    ax.bar(range(len(names)), [ms[n]["title_appeal_z"] or 0 for n in names],
           color=["C1" if n.startswith(CLICK) else "C0" if n.startswith(STUDENT) else "C7" for n in names])
    ax.axhline(c["title_appeal_z"], color="k", lw=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([MODEL_LABELS.get(n, n) for n in names], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"title appeal z of the top {d['k']}")
    fig.tight_layout()
    p.append(f"<img src='data:image/png;base64,{_png(fig)}'>")
    return "\n".join(p)


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


METRIC_DEFINITIONS = [
    ("ndcg@10", "normalized discounted cumulative gain of the model's ranking of a query's human-judged items, "
                "gain 2^grade - 1, log2 position discount, cut at 10, ideal order from the same judged items; mean "
                "over queries (queries whose judged items are all grade 0 have no ideal gain and are left out)."),
    ("ndcg@10_g0", "the same, over the queries with at least one judged item of grade 0 (irrelevant): the queries "
                   "where the ranking can embarrass."),
    ("emb@3", "embarrassing@3: share of the model's top 3 judged items that people graded 0; mean over queries."),
    ("recall@100", "share of a query's judged items of grade >= 2 that the model retrieves in its top 100 from the "
                   "whole catalog (its FAISS index; BM25: bm25s top 100); mean over queries with such an item."),
    ("95% interval", "percentile bootstrap over queries; the student-vs-other comparisons resample the same queries for "
                     "both models (paired)."),
    ("segments", "head, torso, tail: the query's share of the search traffic."),
]


def render_html(rep: dict) -> str:
    esc = html.escape
    metrics_by_model = rep["models"]
    plots = _plots(rep)
    mnames = list(next(iter(metrics_by_model.values())).keys())
    p = ["<!doctype html><html><head><meta charset='utf-8'><title>relgrade evaluation</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
         "th{background:#f3f3f3}img{max-width:100%}.ok{color:#070}.miss{color:#b00}</style></head><body>",
         f"<h1>{esc(rep['title'])}</h1>",
         f"<p>{rep['queries']} {esc(rep['split'])} queries ({esc(json.dumps(rep['segments']))}), {rep['judged_pairs']} judged pairs, "
         f"{rep['queries_with_grade0']} queries with a grade-0 judged item; full-catalog retrieval over {rep['catalog_items']} items. "
         f"Means over queries with {int(rep['ci'] * 100)}% percentile bootstrap intervals ({rep['bootstrap']} resamples). "
         f"Profile {esc(rep['profile'])}, generated {esc(rep['generated_at'])}.</p>",
         "<h2>All models</h2><table><tr><th>model</th>" + "".join(f"<th>{esc(m)}</th>" for m in mnames) + "</tr>"]
    for n, d in metrics_by_model.items():
        p.append(f"<tr><td>{esc(MODEL_LABELS.get(n, n))}</td>" + "".join(
            f"<td>{_f(d[m]['all']['mean'])} [{_f(d[m]['all']['lo'])}, {_f(d[m]['all']['hi'])}]</td>" for m in mnames) + "</tr>")
    p.append("</table>")
    p.append(f"<img src='data:image/png;base64,{plots['overall']}'>")
    p.append("<h2>By segment</h2><table><tr><th>model</th><th>segment</th>" + "".join(f"<th>{esc(m)}</th>" for m in mnames) + "</tr>")
    for n, d in metrics_by_model.items():
        for s in SEGMENTS:
            p.append(f"<tr><td>{esc(MODEL_LABELS.get(n, n))}</td><td>{s} (n={d[mnames[0]][s]['n']})</td>" + "".join(
                f"<td>{_f(d[m][s]['mean'])} [{_f(d[m][s]['lo'])}, {_f(d[m][s]['hi'])}]</td>" for m in mnames) + "</tr>")
    p.append("</table>")
    p.append(f"<img src='data:image/png;base64,{plots['segments']}'>")
    if rep.get("comparisons"):
        p.append("<h2>Student against each model (paired bootstrap)</h2><table><tr><th>vs</th><th>metric</th><th>student</th>"
                 "<th>other</th><th>ratio [CI]</th><th>difference [CI]</th></tr>")
        for o, comp in rep["comparisons"].items():
            for m, c in comp.items():
                p.append(f"<tr><td>{esc(MODEL_LABELS.get(o, o))}</td><td>{esc(m)}</td><td>{_f(c['student'])}</td><td>{_f(c['other'])}</td>"
                         f"<td>{_f(c['ratio'])} [{_f(c['ratio_ci'][0])}, {_f(c['ratio_ci'][1])}]</td>"
                         f"<td>{_f(c['diff'])} [{_f(c['diff_ci'][0])}, {_f(c['diff_ci'][1])}]</td></tr>")
        p.append("</table>")
    if rep.get("targets"):
        p.append("<h2>Targets</h2><table><tr><th>target</th><th>measured</th><th>goal</th><th>met</th></tr>")
        for t in rep["targets"]:
            cls = "ok" if t["met"] else "miss"
            p.append(f"<tr><td>{esc(t['target'])}</td><td>{_f(t['measured'])}</td><td>{esc(t['goal'])}</td>"
                     f"<td class='{cls}'>{esc(str(t['met']))}</td></tr>")
        p.append("</table>")
    if rep.get("step_budget"):
        p.append(_budget_section(rep))
    if rep.get("retrieval_drift", {}).get("models"):
        p.append(_drift_section(rep["retrieval_drift"]))
    if rep.get("examples"):
        ex = rep["examples"]
        ms = [m for m in ex[0] if m not in ("query", "segment")]
        p.append("<h2>Examples: top judged items, queries with a grade-0 item</h2><p>Grades in brackets (0 = irrelevant)."
                 "</p><table><tr><th>query</th><th>segment</th>" + "".join(f"<th>{esc(MODEL_LABELS.get(m, m))} top "
                 f"{len(ex[0][ms[0]])}</th>" for m in ms) + "</tr>")
        for r in ex:
            p.append(f"<tr><td>{esc(r['query'])}</td><td>{esc(r['segment'])}</td>" + "".join(
                "<td>" + "<br>".join(f"[{it['grade']}] {esc(it['title'])}" for it in r[m]) + "</td>" for m in ms) + "</tr>")
        p.append("</table>")
    p.append("<h2>Definitions</h2><dl>" + "".join(f"<dt>{esc(a)}</dt><dd>{esc(b)}</dd>" for a, b in METRIC_DEFINITIONS)
             + "</dl>")
    tr = {n: d.get("training") for n, d in rep.get("model_specs", {}).items() if d.get("training")}
    if tr:
        p.append("<details><summary>Training runs (JSON)</summary><pre>" + esc(json.dumps(tr, indent=1, default=str))
                 + "</pre></details>")
    p.append("<details><summary>Run statistics (JSON)</summary><pre>"
             + esc(json.dumps(rep.get("run_stats", {}), indent=1, default=str)) + "</pre></details>")
    p.append("</body></html>")
    return "\n".join(p)
