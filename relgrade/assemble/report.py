"""Data-quality report of the assembled training set, with the rank-correlation evidence
on the report split (dev) rows that carry a human grade.

The dev rows go through exactly the same point-in-time path as the training rows (same
entity stamps, same Feast service, same targets) but never into the training set.
Written as JSON plus one self-contained HTML page (plots inline as base64 PNG; every
query and catalog string escaped with html.escape), linked from the Data Docs folder.
"""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from relgrade.reporting import png as _png
from relgrade.reporting import table


def _table(rows: list[dict], cols: list[str]) -> str:
    return table(rows, cols, digits=3)


SIGNALS = [
    ("raw CTR (28d)", "ctr_raw_28d"),
    ("debiased CTR (28d)", "ctr_debiased_28d"),
    ("smoothed engagement", "engagement_smoothed"),
    ("gated engagement", "gated_preference"),
    ("retrieval prior", "retrieval_prior"),
    ("cascade grade", "grade"),
    ("cascade expected grade", "expected_grade"),
    ("blended target", "target"),
    ("click target (baseline)", "click_target"),
]
MISSING_COLUMNS = ["retrieval_prior", "difficulty_level", "grade", "expected_grade", "confidence", "impressions_28d",
                   "ctr_raw_28d", "ctr_debiased_28d", "gated_preference", "click_target", "item_title"]


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()


def with_human_grades(rows: pd.DataFrame, judgments: pd.DataFrame) -> pd.DataFrame:
    j = judgments[["query_id", "item_id", "grade"]].dropna(subset=["grade"]).astype({"query_id": str, "item_id": str})
    j = j.drop_duplicates(["query_id", "item_id"], keep="last").rename(columns={"grade": "human_grade"})
    return rows.merge(j, on=["query_id", "item_id"], how="inner")


