"""Grading report: test-split agreement with human grades per stage and for the cascade,
calibration (ECE, reliability plots), compute, escalation on the union, grade
distribution. JSON plus a self-contained HTML page (plots inline as base64 PNG; every
query and catalog string escaped with :func:`html.escape`)."""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.io import write_parquet_atomic  # noqa: F401  (same conventions as other stages)
from relgrade.reporting import png as _png
from relgrade.reporting import table as _table

STAGES = ("stage1", "stage2", "stage3", "cascade")
TARGETS = {"qwk_gap_to_stage3_max": 0.01, "compute_share_of_stage3_max": 0.35, "rmse_raw_max": 0.46}


def _plots(rel: dict, grades: pd.DataFrame) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, axes = plt.subplots(1, len(STAGES), figsize=(13, 3.4), sharey=True)
    for ax, k in zip(axes, STAGES):
        bins = [b for b in rel[k] if b["n"]]
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.bar([b["confidence"] for b in bins], [b["accuracy"] for b in bins], width=0.05, alpha=0.7, color="#4c72b0")
        ax.set_title(k)
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("accuracy (test)")
    out["reliability"] = _png(fig)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ct = pd.crosstab(grades["grade"], grades["deciding_stage"]).reindex(range(4), fill_value=0)
    bottom = np.zeros(len(ct))
    for s in ct.columns:
        ax.bar(ct.index, ct[s].to_numpy(), bottom=bottom, label=f"stage {s}")
        bottom += ct[s].to_numpy()
    ax.set_xticks(range(4))
    ax.set_xlabel("grade")
    ax.set_ylabel("union pairs")
    ax.set_title(f"Grades of the mined union (n={len(grades)}), by deciding stage")
    ax.legend()
    out["grades"] = _png(fig)
    return out


def _examples(grades: pd.DataFrame, queries: pd.DataFrame, catalog: pd.DataFrame, n: int = 12) -> list[dict]:
    text = dict(zip(queries["query_id"].astype(str), queries["text"].astype(str)))
    title = dict(zip(catalog["item_id"].astype(str), catalog["title"].astype(str)))
    rows = []
    for s in sorted(grades["deciding_stage"].unique()):
        part = grades[grades["deciding_stage"] == s]
        for _, r in part.sample(min(n // 3 or 1, len(part)), random_state=0).iterrows():
            rows.append({"stage": int(s), "query": text.get(r["query_id"], r["query_id"]), "item": title.get(r["item_id"], r["item_id"]),
                         "grade": int(r["grade"]), "expected": float(r["expected_grade"]), "confidence": float(r["confidence"])})
    return rows


def write_report(out_dir: Path, summary: dict, reliability: dict, grades: pd.DataFrame, queries: pd.DataFrame,
                 catalog: pd.DataFrame) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = summary["metrics"]
    c = m["cascade"]
    summary = {**summary, "targets": {
        **TARGETS,
        "qwk_gap_to_stage3": c["qwk_gap_to_stage3"], "qwk_gap_met": c["qwk_gap_to_stage3"] <= TARGETS["qwk_gap_to_stage3_max"],
        "compute_share_of_stage3": c["compute_share_of_stage3"],
        "compute_share_met": c["compute_share_of_stage3"] <= TARGETS["compute_share_of_stage3_max"],
        "rmse_raw": c["rmse_raw"], "rmse_met": c["rmse_raw"] <= TARGETS["rmse_raw_max"]},
        "reliability": reliability, "generated_at": datetime.now(timezone.utc).isoformat()}
    jpath = out_dir / "report.json"
    tmp = jpath.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    tmp.replace(jpath)
    plots = _plots(reliability, grades)
    cols = ["stage", "n", "exact", "within_one", "binary", "qwk", "rmse_raw", "ece", "ece_uncalibrated", "compute_per_1k_s"]
    rows = [{"stage": k, **{x: m[k].get(x) for x in cols[1:]}} for k in STAGES]
    # the bare cross-encoders (calibrated, not stacked): what stages 2 and 3 stack on top of stage 1
    rows += [{"stage": f"{k} (member only)", **{x: m[k].get(x) for x in cols[1:]}} for k in ("ce2_alone", "ce3_alone") if k in m]
    t = summary["targets"]
    esc_rows = [{"where": "test (dev thresholds, no cap)", "to stage 2": c["escalated_to_stage2"], "to stage 3": c["escalated_to_stage3"]},
                {"where": "mined union (capped)", "to stage 2": summary["union"]["escalated_to_stage2"],
                 "to stage 3": summary["union"]["escalated_to_stage3"]}]
    train_rows = [{"stage": k, "version": v["version"], "train_s": v["train_s"], "trained_now": v["trained_now"]}
                  for k, v in summary["teachers"].items()]
    ex = _examples(grades, queries, catalog)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>relgrade grading report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1em auto}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 7px;font-size:13px}}.ok{{color:#1a7f37}}.miss{{color:#c62828}}</style></head><body>
<h1>Graded relevance: teacher cascade</h1>
<p>Snapshot {html.escape(str(summary['snapshot_ts']))}; {summary['union']['pairs']} union pairs graded;
scored on {html.escape(m['split'])}-split queries ({c['n']} human-judged pairs). Teachers trained on train-split judgments only;
temperatures, thresholds (t1={summary['thresholds'][0]}, t2={summary['thresholds'][1]}) and the raw-scale map fitted on dev.
Grade rule: {html.escape(summary['grade_rule'])}.</p>
<h2>Agreement with human grades (test)</h2>{_table(rows, cols)}
<p>Mean-prediction RMSE on the 1-3 scale: {m['mean_baseline_rmse_raw']:.4f}. Compute = measured seconds per 1,000 pairs on this machine.</p>
<h2>Targets</h2><ul>
<li class="{'ok' if t['qwk_gap_met'] else 'miss'}">cascade QWK within 0.01 of stage 3: gap {t['qwk_gap_to_stage3']:.4f}</li>
<li class="{'ok' if t['compute_share_met'] else 'miss'}">cascade compute &le; 35% of stage 3: {100 * t['compute_share_of_stage3']:.1f}%</li>
<li class="{'ok' if t['rmse_met'] else 'miss'}">cascade test RMSE &le; 0.46: {t['rmse_raw']:.4f}</li></ul>
<h2>Escalation</h2>{_table(esc_rows, ['where', 'to stage 2', 'to stage 3'])}
<h2>Calibration (test, temperature scaling fitted on dev)</h2><img src="data:image/png;base64,{plots['reliability']}">
<h2>Grade distribution of the union</h2><img src="data:image/png;base64,{plots['grades']}">
<h2>Teachers</h2>{_table(train_rows, ['stage', 'version', 'train_s', 'trained_now'])}
<h2>Examples</h2>{_table(ex, ['stage', 'query', 'item', 'grade', 'expected', 'confidence'])}
</body></html>"""
    hpath = out_dir / "report.html"
    tmp = hpath.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(hpath)
    return {"json": jpath, "html": hpath}
