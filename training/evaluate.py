"""Evaluate every model on human-labelled held-out queries (default: the test split).

Per query (``query_metrics``), for each model:

* ``ndcg@10`` - judged-set NDCG: the query's judged items ranked by the model's score,
  gain 2^grade - 1, ideal order from the same judged set (queries whose judged items
  are all grade 0 have no ideal gain and are left out); also reported over the queries
  with at least one grade-0 judged item (``ndcg@10_g0``), where ranking matters;
* ``emb@3`` - embarrassing@3: share of the top-3 ranked judged items with grade 0;
* ``recall@100`` - full catalog: the model's FAISS index over every catalog item,
  share of the query's judged grade >= 2 items in its top 100 (BM25: bm25s top 100).

Ties (BM25 scores 0) are broken by a fixed hash of the item id, never by input order.
Aggregates are means over queries with percentile bootstrap intervals (queries
resampled with replacement, the same resamples for every model, so differences and
ratios between models get paired intervals), overall and by head / torso / tail.
"""
from __future__ import annotations

import html
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.reporting import png
from training.args import CLICK, STUDENT, base_model_path
from relgrade.util import Progress, utc_now
from training.index import build_index, encode, load_index, search

log = logging.getLogger("training.evaluate")

SEGMENTS = ("head", "torso", "tail")
MODEL_LABELS = {STUDENT: "student (relgrade)", CLICK: "click-trained", "base": "base MiniLM", "bm25": "BM25",
                "teacher": "teacher cascade (judged set only)"}


@dataclass
class EvalData:
    queries: pd.DataFrame  # query_id, text, segment (queries with >= 1 judged catalog item)
    judged: pd.DataFrame  # query_id, item_id, grade, qi (row of queries), ci (catalog position)
    item_ids: np.ndarray  # catalog order
    item_texts: list[str]
    tie: np.ndarray = field(default=None)  # per judged row: fixed pseudo-random tie-break


def load_eval_data(cfg: RelgradeConfig) -> EvalData:
    from relgrade.mining.channels import item_texts

    e = cfg.evaluation
    cat = pd.read_parquet(cfg.paths.table("catalog")).drop_duplicates("item_id").reset_index(drop=True)
    cat["item_id"] = cat["item_id"].astype(str)
    q = pd.read_parquet(cfg.paths.table("queries"))
    q = q[q["split"] == e.split][["query_id", "text", "segment"]].copy()
    q["query_id"] = q["query_id"].astype(str)
    j = pd.read_parquet(cfg.paths.table("judgments"), columns=["query_id", "item_id", "grade"])
    j = j.dropna(subset=["grade"]).astype({"query_id": str, "item_id": str})
    j = j[j["query_id"].isin(set(q["query_id"]))].drop_duplicates(["query_id", "item_id"], keep="last")
    pos = pd.Index(cat["item_id"]).get_indexer(j["item_id"])
    j = j[pos >= 0].assign(ci=pos[pos >= 0])
    q = q[q["query_id"].isin(set(j["query_id"]))].sort_values("query_id").reset_index(drop=True)
    j["qi"] = pd.Index(q["query_id"]).get_indexer(j["query_id"])
    j["grade"] = j["grade"].astype(int)
    j = j.sort_values(["qi", "item_id"]).reset_index(drop=True)
    tie = (pd.util.hash_array(j["item_id"].to_numpy(dtype=object)) % 1_000_003).astype(np.float64) / 1_000_003
    return EvalData(q, j, cat["item_id"].to_numpy(dtype=object), item_texts(cat).tolist(), tie)


# ---------------------------------------------------------------- scorers
@dataclass
class Scored:
    """A model's output on the evaluation data."""

    judged_scores: np.ndarray  # per judged row
    topk: list[set[int]]  # per query: catalog positions of the full-catalog top k
    stats: dict