def _rho(x: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    ok = ~(np.isnan(x) | np.isnan(y))
    n = int(ok.sum())
    if n < 3 or np.nanstd(x[ok]) == 0 or np.nanstd(y[ok]) == 0:
        return None, n
    return float(spearmanr(x[ok], y[ok]).statistic), n


def _per_query_rho(judged: pd.DataFrame, col: str, min_rows: int = 3) -> tuple[float | None, int]:
    """Mean over queries of the within-query Spearman rho (queries with >= min_rows rows
    where the signal exists and neither the signal nor the grade is constant)."""
    d = pd.DataFrame({"q": judged["query_id"].to_numpy(), "x": _num(judged[col]), "y": _num(judged["human_grade"])}).dropna()
    if len(d) == 0:
        return None, 0
    d["rx"] = d.groupby("q")["x"].rank()
    d["ry"] = d.groupby("q")["y"].rank()
    g = d.groupby("q")
    n = g.size()
    mx, my = g["rx"].transform("mean"), g["ry"].transform("mean")
    d["cxy"], d["cxx"], d["cyy"] = (d["rx"] - mx) * (d["ry"] - my), (d["rx"] - mx) ** 2, (d["ry"] - my) ** 2
    agg = d.groupby("q")[["cxy", "cxx", "cyy"]].sum()
    ok = (n >= min_rows) & (agg["cxx"] > 0) & (agg["cyy"] > 0)
    if not ok.any():
        return None, 0
    rho = agg.loc[ok, "cxy"] / np.sqrt(agg.loc[ok, "cxx"] * agg.loc[ok, "cyy"])
    return float(rho.mean()), int(ok.sum())


def spearman_evidence(judged: pd.DataFrame) -> dict:
    """Spearman rank correlation with the human grade, per signal: on every judged row
    where the signal exists, and on the judged rows that had impressions (the rows where
    every engagement signal can exist at all)."""
    y = _num(judged["human_grade"])
    shown = np.nan_to_num(_num(judged["impressions_28d"]), nan=0.0) > 0
    out = {"rows_with_human_grade": int(len(judged)), "rows_with_impressions": int(shown.sum()),
           "queries": int(judged["query_id"].nunique()), "signals": {}}
    for label, col in SIGNALS:
        if col not in judged.columns:
            continue
        x = _num(judged[col])
        rho, n = _rho(x, y)
        rho_s, n_s = _rho(x[shown], y[shown])
        rho_q, n_q = _per_query_rho(judged, col)
        out["signals"][col] = {"label": label, "spearman": rho, "n": n, "coverage": n / max(len(judged), 1),
                               "spearman_shown": rho_s, "n_shown": n_s,
                               "spearman_per_query_mean": rho_q, "queries_per_query": n_q}
    s = out["signals"]
    base = (s.get("ctr_raw_28d") or {}).get("spearman")
    for col in ("target", "grade", "expected_grade"):
        if base is not None and s.get(col, {}).get("spearman") is not None:
            s[col]["minus_raw_ctr"] = s[col]["spearman"] - base
    return out


def quality_metrics(train: pd.DataFrame, report_rows: pd.DataFrame) -> dict:
    both = pd.concat([train, report_rows], ignore_index=True)
    g = pd.to_numeric(both["grade"], errors="coerce")
    dist = (both.assign(grade=g.astype("Float64")).groupby(["split", "segment"])["grade"]
            .value_counts(normalize=True, dropna=False).rename("share").reset_index())
    levels = pd.to_numeric(train["difficulty_level"]).value_counts().sort_index()
    sizes = train.groupby("query_id").size()
    return {
        "grade_share_by_split_segment": [
            {"split": r.split, "segment": r.segment, "grade": None if pd.isna(r.grade) else int(r.grade), "share": float(r.share)}
            for r in dist.itertuples()],
        "difficulty_level_counts": {str(int(k)): int(v) for k, v in levels.items()},
        "category_counts": {str(k): int(v) for k, v in train["category"].value_counts().items()},
        "level_source_counts": {str(k): int(v) for k, v in train["level_source"].value_counts().items()}
        if "level_source" in train else {},
        "missing_rate": {c: float(train[c].isna().mean()) for c in MISSING_COLUMNS if c in train},
        "list_size": {"min": int(sizes.min()), "median": float(sizes.median()), "max": int(sizes.max())},
        "target": {"mean": float(train["target"].mean()), "min": float(train["target"].min()),
                   "max": float(train["target"].max())},
        "target_source_counts": {str(k): int(v) for k, v in train["target_source"].value_counts().items()},
        "segment_rows": {str(k): int(v) for k, v in train["segment"].value_counts().items()},
    }


# --------------------------------------------------------------------------- plots
def _plots(train: pd.DataFrame, report_rows: pd.DataFrame, judged: pd.DataFrame, ev: dict, qm: dict) -> dict[str, str]:
    """The report's figures as base64 PNGs, in page order (engagement and Spearman only when there is data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {"grade_by_split_segment": _grade_mix_plot(plt, train, report_rows),
           "prior_vs_grade": _prior_plot(plt, train)}
    if len(judged):
        out["engagement_vs_human_grade"] = _engagement_plot(plt, judged)
    out["difficulty_levels"] = _levels_plot(plt, qm)
    out["missing_rates"] = _missing_plot(plt, qm)
    sig = [(v["label"], v["spearman"]) for v in ev["signals"].values() if v["spearman"] is not None]
    if sig:
        out["spearman"] = _spearman_plot(plt, sig)
    return out


def _grade_mix_plot(plt, train: pd.DataFrame, report_rows: pd.DataFrame) -> str:
    """1. grade distribution by split and segment."""
    both = pd.concat([train, report_rows], ignore_index=True)
    both["g"] = pd.to_numeric(both["grade"], errors="coerce").fillna(-1).astype(int)
    tab = pd.crosstab([both["split"], both["segment"]], both["g"], normalize="index")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    left = np.zeros(len(tab))
    colors = {-1: "#bbbbbb", 0: "#c44e52", 1: "#dd8452", 2: "#55a868", 3: "#4c72b0"}
    for g in tab.columns:
        ax.barh([f"{s}/{seg}" for s, seg in tab.index], tab[g].to_numpy(), left=left, color=colors.get(g),
                label="no grade" if g == -1 else f"grade {g}")
        left += tab[g].to_numpy()
    ax.set_xlabel("share of union rows")
    ax.set_title("Cascade grade distribution by split / segment")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)


def _prior_plot(plt, train: pd.DataFrame) -> str:
    """2. prior against grade."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    gr = pd.to_numeric(train["grade"], errors="coerce")
    data = [train.loc[gr == g, "retrieval_prior"].astype(float).to_numpy() for g in range(4)]
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, 5), [f"grade {g}\n(n={len(d)})" for g, d in enumerate(data)])
    ax.set_ylabel("retrieval prior")
    ax.set_title("Retrieval prior by cascade grade (training rows)")
    return _png(fig)


