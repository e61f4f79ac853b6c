"""Mining report on queries with human labels (default: the dev split).

* recall@K of judged items with grade >= 2, per channel and for the union (every item
  any channel returned), plus the union cut to K by the prior (same budget as one
  channel) and recall@10;
* pairwise overlap between channels at K (overlap coefficient and Jaccard);
* share of each category and difficulty level, by channel pattern and refined by the
  human grades (:func:`relgrade.mining.prior.refine_levels`);
* mean human grade by agreement count (judged items no channel returned count as
  agreement 0) and by category; rank correlation of the prior with the grade.

Written as JSON plus a self-contained HTML page (plots embedded as base64 PNG; every
query and catalog string is escaped with :func:`html.escape`).
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.mining.prior import CATEGORIES, CHANNELS, LETTERS, LEVELS, refine_levels
from relgrade.reporting import fmt, png, table


def _channels_in(union: pd.DataFrame) -> list[str]:
    return [c for c in CHANNELS if f"rank_{c}" in union.columns and union[f"rank_{c}"].notna().any()]


def _eval_sets(union: pd.DataFrame, judgments: pd.DataFrame, queries: pd.DataFrame, split: str | None,
               positive_grade: int, catalog: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    q = queries if split is None else queries[queries["split"] == split]
    qids = set(q["query_id"].astype(str))
    j = judgments[["query_id", "item_id", "grade"]].dropna(subset=["grade"]).copy()
    j["query_id"], j["item_id"] = j["query_id"].astype(str), j["item_id"].astype(str)
    j = j[j["query_id"].isin(qids)].drop_duplicates(["query_id", "item_id"])
    if catalog is not None:
        j = j[j["item_id"].isin(set(catalog["item_id"].astype(str)))]
    j["grade"] = j["grade"].astype(int)
    eval_q = sorted(set(j.loc[j["grade"] >= positive_grade, "query_id"]))
    u = union[union["query_id"].astype(str).isin(set(eval_q))]
    return u, j[j["query_id"].isin(set(eval_q))], eval_q


def _recall(found_pairs: pd.DataFrame, rel: pd.DataFrame) -> dict:
    """Macro (mean over queries) and micro recall of ``rel`` pairs within ``found_pairs``."""
    if len(rel) == 0:
        return {"macro": None, "micro": None}
    key_f = pd.MultiIndex.from_arrays([found_pairs["query_id"].astype(str), found_pairs["item_id"].astype(str)])
    hit = pd.MultiIndex.from_arrays([rel["query_id"], rel["item_id"]]).isin(key_f)
    per_q = pd.Series(hit, index=rel["query_id"].to_numpy()).groupby(level=0).mean()
    return {"macro": float(per_q.mean()), "micro": float(hit.mean())}


def compute_metrics(
    union: pd.DataFrame,
    judgments: pd.DataFrame,
    queries: pd.DataFrame,
    k: int,
    split: str | None = "dev",
    positive_grade: int = 2,
    near_top_rank: int = 10,
    high_rank: int = 10,
    catalog: pd.DataFrame | None = None,
) -> dict:
    """Every number of the report, as a JSON-able dict."""
    chans = _channels_in(union)
    u, j, eval_q = _eval_sets(union, judgments, queries, split, positive_grade, catalog)
    rel = j[j["grade"] >= positive_grade]
    m: dict = {"split": split, "k": k, "positive_grade": positive_grade, "channels": chans,
               "eval_queries": len(eval_q), "judged_pairs": int(len(j)), "relevant_pairs": int(len(rel)),
               "union_rows_eval": int(len(u))}
    recall = _recall_metrics(u, rel, chans, k)
    m["recall"] = recall
    singles = {c: recall[c][f"recall@{k}"]["macro"] for c in chans}
    if singles:
        m["union_vs_best_single"] = _union_vs_best_single(singles, recall["union"][f"recall@{k}"]["macro"], len(u), len(eval_q))
    m["pairwise_overlap"] = _pairwise_overlap(u, chans, k)

    # ---- categories and levels
    m["category_share_pattern"] = _shares(u["category"], CATEGORIES)
    m["level_share_pattern"] = _shares(u["difficulty_level"].astype(int), LEVELS)
    m["pattern_share"] = {p: float(v) for p, v in u["channel_pattern"].value_counts(normalize=True).head(16).items()}
    m.update(_judged_metrics(u, j, positive_grade))
    refined = refine_levels(u, j, near_top_rank=near_top_rank, high_rank=high_rank, positive_grade=positive_grade)
    graded = refined[refined["level_source"] == "grade"]
    m["category_share_refined_judged"] = _shares(graded["category"], CATEGORIES)
    m["level_share_refined_judged"] = _shares(graded["difficulty_level"].astype(int), LEVELS)
    return m


def _recall_metrics(u: pd.DataFrame, rel: pd.DataFrame, chans: list[str], k: int) -> dict[str, dict]:
    """Recall@K (and @10) of each channel, of the union, and of the union's top K by prior."""
    recall: dict[str, dict] = {}
    for c in chans:
        col = u[f"rank_{c}"]
        recall[c] = {f"recall@{k}": _recall(u[col.notna() & (col <= k)], rel),
                     "recall@10": _recall(u[col.notna() & (col <= 10)], rel)}
    recall["union"] = {f"recall@{k}": _recall(u, rel)}
    by_prior = u.sort_values(["query_id", "retrieval_prior"], ascending=[True, False], kind="stable")
    pr = by_prior.groupby("query_id", sort=False).cumcount() + 1
    recall["union_prior_top_k"] = {f"recall@{k}": _recall(by_prior[pr.to_numpy() <= k], rel),
                                   "recall@10": _recall(by_prior[pr.to_numpy() <= 10], rel)}
    return recall