def score_dense(model, item_emb: np.ndarray, index, ed: EvalData, k: int, max_seq_length: int, cfg: RelgradeConfig,
                query_emb: np.ndarray | None = None) -> Scored:
    t = cfg.training
    t0 = time.perf_counter()
    qemb = query_emb if query_emb is not None else encode(
        model, ed.queries["text"].tolist(), t.encode_batch_size, max_seq_length, t.encode_precision,
        t.progress_every_s, what="encode eval queries")
    t_q = time.perf_counter() - t0
    js = np.einsum("ij,ij->i", qemb[ed.judged["qi"].to_numpy()], item_emb[ed.judged["ci"].to_numpy()])
    t0 = time.perf_counter()
    _, I = search(index, qemb, k)
    t_s = time.perf_counter() - t0
    return Scored(js, [set(r[r >= 0].tolist()) for r in I],
                  {"query_encode_s": round(t_q, 3), "search_s": round(t_s, 3), "queries": len(qemb)})


def score_trained(folder: Path, ed: EvalData, cfg: RelgradeConfig, k: int, full_catalog: bool = True) -> Scored:
    """A trained folder with its saved catalog index (built now if it has none). With
    ``full_catalog=False`` only the judged items are encoded and recall is not measured
    (a cheap judged-set-only evaluation for ad-hoc runs)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    if not full_catalog:
        t = cfg.training
        ci = np.unique(ed.judged["ci"].to_numpy())
        emb = np.zeros((len(ed.item_ids), model.get_embedding_dimension()), dtype=np.float32)
        emb[ci] = encode(model, [ed.item_texts[i] for i in ci], t.encode_batch_size, t.max_seq_length,
                         t.encode_precision, t.progress_every_s, what=f"encode judged items ({folder.name})")
        qemb = encode(model, ed.queries["text"].tolist(), t.encode_batch_size, t.max_seq_length, t.encode_precision,
                      t.progress_every_s, what="encode eval queries")
        js = np.einsum("ij,ij->i", qemb[ed.judged["qi"].to_numpy()], emb[ed.judged["ci"].to_numpy()])
        return Scored(js, None, {"judged_items_encoded": int(len(ci)), "full_catalog": False})
    loaded = load_index(folder)
    if loaded is None or len(loaded[1]) != len(ed.item_ids) or list(loaded[1][:5]) != [str(i) for i in ed.item_ids[:5]]:
        from training.student import index_catalog

        log.info("%s: no matching catalog index, building one", folder)
        index_catalog(cfg, model, folder)
        loaded = load_index(folder)
    index, ids = loaded
    pos = pd.Index([str(i) for i in ed.item_ids]).get_indexer(ids)
    if (pos < 0).any() or len(ids) != len(ed.item_ids):
        raise ValueError(f"{folder}: index items do not match the catalog")
    emb = np.zeros((len(ids), index.d), dtype=np.float32)
    emb[pos] = index.reconstruct_n(0, index.ntotal)
    if not np.array_equal(pos, np.arange(len(pos))):  # re-index in catalog order
        index = build_index(emb, cfg.training.threads)
    return score_dense(model, emb, index, ed, k, cfg.training.max_seq_length, cfg)


def score_base(ed: EvalData, cfg: RelgradeConfig, k: int) -> Scored:
    """The off-the-shelf model, encoded exactly as the mining stage's dense channel does
    (same settings and embedding cache, so the catalog is usually not re-encoded)."""
    from relgrade.mining.channels import DenseChannel
    from relgrade.mining.stage import embedding_cache_dir

    m = cfg.mining
    ch = DenseChannel(model_path=base_model_path(cfg), batch_size=m.dense_batch_size, max_seq_length=m.dense_max_seq_length,
                      precision=m.dense_precision, cache_dir=embedding_cache_dir(cfg), threads=cfg.training.threads)
    prog = Progress("encode catalog (base)", len(ed.item_texts), cfg.training.progress_every_s, log, unit="texts")
    emb = ch.encode(ed.item_texts, progress=lambda d, n: prog(d), what="items")
    qemb = ch.encode(ed.queries["text"].tolist(), what="queries")
    index = build_index(emb, cfg.training.threads)
    out = score_dense(None, emb, index, ed, k, m.dense_max_seq_length, cfg, query_emb=qemb)
    out.stats.update({k2: v for k2, v in ch.stats.items() if "cache" in k2 or "encode" in k2})
    return out


def score_bm25(ed: EvalData, cfg: RelgradeConfig, k: int) -> Scored:
    import scipy.sparse as sp

    from relgrade.mining.channels import LexicalChannel

    t0 = time.perf_counter()
    cat = pd.DataFrame({"item_id": ed.item_ids, "title": ed.item_texts})
    ch = LexicalChannel(k1=cfg.mining.lexical_k1, b=cfg.mining.lexical_b).fit(cat)
    M = ch._term_doc_matrix().tocsc()
    toks = ch.query_tokens(ed.queries["text"].tolist())
    rows = [r for r, tl in enumerate(toks) for _ in tl]
    cols = [ch.vocab[tok] for tl in toks for tok in tl]
    Q = sp.csr_matrix((np.ones(len(rows), dtype=M.dtype), (rows, cols)), shape=(len(toks), M.shape[0]))
    qi, ci = ed.judged["qi"].to_numpy(), ed.judged["ci"].to_numpy()
    js = np.asarray((Q[qi].multiply(M[:, ci].T.tocsr())).sum(axis=1)).ravel()
    hits = ch.search(pd.DataFrame({"query_id": ed.queries["query_id"], "text": ed.queries["text"]}), k=k)
    pos_of = pd.Index([str(i) for i in ed.item_ids])
    qpos = pd.Index(ed.queries["query_id"]).get_indexer(hits["query_id"])
    cpos = pos_of.get_indexer(hits["item_id"].astype(str))
    topk: list[set[int]] = [set() for _ in range(len(ed.queries))]
    for a, b in zip(qpos, cpos):
        topk[a].add(int(b))
    return Scored(js, topk, {"fit_and_search_s": round(time.perf_counter() - t0, 3), **ch.stats})


def score_teacher(ed: EvalData, cfg: RelgradeConfig) -> Scored:
    """The grading cascade itself as a ranker of each query's judged items (its expected
    grade, written by the grade stage for every judged pair of the report split). It is
    the reference a distilled student can at best approach on the judged-set metrics; it
    is not a retriever, so it has no recall."""

    path = cfg.paths.test_scores
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `relgrade grade` first")
    if cfg.evaluation.split != cfg.grading.report_split:
        raise ValueError(f"the teacher's held-out scores are for the {cfg.grading.report_split!r} split, "
                         f"the evaluation scores {cfg.evaluation.split!r}")
    ts = pd.read_parquet(path, columns=["query_id", "item_id", "expected_grade_cascade"])
    ts = ts.astype({"query_id": str, "item_id": str}).drop_duplicates(["query_id", "item_id"], keep="last")
    j = ed.judged[["query_id", "item_id"]].merge(ts, on=["query_id", "item_id"], how="left")
    miss = int(j["expected_grade_cascade"].isna().sum())
    if miss:
        raise ValueError(f"{path}: no teacher score for {miss} of {len(j)} judged pairs: grade and evaluation "
                         "disagree on the judgments; rerun `relgrade grade`")
    return Scored(j["expected_grade_cascade"].to_numpy(dtype=float), None, {"pairs": int(len(j)), "source": str(path)})


# ---------------------------------------------------------------- metrics
def query_metrics(ed: EvalData, sc: Scored, cfg: RelgradeConfig) -> pd.DataFrame:
    """One row per evaluation query: ndcg, emb, recall (NaN where undefined), has_g0, segment."""
    e = cfg.evaluation
    j = ed.judged.assign(score=sc.judged_scores, tie=ed.tie)
    j = j.sort_values(["qi", "score", "tie"], ascending=[True, False, True], kind="stable")
    j["r"] = j.groupby("qi").cumcount()
    gain = np.power(2.0, j["grade"].to_numpy()) - 1
    disc = 1.0 / np.log2(j["r"].to_numpy() + 2.0)
    top = j["r"].to_numpy() < e.ndcg_k
    dcg = pd.Series(np.where(top, gain * disc, 0.0)).groupby(j["qi"].to_numpy()).sum()
    ig = ed.judged[["qi", "grade"]].sort_values(["qi", "grade"], ascending=[True, False])
    ir = ig.groupby("qi").cumcount().to_numpy()
    igain = np.where(ir < e.ndcg_k, (np.power(2.0, ig["grade"].to_numpy()) - 1) / np.log2(ir + 2.0), 0.0)
    idcg = pd.Series(igain).groupby(ig["qi"].to_numpy()).sum()
    ndcg = (dcg / idcg.reindex(dcg.index)).where(idcg.reindex(dcg.index) > 0)
    emb_top = j[j["r"] < e.embarrassing_k]
    emb = (emb_top["grade"] == 0).groupby(emb_top["qi"]).mean()
    has_g0 = (ed.judged["grade"] == 0).groupby(ed.judged["qi"]).any()
    rel = ed.judged[ed.judged["grade"] >= e.recall_min_grade]
    if sc.topk is None:  # judged-set-only evaluation
        rel = rel.iloc[:0]
    rec = pd.Series(
        [np.mean([c in sc.topk[q] for c in g["ci"]]) for q, g in rel.groupby("qi")],
        index=rel["qi"].unique() if len(rel) else [], dtype=float)
    out = pd.DataFrame(index=pd.RangeIndex(len(ed.queries)))
    out["query_id"] = ed.queries["query_id"].to_numpy()
    out["segment"] = ed.queries["segment"].to_numpy()
    out["ndcg"] = ndcg.reindex(out.index)
    out["emb"] = emb.reindex(out.index)
    out["recall"] = rec.reindex(out.index)
    out["has_g0"] = has_g0.reindex(out.index).fillna(False).astype(bool)
    out["ndcg_g0"] = out["ndcg"].where(out["has_g0"])
    return out


def metric_names(cfg: RelgradeConfig) -> dict[str, str]:
    e = cfg.evaluation
    return {f"ndcg@{e.ndcg_k}": "ndcg", f"ndcg@{e.ndcg_k}_g0": "ndcg_g0", f"emb@{e.embarrassing_k}": "emb",
            f"recall@{e.recall_k}": "recall"}


def _boot_idx(n: int, b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def _mean_ci(values: np.ndarray, idx: np.ndarray, alpha: float) -> dict:
    v = values.astype(float)
    ok = ~np.isnan(v)
    if ok.sum() == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    vv = np.where(ok, v, 0.0)
    s = vv[idx].sum(axis=1)
    c = ok[idx].sum(axis=1)
    bm = s[c > 0] / c[c > 0]
    lo, hi = np.quantile(bm, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(v[ok].mean()), "lo": float(lo), "hi": float(hi), "n": int(ok.sum())}


def aggregate(per_query: dict[str, pd.DataFrame], cfg: RelgradeConfig) -> dict:
    """Means with bootstrap CIs per model, metric and segment, and paired comparisons of
    the student against every other model."""
    e = cfg.evaluation
    alpha = 1 - e.ci
    names = metric_names(cfg)
    any_model = next(iter(per_query.values()))
    n = len(any_model)
    idx = _boot_idx(n, e.bootstrap, e.seed)
    seg = any_model["segment"].to_numpy()
    out: dict = {"models": {}, "comparisons": {}}
    for model, pq in per_query.items():
        res = {}
        for mname, col in names.items():
            res[mname] = {"all": _mean_ci(pq[col].to_numpy(), idx, alpha)}
            for s in SEGMENTS:
                mask = seg == s
                if mask.sum() == 0:
                    res[mname][s] = {"mean": None, "lo": None, "hi": None, "n": 0}
                    continue
                sidx = _boot_idx(int(mask.sum()), e.bootstrap, e.seed + 1)
                res[mname][s] = _mean_ci(pq[col].to_numpy()[mask], sidx, alpha)
        out["models"][model] = res
    if STUDENT in per_query:
        for other, pq in per_query.items():
            if other != STUDENT:
                out["comparisons"][other] = paired_comparison(per_query[STUDENT], pq, cfg, idx)
    out["targets"] = check_targets(out, cfg)
    return out


def paired_comparison(a_pq: pd.DataFrame, b_pq: pd.DataFrame, cfg: RelgradeConfig, idx: np.ndarray | None = None) -> dict:
    """Model A (``"student"`` in the result) against model B (``"other"``) per metric, on
    the queries where both have a value: the ratio and the difference of the means, each
    with a paired percentile bootstrap interval (the same query resamples for both
    models), and the difference per segment. ``idx``: the resamples (default: the
    evaluation's, as in :func:`aggregate`)."""
    e = cfg.evaluation
    alpha = 1 - e.ci
    if idx is None:
        idx = _boot_idx(len(a_pq), e.bootstrap, e.seed)
    if len(a_pq) != len(b_pq) or not np.array_equal(a_pq["query_id"].to_numpy(), b_pq["query_id"].to_numpy()):
        raise ValueError("paired comparison needs both models' per-query rows for the same queries in the same order")
    seg = a_pq["segment"].to_numpy()
    comp = {}
    for mname, col in metric_names(cfg).items():
        a, b = a_pq[col].to_numpy(float), b_pq[col].to_numpy(float)
        ok = ~np.isnan(a) & ~np.isnan(b)
        if ok.sum() == 0:
            continue
        A, B = np.where(ok, a, 0)[idx].sum(1), np.where(ok, b, 0)[idx].sum(1)
        ratio = np.where(B > 0, A / np.where(B > 0, B, 1), np.nan)
        diff = (A - B) / np.maximum(ok[idx].sum(1), 1)
        rr = a[ok].mean() / b[ok].mean() if b[ok].mean() > 0 else None
        comp[mname] = {"student": float(a[ok].mean()), "other": float(b[ok].mean()),
                       "ratio": None if rr is None else float(rr),
                       "ratio_ci": [float(np.nanquantile(ratio, alpha / 2)), float(np.nanquantile(ratio, 1 - alpha / 2))],
                       "diff": float(a[ok].mean() - b[ok].mean()),
                       "diff_ci": [float(np.quantile(diff, alpha / 2)), float(np.quantile(diff, 1 - alpha / 2))],
                       "diff_by_segment": {s: (float(a[ok & (seg == s)].mean() - b[ok & (seg == s)].mean())
                                               if (ok & (seg == s)).any() else None) for s in SEGMENTS}}
    return comp


def check_targets(agg: dict, cfg: RelgradeConfig, click: str = CLICK, label: str = "student",
                  click_label: str = "click-trained") -> list[dict]:
    """The issue's targets from ``agg["comparisons"]`` (the student against ``click``,
    ``base`` and ``bm25``); ``label`` / ``click_label`` name the pair in the rows."""
    e = cfg.evaluation
    c = agg.get("comparisons", {})
    rec, ng0, emb = f"recall@{e.recall_k}", f"ndcg@{e.ndcg_k}_g0", f"emb@{e.embarrassing_k}"
    rows = []

    def add(name, value, goal, ok):
        rows.append({"target": name, "measured": value, "goal": goal, "met": bool(ok) if ok is not None else None})

    if click in c:
        for m in (rec, ng0):
            r = c[click].get(m, {}).get("ratio")
            add(f"{label} / {click_label} {m}", r, f">= {1 + e.target_relative_gain:.2f}",
                None if r is None else r >= 1 + e.target_relative_gain)
        r = c[click].get(emb, {}).get("ratio")
        add(f"{label} / {click_label} {emb}", r, f"<= {e.target_embarrassing_ratio:.2f}",
            None if r is None else r <= e.target_embarrassing_ratio)
    for other in ("base", "bm25"):
        if other in c:
            for m in (rec, ng0):
                r = c[other].get(m, {}).get("ratio")
                add(f"{label} / {other} {m}", r, "> 1.00", None if r is None else r > 1.0)
    return rows


# ---------------------------------------------------------------- run + report
def default_models(cfg: RelgradeConfig) -> dict[str, dict]:
    specs = {}
    for m in cfg.evaluation.models:
        if m == "teacher":
            if not cfg.paths.test_scores.exists():
                log.warning("no teacher scores at %s (grade stage not run): teacher reference left out",
                            cfg.paths.test_scores)
                continue
        if m in (STUDENT, CLICK):
            specs[m] = {"kind": "trained", "path": cfg.paths.model(m)}
        else:
            specs[m] = {"kind": m}
    return specs


def evaluate(cfg: RelgradeConfig, models: dict[str, dict] | None = None, out_dir: str | Path | None = None,
             title: str = "Evaluation on held-out human grades", update_card: bool = True,
             full_catalog: bool = True) -> dict:
    """Score ``models`` (name -> {"kind": "trained", "path": folder} | {"kind": "base"} |
    {"kind": "bm25"} | {"kind": "teacher"}), aggregate, and write report.json / report.html into ``out_dir``
    (default ``<data_root>/reports/evaluation``). Returns the report dict."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(cfg.training.threads)
    models = models or default_models(cfg)
    out_dir = Path(out_dir) if out_dir else cfg.paths.report("evaluation")
    t_all = time.perf_counter()
    ed = load_eval_data(cfg)
    log.info("evaluating %d models on %d %s queries (%d judged pairs)", len(models), len(ed.queries), cfg.evaluation.split,
             len(ed.judged))
    k = cfg.evaluation.recall_k
    per_query, stats, scores = {}, {}, {}
    for name, spec in models.items():
        t0 = time.perf_counter()
        if spec["kind"] == "trained":
            folder = Path(spec["path"])
            if not folder.exists():
                raise FileNotFoundError(f"model {name}: {folder} not found; run `relgrade train` first")
            sc = score_trained(folder, ed, cfg, k, full_catalog=full_catalog)
        elif spec["kind"] == "base":
            sc = score_base(ed, cfg, k)
        elif spec["kind"] == "bm25":
            sc = score_bm25(ed, cfg, k)
        elif spec["kind"] == "teacher":
            sc = score_teacher(ed, cfg)
        else:
            raise ValueError(f"unknown model kind {spec['kind']!r}")
        per_query[name] = query_metrics(ed, sc, cfg)
        scores[name] = sc.judged_scores
        stats[name] = {**sc.stats, "total_s": round(time.perf_counter() - t0, 2)}
        log.info("%s scored in %.1fs: ndcg %.4f, ndcg_g0 %.4f, emb %.4f, recall %.4f", name, time.perf_counter() - t0,
                 per_query[name]["ndcg"].mean(), per_query[name]["ndcg_g0"].mean(), per_query[name]["emb"].mean(),
                 per_query[name]["recall"].mean())
    agg = aggregate(per_query, cfg)
    target_lines = {}
    if CLICK in agg["models"]:
        e = cfg.evaluation
        for mname, factor in ((f"recall@{e.recall_k}", 1 + e.target_relative_gain),
                              (f"ndcg@{e.ndcg_k}_g0", 1 + e.target_relative_gain),
                              (f"emb@{e.embarrassing_k}", e.target_embarrassing_ratio)):
            c = agg["models"][CLICK][mname]["all"]["mean"]
            if c is not None:
                target_lines[mname] = c * factor
    report = {
        "title": title, "split": cfg.evaluation.split, "profile": cfg.profile,
        "generated_at": utc_now().isoformat(timespec="seconds"),
        "queries": int(len(ed.queries)), "judged_pairs": int(len(ed.judged)),
        "queries_with_grade0": int(per_query[next(iter(per_query))]["has_g0"].sum()),
        "segments": {s: int((ed.queries["segment"] == s).sum()) for s in SEGMENTS},
        "catalog_items": int(len(ed.item_ids)), "bootstrap": cfg.evaluation.bootstrap, "ci": cfg.evaluation.ci,
        "model_specs": {n: {"kind": s["kind"], "path": str(s.get("path", ""))} for n, s in models.items()},
        **agg, "target_lines": target_lines, "run_stats": stats, "eval_s": round(time.perf_counter() - t_all, 2),
    }
    for name, spec in models.items():
        if spec["kind"] == "trained":
            from training.student import read_summary

            summ = read_summary(spec["path"])
            if summ:
                report["model_specs"][name]["training"] = {k2: summ.get(k2) for k2 in
                                                      ("target_column", "use_curriculum", "graded_fraction", "train_s",
                                                       "stages", "data")}
    report["examples"] = examples(ed, scores, per_query, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "report.html").write_text(render_html(report), encoding="utf-8")
    pd.concat({n: pq for n, pq in per_query.items()}, names=["model"]).reset_index(level=0).to_parquet(
        out_dir / "per_query.parquet", index=False)
    report["paths"] = {"json": str(out_dir / "report.json"), "html": str(out_dir / "report.html")}
    if update_card and STUDENT in models and models[STUDENT]["kind"] == "trained":
        from training.student import read_summary, write_model_card

        summ = read_summary(models[STUDENT]["path"])
        if summ:
            write_model_card(models[STUDENT]["path"], summ,
                             {m: v["all"] for m, v in report["models"][STUDENT].items() if v["all"]["mean"] is not None})
    log.info("evaluation written to %s (%.0fs)", out_dir, report["eval_s"])
    return report


def examples(ed: EvalData, scores: dict[str, np.ndarray], per_query: dict[str, pd.DataFrame], cfg: RelgradeConfig,
             n: int = 8) -> list[dict]:
    """Queries with a grade-0 judged item where the student's top 3 differs most from the
    click-trained model's (or the next model's): each model's top-3 judged titles."""
    names = list(scores)
    if len(names) < 2:
        return []
    a = STUDENT if STUDENT in scores else names[0]
    b = CLICK if CLICK in scores and a != CLICK else next(m for m in names if m != a)
    k = cfg.evaluation.embarrassing_k
    d = (per_query[b]["emb"] - per_query[a]["emb"]).where(per_query[a]["has_g0"]).dropna()
    pick = list(d.sort_values(ascending=False, kind="stable").index[: n // 2]) + \
        list(d.sort_values(ascending=True, kind="stable").index[: n - n // 2])
    out = []
    for qi in dict.fromkeys(pick):
        row = {"query": str(ed.queries["text"].iat[qi]), "segment": str(ed.queries["segment"].iat[qi])}
        for m in (a, b):
            j = ed.judged.assign(score=scores[m], tie=ed.tie)
            j = j[j["qi"] == qi].sort_values(["score", "tie"], ascending=[False, True]).head(k)
            row[m] = [{"title": ed.item_texts[int(c)], "grade": int(g)} for c, g in zip(j["ci"], j["grade"])]
        out.append(row)
    return out


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
        if goal is not None:  # the issue's target, relative to the click-trained model
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
    """Each metric against the step-budget multiplier: student and click-trained runs of
    the same budget, with their bootstrap intervals; BM25 and the base model as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, res = rep["step_budget"], rep["models"]
    mnames = [m for m in next(iter(res.values())) if m in rows[0]]
    xs = [r["budget_multiplier"] for r in rows]
    fig, axes = plt.subplots(1, len(mnames), figsize=(4 * len(mnames), 3.4))
    for ax, m in zip(np.atleast_1d(axes), mnames):
        for key, color, lab in (("student", "C0", "student (relgrade)"), ("click_trained", "C1", "click-trained")):
            v = [res[r[key]][m]["all"] for r in rows]
            mean = np.array([x["mean"] for x in v], dtype=float)
            err = [mean - np.array([x["lo"] for x in v], dtype=float), np.array([x["hi"] for x in v], dtype=float) - mean]
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, color=color, label=lab)
        for ref, ls in (("bm25", ":"), ("base", "-.")):
            if ref in res and res[ref][m]["all"]["mean"] is not None:
                ax.axhline(res[ref][m]["all"]["mean"], color="gray", ls=ls, lw=1, label=MODEL_LABELS.get(ref, ref))
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}x" for x in xs])
        ax.set_xlabel("examples per stage (x the default budget)")
        ax.set_title(m)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("step budget: the same multiplier for both models")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _png(fig)


def _budget_section(rep: dict) -> str:
    esc = html.escape
    rows = rep["step_budget"]
    mnames = [m for m in next(iter(rep["models"].values())) if m in rows[0]]
    p = ["<h2>Step budget</h2><p>Every curriculum stage's examples multiplied for both models. Ratio: student / "
         "click-trained of the same budget, paired bootstrap interval; best click: against the click-trained run of "
         "any budget that scores best on the metric.</p>",
         "<table><tr><th>budget</th>" + "".join(f"<th>{esc(m)}: student / click [CI]</th><th>{esc(m)}: vs best click</th>"
                                               for m in mnames) + "<th>targets met</th></tr>"]
    for r in rows:
        cells = []
        for m in mnames:
            c, b = r[m], r.get("vs_best_click_trained", {}).get(m)
            cells.append(f"<td>{_f(c['student'])} / {_f(c['click_trained'])} = {_f(c['ratio'])} "
                         f"[{_f(c['ratio_ci'][0])}, {_f(c['ratio_ci'][1])}]</td>")
            cells.append(f"<td>{_f(b['ratio'])} ({esc(b['click_trained'])})</td>" if b else "<td>-</td>")
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