def _engagement_plot(plt, judged: pd.DataFrame) -> str:
    """3. raw / debiased / gated engagement against the human grade (dev)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    hg = judged["human_grade"].astype(int)
    for col, lab in (("ctr_raw_28d", "raw CTR"), ("ctr_debiased_28d", "debiased CTR"),
                     ("engagement_smoothed", "smoothed engagement"), ("gated_preference", "gated preference")):
        m = pd.to_numeric(judged[col], errors="coerce").groupby(hg).mean()
        cov = pd.to_numeric(judged[col], errors="coerce").notna().mean()
        ax.plot(m.index, m.to_numpy(), marker="o", label=f"{lab} (present on {cov:.0%} of rows)")
    ax.set_xticks(range(4))
    ax.set_xlabel("human grade")
    ax.set_ylabel("mean over pairs where present")
    ax.set_title(f"Engagement against the human grade ({len(judged)} judged dev rows)")
    ax.legend(fontsize=7)
    return _png(fig)


def _levels_plot(plt, qm: dict) -> str:
    """4. difficulty level counts."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    lv = qm["difficulty_level_counts"]
    ax.bar(list(lv), list(lv.values()), color="#4c72b0")
    ax.set_xlabel("difficulty level (1 easiest .. 5 hardest)")
    ax.set_ylabel("training rows")
    ax.set_title("Difficulty-level counts")
    return _png(fig)


def _missing_plot(plt, qm: dict) -> str:
    """5. missing-feature rates."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    mr = qm["missing_rate"]
    ax.barh(list(mr), list(mr.values()), color="#8172b2")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of training rows with the feature missing")
    ax.set_title("Missing-feature rates")
    return _png(fig)


def _spearman_plot(plt, sig: list[tuple[str, float]]) -> str:
    """6. rank correlations."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.barh([s[0] for s in sig], [s[1] for s in sig], color="#55a868")
    for i, (_, r) in enumerate(sig):
        ax.text(r, i, f" {r:.3f}", va="center", fontsize=8)
    ax.set_xlabel("Spearman rho with the human grade (dev)")
    ax.set_title("Which signal ranks like a human?")
    return _png(fig)


def _examples(judged: pd.DataFrame, n: int) -> list[dict]:
    if n <= 0 or len(judged) == 0:
        return []
    qs = judged["query_id"].drop_duplicates().sample(min(3, judged["query_id"].nunique()), random_state=0)
    part = judged[judged["query_id"].isin(qs)].sort_values(["query_id", "target"], ascending=[True, False]).head(n)
    return [{"query": r.query_text, "item": r.item_title, "human grade": int(r.human_grade),
             "cascade grade": None if pd.isna(r.grade) else int(r.grade), "prior": float(r.retrieval_prior),
             "raw CTR": None if pd.isna(r.ctr_raw_28d) else float(r.ctr_raw_28d),
             "gated pref": None if pd.isna(r.gated_preference) else float(r.gated_preference),
             "target": float(r.target), "level": int(r.difficulty_level)} for r in part.itertuples()]