def _union_vs_best_single(singles: dict[str, float | None], uni: float | None, n_rows: int, n_queries: int) -> dict:
    """The union's macro recall against the best single channel's."""
    best = max(singles, key=lambda c: singles[c] or 0)
    return {
        "best_channel": best, "best_channel_recall": singles[best], "union_recall": uni,
        "absolute_gain": None if uni is None else uni - singles[best],
        "relative_gain": None if uni is None or not singles[best] else uni / singles[best] - 1.0,
        "union_beats_every_channel": None if uni is None else all(uni > (v or 0) for v in singles.values()),
        "mean_candidates_per_query_union": float(n_rows / max(1, n_queries)),
    }


def _pairwise_overlap(u: pd.DataFrame, chans: list[str], k: int) -> list[dict]:
    """Overlap coefficient and Jaccard at K of each channel pair (queries where both channels are active)."""
    overlap = []
    for a_i, a in enumerate(chans):
        for b in chans[a_i + 1:]:
            ra, rb = u[f"rank_{a}"], u[f"rank_{b}"]
            fa, fb = (ra.notna() & (ra <= k)).to_numpy(), (rb.notna() & (rb <= k)).to_numpy()
            g = pd.DataFrame({"q": u["query_id"].to_numpy(), "a": fa, "b": fb, "ab": fa & fb}).groupby("q").sum()
            g = g[(g["a"] > 0) & (g["b"] > 0)]
            if g.empty:
                overlap.append({"a": a, "b": b, "queries": 0, "overlap_coefficient": None, "jaccard": None, "shared_per_query": None})
                continue
            oc = (g["ab"] / np.minimum(g["a"], g["b"])).mean()
            jac = (g["ab"] / (g["a"] + g["b"] - g["ab"])).mean()
            overlap.append({"a": a, "b": b, "queries": int(len(g)), "overlap_coefficient": float(oc),
                            "jaccard": float(jac), "shared_per_query": float(g["ab"].mean())})
    return overlap


def _shares(s: pd.Series, keys) -> dict:
    """Count and share of each key among the values of ``s``."""
    n = max(1, len(s))
    vc = s.value_counts()
    return {str(key): {"count": int(vc.get(key, 0)), "share": float(vc.get(key, 0) / n)} for key in keys}


