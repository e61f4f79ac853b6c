"""Grading report, built once from the stage's summary: test-split agreement with human
grades per stage and for the published cascade, the dev quality-against-compute curve
with the chosen budget, probes of the union distribution (random pairs, grade mix per
best-rank band and per channel agreement, the union pairs that carry a human label),
calibration and examples. JSON plus a self-contained HTML page (plots inline as base64
PNG; every query and catalog string escaped)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.reporting import numerics_line, png, table
from relgrade.util import utc_now, write_json_atomic

# quality targets of the teacher cascade (test split, judged population; docs/grading.md)
TARGETS = {"rmse_raw_max": 0.455, "qwk_min": 0.40, "random_probe_grade0_min": 0.97}

METRIC_COLS = ["stage", "n", "exact", "within_one", "binary", "qwk", "rmse_raw", "rmse_grade", "ece",
               "modelled_s_per_million"]
DEFINITIONS = [
    ("exact / within_one", "share of pairs whose grade equals the human grade / is within one of it"),
    ("binary", "share of pairs on the same side of relevant (grade >= 2) as the human grade"),
    ("qwk", "quadratic weighted kappa between grade and human grade"),
    ("rmse_raw", "RMSE of the expected grade mapped to the source's rating scale (isotonic map fitted on dev)"),
    ("rmse_grade", "RMSE of the expected grade against the human grade (0..3)"),
    ("ece", "expected calibration error of the confidence (max probability), 15 bins"),
    ("judged population", "posteriors re-weighted from the calibration prior to the prior of the train judgments "
                          "(the judged pairs are mostly relevant; the union is not)"),
    ("as published", "the grades exactly as relevance_grade_fv holds them for a pair of the union"),
]


def _plots(summary: dict, ev: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    # quality against compute on dev
    grid = summary["budget_curve"]
    rows = summary["calibration_grid"]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.scatter([r["cost_s_per_million"] for r in rows], [r["dev_qwk"] for r in rows], s=6, color="#bbbbbb",
               label="threshold vectors on the grid")
    fr = grid["frontier"]
    ax.plot([r["cost_s_per_million"] for r in fr], [r["dev_qwk"] for r in fr], "-o", ms=3, color="#4c72b0",
            label="best dev QWK at each compute")
    ch = grid["chosen"]
    ax.axvline(grid["budget_s_per_million"], ls="--", color="#c44e52", lw=1, label="budget")
    ax.plot([ch["cost_s_per_million"]], [ch["dev_qwk"]], "*", ms=14, color="#c44e52", label="chosen")
    ax.set_xlabel("modelled union compute (s per million pairs)")
    ax.set_ylabel("dev QWK (judged + mined negatives)")
    ax.set_title("Cascade: quality against compute (dev)")
    ax.legend(fontsize=7, loc="lower right")
    out["budget"] = png(fig)
    # grade mix per best-rank band
    bands = summary["probes"]["by_best_rank_band"]
    if bands:
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        left = np.zeros(len(bands))
        colors = ["#c44e52", "#dd8452", "#55a868", "#4c72b0"]
        for k in range(4):
            v = np.array([b[f"grade_{k}"] for b in bands])
            ax.barh([b["group"] for b in bands], v, left=left, color=colors[k], label=f"grade {k}")
            left += v
        for i, b in enumerate(bands):
            ax.text(1.01, i, f"E[grade] {b['mean_expected_grade']:.2f}  (n={b['pairs']})", va="center", fontsize=7)
        ax.set_xlim(0, 1.35)
        ax.set_xlabel("share of the band's union pairs")
        ax.set_ylabel("best channel rank")
        ax.invert_yaxis()
        ax.set_title("Published grades of the union by best rank")
        ax.legend(fontsize=7, loc="lower right")
        out["bands"] = png(fig)
    # reliability
    rel = ev["reliability"]
    names = list(rel)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], names):
        b = [x for x in rel[k] if x["n"]]
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.bar([x["confidence"] for x in b], [x["accuracy"] for x in b], width=0.05, alpha=0.7, color="#4c72b0")
        ax.set_title(k)
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("accuracy (test, judged population)")
    out["reliability"] = png(fig)
    return out


def _examples(grades: pd.DataFrame, queries: pd.DataFrame, catalog: pd.DataFrame, n: int = 4) -> list[dict]:
    text = dict(zip(queries["query_id"].astype(str), queries["text"].astype(str)))
    title = dict(zip(catalog["item_id"].astype(str), catalog["title"].astype(str)))
    rows = []
    for g in range(4):
        part = grades[grades["grade"] == g]
        for r in part.sample(min(n, len(part)), random_state=0).itertuples():
            rows.append({"grade": g, "query": text.get(r.query_id, r.query_id), "item": title.get(r.item_id, r.item_id),
                         "expected": float(r.expected_grade), "confidence": float(r.confidence),
                         "stage": int(r.deciding_stage)})
    return rows


def blind_section(blind: dict | None) -> str:
    """The report's blind-rating audit: the published grades against the blind ratings,
    or why there are none to compare with ("not available")."""
    cols_b = ["group", "pairs", "qwk", "binary", "exact", "mean_grade", "mean_blind_grade", "grade_0", "blind_grade_0"]
    if blind and blind.get("unjudged"):
        order = {b: i for i, b in enumerate(["1-5", "6-10", "11-25", "26-50", "51-100"])}
        by_band = sorted(blind["unjudged_by_band"], key=lambda r: order.get(r["group"], 99))
        return ("<h3>Blind-rated union pairs of dev queries</h3><p>Rated from query and title alone by three "
                "raters (instances of one AI assistant; data/homedepot/PROVENANCE.md), mean rating mapped by the "
                "source's rule. Published grades against them:</p>"
                + table([{"group": "all unjudged", **blind["unjudged"]}] + by_band, cols_b)
                + (table([{"group": "judged pairs (raters vs published)", **blind["judged"]}], cols_b)
                   if blind.get("judged") else ""))
    why = (blind or {}).get("reason") or "no blind-rated unjudged pair among the graded pairs"
    return f"<h3>Blind-rated union pairs</h3><p>Not available: {html.escape(why)}.</p>"


def write_report(out_dir: Path, summary: dict, ev: dict, grades: pd.DataFrame, union: pd.DataFrame,
                 queries: pd.DataFrame, catalog: pd.DataFrame) -> dict[str, str]:
    """report.json and report.html under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    targets = _targets(summary)
    doc = {k: v for k, v in summary.items() if k not in ("artifact_table", "calibration_grid")}
    doc.update(targets=targets, reliability=ev["reliability"], generated_at=utc_now().isoformat())
    jpath = write_json_atomic(out_dir / "report.json", doc, indent=1, sort_keys=False)
    page = _page(summary, targets, _plots(summary, ev), _examples(grades, queries, catalog))
    hpath = out_dir / "report.html"
    tmp = hpath.with_name(".report.html.tmp")
    tmp.write_text(page)
    tmp.replace(hpath)
    return {"json": str(jpath), "html": str(hpath)}


