"""The label-budget experiment (``relgrade label-budget``): relgrade's premise, training
data without manual labels at scale.

For each fraction f of the train queries whose judgments are kept
(``dataset.train_label_fraction``, relgrade/label_budget.py; the rest are withheld from the
teachers, the calibration, the target's human anchor and the peer recipe), the whole
pipeline runs on a data root of its own: relgrade fits its teachers on those judgments and
grades the union of *all* train queries; the peer recipe (``hardneg_human``) trains on
the same judgments; click-trained needs none. Same budget for every model. f = 1 is the
profile's own data root.

Every model's four metrics with intervals per fraction, the student against the peer
recipe at the same fraction and against the peer recipe with all the judgments (the
stretch: relgrade with 20% matches the peer with 100%), go to
``benchmarks/results/label_budget.json``; the page with the plot to
``<data_root>/reports/experiments/label_budget.html``. The pipeline runs come from
``flows/label_budget.py``; this module reads their evaluations.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from relgrade.config import REPO_ROOT, RelgradeConfig
from relgrade.reporting import interval_panels, numerics_line
from relgrade.util import write_json_atomic
from training.args import CLICK, HARDNEG, STUDENT
from training.metrics import paired_comparison

log = logging.getLogger("training.label_budget")

RESULTS_FILE = REPO_ROOT / "benchmarks" / "results" / "label_budget.json"
FRACTIONS = (0.05, 0.2, 1.0)
MODELS = (STUDENT, HARDNEG, CLICK, "base", "bm25", "teacher")


def fraction_root(cfg: RelgradeConfig, fraction: float) -> Path:
    """The data root of one fraction (the profile's own at 1)."""
    return cfg.paths.root if fraction >= 1.0 else cfg.paths.root.with_name(f"{cfg.paths.root.name}_labels_{fraction:g}")


def fraction_overrides(cfg: RelgradeConfig, fraction: float, overrides: dict | None = None) -> dict:
    ov = dict(overrides or {})
    ov["data_root"] = str(fraction_root(cfg, fraction))
    ov["dataset"] = {**ov.get("dataset", {}), "train_label_fraction": fraction}
    return ov


def _per_query(root: Path) -> dict[str, pd.DataFrame]:
    pq = pd.read_parquet(root / "reports" / "evaluation" / "per_query.parquet")
    return {n: g.drop(columns="model").sort_values("query_id", kind="stable").reset_index(drop=True)
            for n, g in pq.groupby("model", sort=False)}


def collect(cfg: RelgradeConfig, fractions: list[float], budget: dict[float, dict]) -> dict:
    """The per-fraction table from each data root's evaluation report."""
    import json

    rows, pqs = [], {}
    for f in fractions:
        root = fraction_root(cfg, f)
        rep = json.loads((root / "reports" / "evaluation" / "report.json").read_text())
        pqs[f] = _per_query(root)
        row = {"fraction": f, "data_root": str(root), "label_budget": budget.get(f),
               "models": {m: {k: v["all"] for k, v in rep["models"][m].items()} for m in MODELS if m in rep["models"]}}
        if STUDENT in pqs[f] and HARDNEG in pqs[f]:
            row["student_vs_peer"] = paired_comparison(pqs[f][STUDENT], pqs[f][HARDNEG], cfg)
        if STUDENT in pqs[f] and CLICK in pqs[f]:
            row["student_vs_click_trained"] = paired_comparison(pqs[f][STUDENT], pqs[f][CLICK], cfg)
        rows.append(row)
    full = max(fractions)
    for row in rows:  # the stretch: relgrade at f against the peer recipe with every judgment
        f = row["fraction"]
        if f < full and HARDNEG in pqs[full] and STUDENT in pqs[f]:
            row["student_vs_peer_all_labels"] = paired_comparison(pqs[f][STUDENT], pqs[full][HARDNEG], cfg)
    return {"rows": rows}


def plot(result: dict) -> str:
    """Each metric against the share of judgments kept: the student, the peer recipe,
    click-trained and the base model, with their intervals."""
    rows = result["rows"]
    names = list(next(iter(rows[0]["models"].values())))
    series = [{"label": model, "fmt": style,
               "points": {m: [(r["fraction"], r["models"][model][m]) for r in rows if model in r["models"]]
                          for m in names}}
              for model, style in ((STUDENT, "o-"), (HARDNEG, "s--"), (CLICK, "^:"), ("base", "x-."))]
    return interval_panels(names, series, [r["fraction"] for r in rows], [f"{r['fraction']:.0%}" for r in rows],
                           "train queries with judgments kept",
                           "Label budget: relgrade's teachers grade every train query from the kept judgments")


def render(result: dict) -> str:
    esc = html.escape
    rows = result["rows"]
    names = list(next(iter(rows[0]["models"].values())))
    p = ["<!doctype html><html><head><meta charset='utf-8'><title>relgrade label budget</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style></head><body>",
         "<h1>Label budget</h1>",
         f"<p>Profile {esc(result['profile'])}, {esc(result['split'])} split, generated {esc(result['generated_at'])}. "
         "Means over queries with bootstrap intervals.</p>", numerics_line(result.get("numerics")),
         f"<img src='data:image/png;base64,{plot(result)}'>",
         "<table><tr><th>kept</th><th>model</th>" + "".join(f"<th>{esc(m)}</th>" for m in names) + "</tr>"]
    for r in rows:
        for model, mm in r["models"].items():
            cells = "".join(f"<td>{mm[m]['mean']:.4f} [{mm[m]['lo']:.4f}, {mm[m]['hi']:.4f}]</td>"
                            if mm[m].get("mean") is not None else "<td>-</td>" for m in names)
            p.append(f"<tr><td>{r['fraction']:.0%}</td><td>{esc(model)}</td>{cells}</tr>")
    p.append("</table></body></html>")
    return "\n".join(p)


def write(cfg: RelgradeConfig, fractions: list[float], budget: dict[float, dict], elapsed_s: float,
          results_file: str | Path | None = RESULTS_FILE) -> dict:
    """The table from each fraction's evaluation, the page with its plot, the JSON."""
    from relgrade.numerics import numerics

    out = {"profile": cfg.profile, "split": cfg.evaluation.split, "fractions": fractions,
           "generated_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"), **collect(cfg, fractions, budget),
           "numerics": numerics(cfg), "elapsed_s": round(elapsed_s, 1)}
    page = cfg.paths.report("experiments") / "label_budget.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(out), encoding="utf-8")
    out["report"] = str(page)
    if results_file:
        write_json_atomic(Path(results_file), out)
        out["results_file"] = str(results_file)
    return out


def table(result: dict) -> str:
    """The label-budget table in Markdown (means; intervals in the JSON)."""
    names = list(next(iter(result["rows"][0]["models"].values())))
    lines = ["| kept | model | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for r in result["rows"]:
        for model, mm in r["models"].items():
            lines.append(f"| {r['fraction']:.0%} | {model} | " + " | ".join(
                f"{mm[m]['mean']:.4f}" if mm[m].get("mean") is not None else "–" for m in names) + " |")
    return "\n".join(lines)