def _judged_metrics(u: pd.DataFrame, j: pd.DataFrame, positive_grade: int) -> dict:
    """Judged pairs: grade by agreement, by pattern category and by channel pattern; prior against grade."""
    m: dict = {}
    jk = j.merge(u, on=["query_id", "item_id"], how="left")
    jk["agreement"] = jk["agreement"].fillna(0).astype(int)
    by_agree = jk.groupby("agreement")["grade"].agg(["count", "mean"])
    by_agree["share_relevant"] = jk.assign(r=jk["grade"] >= positive_grade).groupby("agreement")["r"].mean()
    m["grade_by_agreement"] = [
        {"agreement": int(a), "judged_pairs": int(r["count"]), "mean_grade": float(r["mean"]),
         "share_grade_ge_positive": float(r["share_relevant"])} for a, r in by_agree.iterrows()
    ]
    found = jk[jk["agreement"] > 0]
    by_cat = found.groupby("category")["grade"].agg(["count", "mean"])
    m["grade_by_pattern_category"] = {str(c): {"judged_pairs": int(r["count"]), "mean_grade": float(r["mean"])}
                                      for c, r in by_cat.iterrows()}
    by_pat = found.groupby("channel_pattern")["grade"].agg(["count", "mean"]).sort_values("count", ascending=False)
    m["grade_by_channel_pattern"] = {str(p): {"judged_pairs": int(r["count"]), "mean_grade": float(r["mean"])}
                                     for p, r in by_pat.iterrows()}
    if len(found) > 2:
        rho = found["retrieval_prior"].rank().corr(found["grade"].rank())
        pos = found["grade"] >= positive_grade
        auc = None
        if pos.any() and (~pos).any():
            rk = found["retrieval_prior"].rank()
            n1, n0 = int(pos.sum()), int((~pos).sum())
            auc = float((rk[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
        m["prior_vs_grade"] = {"judged_pairs_found": int(len(found)), "spearman": float(rho), "auc_relevant": auc}
    return m


# --------------------------------------------------------------------------- rendering
_png = png
_fmt = fmt
_table = table


def _plots(m: dict) -> dict[str, str]:
    """The report's figures as base64 PNGs: recall, overlap (two channels or more), categories, grade by agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {"recall": _recall_plot(plt, m)}
    if len(m["channels"]) >= 2:
        out["overlap"] = _overlap_plot(plt, m)
    out["categories"] = _categories_plot(plt, m)
    out["grade_by_agreement"] = _agreement_plot(plt, m)
    return out


def _recall_plot(plt, m: dict) -> str:
    """Bar chart of recall@K per channel, the union and the union's top K by prior."""
    k = m["k"]
    names = m["channels"] + ["union", "union_prior_top_k"]
    vals = [m["recall"][n][f"recall@{k}"]["macro"] or 0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bars = ax.bar(names, vals, color=["#4c72b0"] * len(m["channels"]) + ["#dd8452", "#c44e52"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"recall@{k} (grade >= {m['positive_grade']})")
    ax.set_title(f"Recall of judged relevant items, {m['split']} queries (n={m['eval_queries']})")
    ax.tick_params(axis="x", labelrotation=15)
    return _png(fig)


def _overlap_plot(plt, m: dict) -> str:
    """Heat map of the pairwise overlap coefficient at K."""
    chans = m["channels"]
    mat = np.eye(len(chans))
    for o in m["pairwise_overlap"]:
        i, jj = chans.index(o["a"]), chans.index(o["b"])
        mat[i, jj] = mat[jj, i] = o["overlap_coefficient"] or 0
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(chans)), chans, rotation=20)
    ax.set_yticks(range(len(chans)), chans)
    for i in range(len(chans)):
        for jj in range(len(chans)):
            ax.text(jj, i, f"{mat[i, jj]:.2f}", ha="center", va="center", color="w" if mat[i, jj] < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"Overlap coefficient at K={m['k']}")
    return _png(fig)


def _categories_plot(plt, m: dict) -> str:
    """Category and level shares, by pattern and refined by grade, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key_p, key_r, labels, title in (
        (axes[0], "category_share_pattern", "category_share_refined_judged", list(CATEGORIES), "Category share"),
        (axes[1], "level_share_pattern", "level_share_refined_judged", [str(x) for x in LEVELS], "Difficulty level share"),
    ):
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [m[key_p][lab]["share"] for lab in labels], 0.4, label="pattern (all union rows)")
        ax.bar(x + 0.2, [m[key_r][lab]["share"] for lab in labels], 0.4, label="refined by grade (judged rows)")
        ax.set_xticks(x, labels, rotation=15, fontsize=8)
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    return _png(fig)


def _agreement_plot(plt, m: dict) -> str:
    """Mean human grade and share relevant by agreement count."""
    ga = m["grade_by_agreement"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    xs = [g["agreement"] for g in ga]
    ax.plot(xs, [g["mean_grade"] for g in ga], "o-", label="mean grade")
    ax.plot(xs, [3 * g["share_grade_ge_positive"] for g in ga], "s--", label=f"3 x share grade >= {m['positive_grade']}")
    for g in ga:
        ax.annotate(f"n={g['judged_pairs']}", (g["agreement"], g["mean_grade"]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xlabel("agreement (channels that returned the item)")
    ax.set_ylabel("human grade (0..3)")
    ax.set_ylim(0, 3.2)
    ax.legend(fontsize=7)
    ax.set_title("Human grade by agreement count")
    return _png(fig)


def _examples(union: pd.DataFrame, judgments: pd.DataFrame, queries: pd.DataFrame, catalog: pd.DataFrame | None,
              eval_q: set[str], per_cat: int = 4) -> list[dict]:
    u = union[union["query_id"].astype(str).isin(eval_q)]
    j = judgments[["query_id", "item_id", "grade"]].astype({"query_id": str, "item_id": str})
    u = u.merge(j, on=["query_id", "item_id"], how="inner")
    text = dict(zip(queries["query_id"].astype(str), queries["text"].astype(str)))
    title = dict(zip(catalog["item_id"].astype(str), catalog["title"].astype(str))) if catalog is not None else {}
    rows = []
    for cat in CATEGORIES:
        part = u[u["category"] == cat]
        if len(part):
            part = part.sample(min(per_cat, len(part)), random_state=0)
        for _, r in part.iterrows():
            rows.append({"category": cat, "level": int(r["difficulty_level"]), "query": text.get(r["query_id"], r["query_id"]),
                         "item": title.get(r["item_id"], r["item_id"]), "pattern": r["channel_pattern"],
                         "ranks": " / ".join("-" if pd.isna(r[f"rank_{c}"]) else str(int(r[f"rank_{c}"])) for c in CHANNELS),
                         "prior": float(r["retrieval_prior"]), "grade": int(r["grade"])})
    return rows


def render_html(m: dict, examples: list[dict] | None = None, stats: dict | None = None) -> str:
    k = m["k"]
    plots = _plots(m)
    esc = html.escape
    uv = m.get("union_vs_best_single", {})
    rec_rows = [{"set": n, f"recall@{k} (macro)": m["recall"][n][f"recall@{k}"]["macro"],
                 f"recall@{k} (micro)": m["recall"][n][f"recall@{k}"]["micro"],
                 "recall@10 (macro)": m["recall"][n].get("recall@10", {}).get("macro")} for n in m["recall"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>relgrade mining report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>Retrieval mining report ({esc(str(m['split']))} queries)</h1>",
        f"<p>{m['eval_queries']} {esc(str(m['split']))} queries with at least one judged item of grade &ge; {m['positive_grade']}"
        f" ({m['relevant_pairs']} relevant of {m['judged_pairs']} judged pairs); K = {k}; channels: {esc(', '.join(m['channels']))}."
        f" Generated {esc(m.get('generated_at', ''))}.</p>",
        "<h2>Recall of judged relevant items</h2>",
    ]
    if uv:
        parts.append(
            f"<p>The union of all channels reaches recall@{k} {_fmt(uv['union_recall'])} against {_fmt(uv['best_channel_recall'])} for the best"
            f" single channel ({esc(uv['best_channel'])}): +{_fmt(uv['absolute_gain'])} absolute, +{100 * (uv['relative_gain'] or 0):.1f}% relative,"
            f" with {uv['mean_candidates_per_query_union']:.0f} candidates per query. Union beats every channel: {esc(str(uv['union_beats_every_channel']))}.</p>")
    parts += [_table(rec_rows, list(rec_rows[0])), f"<img src='data:image/png;base64,{plots['recall']}'>"]
    parts.append(f"<h2>Pairwise overlap at K={k}</h2>")
    parts.append(_table(m["pairwise_overlap"], ["a", "b", "queries", "overlap_coefficient", "jaccard", "shared_per_query"]))
    if "overlap" in plots:
        parts.append(f"<img src='data:image/png;base64,{plots['overlap']}'>")
    parts.append("<h2>Categories and difficulty levels</h2>")
    cat_rows = [{"category": c, "pattern share": m["category_share_pattern"][c]["share"],
                 "pattern count": m["category_share_pattern"][c]["count"],
                 "refined share (judged)": m["category_share_refined_judged"][c]["share"],
                 "mean grade (pattern, judged)": m["grade_by_pattern_category"].get(c, {}).get("mean_grade")} for c in CATEGORIES]
    parts.append(_table(cat_rows, list(cat_rows[0])))
    lvl_rows = [{"level": lv, "pattern share": m["level_share_pattern"][str(lv)]["share"],
                 "refined share (judged)": m["level_share_refined_judged"][str(lv)]["share"]} for lv in LEVELS]
    parts.append(_table(lvl_rows, list(lvl_rows[0])))
    parts.append(f"<img src='data:image/png;base64,{plots['categories']}'>")
    parts.append("<h2>Human grade by agreement count</h2>")
    parts.append(_table(m["grade_by_agreement"], ["agreement", "judged_pairs", "mean_grade", "share_grade_ge_positive"]))
    parts.append(f"<img src='data:image/png;base64,{plots['grade_by_agreement']}'>")
    if "prior_vs_grade" in m:
        pv = m["prior_vs_grade"]
        parts.append(f"<p>Prior vs human grade on {pv['judged_pairs_found']} judged pairs some channel returned: Spearman"
                     f" {_fmt(pv['spearman'])}, AUC for grade &ge; {m['positive_grade']} {_fmt(pv['auc_relevant'])}.</p>")
    pat_rows = [{"pattern": p, **v} for p, v in list(m["grade_by_channel_pattern"].items())[:12]]
    if pat_rows:
        parts.append("<h3>Mean grade by channel pattern (order L D B E)</h3>")
        parts.append(_table(pat_rows, ["pattern", "judged_pairs", "mean_grade"]))
    if examples:
        parts.append("<h2>Examples (judged pairs)</h2>")
        parts.append(_table(examples, ["category", "level", "query", "item", "pattern", "ranks", "prior", "grade"]))
    if stats:
        parts.append("<h2>Run statistics</h2><pre>" + esc(json.dumps(stats, indent=1, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def mining_report(
    union: pd.DataFrame,
    judgments: pd.DataFrame,
    queries: pd.DataFrame,
    catalog: pd.DataFrame | None = None,
    k: int = 100,
    out_dir: str | Path | None = None,
    split: str | None = "dev",
    stats: dict | None = None,
    positive_grade: int = 2,
    near_top_rank: int = 10,
    high_rank: int = 10,
    name: str = "mining_report",
) -> dict:
    """Compute the metrics and, with ``out_dir``, write ``<name>.json`` and
    ``<name>.html``. Returns ``{"metrics", "json", "html"}`` (paths None when not written)."""
    m = compute_metrics(union, judgments, queries, k, split, positive_grade, near_top_rank, high_rank, catalog)
    m["generated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if stats is not None:
        m["run_stats"] = stats
    res = {"metrics": m, "json": None, "html": None}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _, _, eval_q = _eval_sets(union, judgments, queries, split, positive_grade, catalog)
        ex = _examples(union, judgments, queries, catalog, set(eval_q))
        jp, hp = out / f"{name}.json", out / f"{name}.html"
        jp.write_text(json.dumps(m, indent=1, default=str))
        hp.write_text(render_html(m, ex, stats), encoding="utf-8")
        res.update(json=str(jp), html=str(hp))
    return res


__all__ = ["compute_metrics", "mining_report", "render_html", "LETTERS"]