def _targets(summary: dict) -> dict:
    """Each quality target of the cascade: goal, measured value, met."""
    c = summary["metrics"]["cascade"]
    rmse = c.get("rmse_raw")
    probe = summary["probe"]
    return {
        "rmse_raw": {"goal": TARGETS["rmse_raw_max"], "measured": rmse,
                     "met": None if rmse is None else rmse <= TARGETS["rmse_raw_max"]},
        "qwk": {"goal": TARGETS["qwk_min"], "measured": c["qwk"], "met": c["qwk"] >= TARGETS["qwk_min"]},
        "random_probe_grade0": {"goal": TARGETS["random_probe_grade0_min"], "measured": probe["grade_0_share"],
                                "met": probe["grade_0_share"] is not None
                                and probe["grade_0_share"] >= TARGETS["random_probe_grade0_min"]},
    }


def _judge_html(summary: dict) -> str:
    """The LLM judge's section (its usage, and its agreement alone on test pairs), empty when it is off."""
    judge = summary.get("llm_judge") or {}
    if not judge.get("enabled"):
        return ""
    jm = summary["metrics"].get("llm_judge_alone") or {}
    return ("<h3>LLM judge</h3>" + table([{k: judge.get(k) for k in (
        "model", "prompt_version", "few_shot", "union_pairs_judged", "requests", "cache_hits", "retries", "failed",
        "prompt_tokens", "completion_tokens", "latency_median_s", "latency_p95_s")}],
        ["model", "prompt_version", "few_shot", "union_pairs_judged", "requests", "cache_hits", "retries", "failed",
         "prompt_tokens", "completion_tokens", "latency_median_s", "latency_p95_s"])
        + (f"<p>The judge alone on {jm.get('n')} test pairs, through the same HTTP path:</p>"
           + table([{"stage": "llm judge alone", **jm}], METRIC_COLS[:6]) if jm else ""))