def write_report(out_dir: Path, data_docs: Path, train: pd.DataFrame, report_rows: pd.DataFrame,
                 judgments: pd.DataFrame, manifest: dict, report_split: str = "dev", examples: int = 12) -> dict:
    """report.json + report.html under ``out_dir``; a link page in ``data_docs``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    judged = with_human_grades(report_rows, judgments)
    ev = spearman_evidence(judged)
    qm = quality_metrics(train, report_rows)
    doc = {"generated_at": datetime.now(timezone.utc).isoformat(), "report_split": report_split,
           "rank_correlation_with_human_grade": ev, "quality": qm,
           "manifest": {k: manifest.get(k) for k in ("cut_ts", "snapshot_ts", "rows", "teacher_versions", "content_hash",
                                                     "gated_engagement", "timings")}}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=2, default=str))
    plots = _plots(train, report_rows, judged, ev, qm)
    sig_rows = [{"signal": v["label"], "column": k, "spearman (rows with signal)": v["spearman"], "n": v["n"],
                 "coverage": v["coverage"], "spearman (rows with impressions)": v["spearman_shown"], "n shown": v["n_shown"],
                 "mean within-query spearman": v["spearman_per_query_mean"], "queries": v["queries_per_query"]}
                for k, v in ev["signals"].items()]
    rows = manifest.get("rows", {})
    summary = [{"cut": manifest.get("cut_ts"), "training rows": rows.get("trainset"), "queries": rows.get("queries"),
                "with grade": rows.get("with_grade"), "with preference": rows.get("with_preference"),
                f"{report_split} rows": rows.get("report_split_rows"), "content hash": (manifest.get("content_hash") or "")[:16],
                "teacher versions": ", ".join(f"{k} ({v})" for k, v in (manifest.get("teacher_versions") or {}).items())}]
    gz = manifest.get("gated_engagement") or {}
    gate = {"pairs shown in the 28-day window": gz.get("pairs"), "graded": gz.get("pairs_graded"),
            "passing the gate (grade >= gate_min_grade)": gz.get("pairs_gated"),
            "share of graded pairs passing": gz.get("gate_pass_share")}
    imgs = "".join(f'<h3>{html.escape(k.replace("_", " "))}</h3><img src="data:image/png;base64,{v}"/>' for k, v in plots.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>relgrade: training set data quality</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style></head><body>
<h1>Training set: data quality</h1>
<p>Point-in-time training set cut at {html.escape(str(manifest.get("cut_ts")))}. Validation results:
<a href="../data_docs/index.html">Great Expectations Data Docs</a> (suite <code>training_set</code>).</p>
{_table(summary, list(summary[0]))}
<h2>The engagement gate</h2>
{_table([gate], list(gate))}
<h2>Rank correlation with the human grade ({html.escape(report_split)} queries)</h2>
<p>{ev["rows_with_human_grade"]} judged {html.escape(report_split)} rows of {ev["queries"]} queries assembled through the same
point-in-time path as the training rows; {ev["rows_with_impressions"]} of them had impressions in the 28-day window.</p>
{_table(sig_rows, list(sig_rows[0]) if sig_rows else [])}
<h2>Plots</h2>{imgs}
<h2>Examples ({html.escape(report_split)}, judged)</h2>
{_table(_examples(judged, examples), ["query", "item", "human grade", "cascade grade", "prior", "raw CTR", "gated pref", "target", "level"])}
</body></html>"""
    (out_dir / "report.html").write_text(page)
    link_from_data_docs(data_docs, out_dir / "report.html")
    return doc


LINK_MARK = "relgrade-assemble-report"


def link_from_data_docs(data_docs: Path, report: Path) -> Path:
    """A link page in the Data Docs folder, and a link in its index.html (idempotent;
    the index is rebuilt by GX on the next validation, the link page stays)."""
    data_docs.mkdir(parents=True, exist_ok=True)
    rel = Path("..") / report.parent.name / report.name
    page = data_docs / "assemble_report.html"
    page.write_text(f'<!doctype html><meta http-equiv="refresh" content="0; url={html.escape(str(rel))}">'
                    f'<a href="{html.escape(str(rel))}">Training set data-quality report</a>')
    index = data_docs / "index.html"
    if index.exists():
        text = index.read_text()
        if LINK_MARK not in text and "</body>" in text:
            link = (f'<div id="{LINK_MARK}" style="margin:1em"><a href="assemble_report.html">'
                    f'Training set data-quality report (assemble)</a></div>')
            index.write_text(re.sub(r"</body>", link + "</body>", text, count=1))
    return page