def _page(summary: dict, targets: dict, plots: dict[str, str], examples: list[dict]) -> str:
    """The self-contained HTML page."""
    m = summary["metrics"]
    rows = [{"stage": k, **m[k]} for k in m if k.startswith("stage") or k.startswith("cascade")]
    rows += [{"stage": f"{k} (member only)", **m[k]} for k in m if k.endswith("_alone")]
    pub = [{"stage": k, **v} for k, v in summary["as_published"].items()]
    u = summary["union"]
    ch = summary["budget_curve"]["chosen"]
    comp = [{"what": "budget", "s_per_million": summary["budget_curve"]["budget_s_per_million"]},
            {"what": "modelled for the chosen thresholds", "s_per_million": ch["cost_s_per_million"]},
            {"what": "measured on the union", "s_per_million": u.get("measured_s_per_million")}]
    reach = [{"stage": k, "union share reaching it (measured)": v,
              "union share reaching it (modelled)": ch["union_reach"][int(k) - 1],
              "dev share reaching it": ch["dev_reach"][int(k) - 1]} for k, v in u["reach_share"].items()]
    teach = [{"stage": k, **v} for k, v in summary["teachers"].items()]
    pr = summary["probes"]
    blind_html = blind_section(pr.get("blind_rated_pairs")) + _judge_html(summary)
    t_items = "".join(
        f"<li class=\"{'ok' if t['met'] else 'miss'}\">{html.escape(k)}: {t['measured'] if t['measured'] is None else round(t['measured'], 4)}"
        f" (goal {'&le;' if k == 'rmse_raw' else '&ge;'} {t['goal']})</li>" for k, t in targets.items())
    img = lambda k: f'<img src="data:image/png;base64,{plots[k]}"/>' if k in plots else ""  # noqa: E731
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>relgrade grading report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1em auto}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 7px;font-size:13px}}.ok{{color:#1a7f37}}.miss{{color:#c62828}}
img{{max-width:100%}}dt{{font-weight:bold}}</style></head><body>
<h1>Graded relevance: teacher cascade</h1>
{numerics_line(summary.get('numerics'))}
<p>Snapshot {html.escape(str(summary['snapshot_ts']))}; {u['pairs']} union pairs graded. Teachers learn from
train-split judgments plus negatives ({html.escape(str(summary['negatives']))}); calibration, stacking and thresholds
are fitted on dev judgments plus dev negatives; test is scored only here. Grade rule: {html.escape(summary['grade_rule'])}.
Thresholds {html.escape(str(summary['thresholds']))}.</p>
<h2>Targets (test split)</h2><ul>{t_items}</ul>
<h2>Agreement with human grades (test, judged population)</h2>{table(rows, METRIC_COLS)}
<p>Predicting the mean rating: RMSE {summary.get('mean_baseline_rmse_raw') or float('nan'):.4f} on the raw scale.
The cascade row is graded through the same code path, thresholds and caps as the union.</p>
<h3>The same test pairs as published (calibration prior)</h3>{table(pub, METRIC_COLS[:8])}
<h2>Compute: dev quality against compute, and the chosen budget</h2>{img('budget')}{table(comp, ['what', 's_per_million'])}
{table(reach, ['stage', 'union share reaching it (measured)', 'union share reaching it (modelled)', 'dev share reaching it'])}
<h2>Probes of the union</h2>
<h3>Random-pair probe</h3>{table([pr['random_pair_probe']], ['pairs', 'grade_0_share', 'grade_1', 'grade_2', 'grade_3', 'mean_expected_grade'])}
<p>The gate judges the sampled grade-0 share by its Wilson interval: it refuses the batch only when the upper
bound falls below the required share (a sampled share under <code>gate_min_sampled_share</code>).</p>
{table([pr['random_pair_probe']], ['pairs', 'grade_0_wilson_low', 'grade_0_wilson_high', 'gate_confidence', 'gate_required_share', 'gate_min_sampled_share', 'gate_passed'])}
<h3>By best channel rank</h3>{img('bands')}
{table(pr['by_best_rank_band'], ['group', 'pairs', 'mean_expected_grade', 'grade_0', 'grade_1', 'grade_2', 'grade_3'])}
<h3>By channel agreement (channels that found the pair)</h3>
{table(pr['by_agreement'], ['group', 'pairs', 'mean_expected_grade', 'grade_0', 'grade_1', 'grade_2', 'grade_3'])}
{blind_html}
<h3>Union pairs that carry a human label</h3>
{table([pr['judged_union_pairs']], ['pairs', 'exact', 'within_one', 'binary', 'qwk', 'rmse_grade', 'mean_grade', 'mean_human_grade'])}
<h2>Calibration (test, judged population)</h2>{img('reliability')}
<h2>Teachers</h2>{table(teach, ['stage', 'version', 'trained_now', 'train_s', 'seconds'])}
<h2>Examples of published grades</h2>{table(examples, ['grade', 'query', 'item', 'expected', 'confidence', 'stage'])}
<h2>Definitions</h2><dl>{''.join(f'<dt>{html.escape(a)}</dt><dd>{html.escape(b)}</dd>' for a, b in DEFINITIONS)}</dl>
</body></html>"""
