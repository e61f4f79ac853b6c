"""Evaluate every model on human-labelled held-out queries (default: the test split):
load the judged pairs, score each model (trained bi-encoders over a FAISS index of the
whole catalog, the base model, BM25, the teacher cascade's judged-set scores), then
:mod:`training.metrics` measures, :mod:`training.report` renders, and
:mod:`training.model_card` adds the student's metrics to its model card.

Ties (BM25 scores 0) are broken by a fixed hash of the item id, never by input order.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.contract import SEGMENTS
from training.args import CLICK, HARDNEG, STUDENT, base_model_path
from relgrade.util import Progress, utc_now
from training.index import build_index, encode, load_index, search
from training.metrics import EvalData, Scored, aggregate, query_metrics
from training.report import render_html

log = logging.getLogger("training.evaluate")



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

    from relgrade.numerics import resolve_device

    model = SentenceTransformer(str(folder), device=resolve_device(cfg.device))
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
                      precision=m.dense_precision, cache_dir=embedding_cache_dir(cfg), threads=cfg.training.threads,
                      device=cfg.device)
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


# ---------------------------------------------------------------- run + report
def default_models(cfg: RelgradeConfig) -> dict[str, dict]:
    specs = {}
    for m in cfg.evaluation.models:
        if m == "teacher":
            if not cfg.paths.test_scores.exists():
                log.warning("no teacher scores at %s (grade stage not run): teacher reference left out",
                            cfg.paths.test_scores)
                continue
        if m == HARDNEG and not cfg.training.hardneg_baseline.enabled:
            continue  # the peer recipe is not trained (training.hardneg_baseline.enabled false)
        if m in (STUDENT, CLICK, HARDNEG):
            specs[m] = {"kind": "trained", "path": cfg.paths.model(m)}
        else:
            specs[m] = {"kind": m}
    return specs


def score_model(name: str, spec: dict, ed: EvalData, cfg: RelgradeConfig, full_catalog: bool = True) -> Scored:
    """One model's scores on the evaluation data (``spec``: see :func:`evaluate`)."""
    k = cfg.evaluation.recall_k
    if spec["kind"] == "trained":
        folder = Path(spec["path"])
        if not folder.exists():
            raise FileNotFoundError(f"model {name}: {folder} not found; run `relgrade train` first")
        return score_trained(folder, ed, cfg, k, full_catalog=full_catalog)
    if spec["kind"] == "base":
        return score_base(ed, cfg, k)
    if spec["kind"] == "bm25":
        return score_bm25(ed, cfg, k)
    if spec["kind"] == "teacher":
        return score_teacher(ed, cfg)
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def _training_summary(folder) -> dict | None:
    """What the evaluation report shows of a trained model's run (its summary file)."""
    from training.student import read_summary

    summ = read_summary(folder)
    if not summ:
        return None
    return {k: summ.get(k) for k in ("recipe", "target_column", "use_curriculum", "graded_fraction", "train_s", "stages",
                                     "data")}


def _target_lines(agg: dict, cfg: RelgradeConfig) -> dict[str, float]:
    """Each target metric's goal in absolute terms, from the click-trained model's mean."""
    out: dict[str, float] = {}
    if CLICK in agg["models"]:
        e = cfg.evaluation
        for mname, factor in ((f"recall@{e.recall_k}", 1 + e.target_relative_gain),
                              (f"ndcg@{e.ndcg_k}_g0", 1 + e.target_relative_gain),
                              (f"emb@{e.embarrassing_k}", e.target_embarrassing_ratio)):
            c = agg["models"][CLICK][mname]["all"]["mean"]
            if c is not None:
                out[mname] = c * factor
    return out


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
    per_query, stats, scores = {}, {}, {}
    for name, spec in models.items():
        t0 = time.perf_counter()
        sc = score_model(name, spec, ed, cfg, full_catalog)
        per_query[name] = query_metrics(ed, sc, cfg)
        scores[name] = sc.judged_scores
        stats[name] = {**sc.stats, "total_s": round(time.perf_counter() - t0, 2)}
        log.info("%s scored in %.1fs: ndcg %.4f, ndcg_g0 %.4f, emb %.4f, recall %.4f", name, time.perf_counter() - t0,
                 per_query[name]["ndcg"].mean(), per_query[name]["ndcg_g0"].mean(), per_query[name]["emb"].mean(),
                 per_query[name]["recall"].mean())
    agg = aggregate(per_query, cfg)
    target_lines = _target_lines(agg, cfg)
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
        if spec["kind"] == "trained" and (summary := _training_summary(spec["path"])):
            report["model_specs"][name]["training"] = summary
    report["examples"] = examples(ed, scores, per_query, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "report.html").write_text(render_html(report), encoding="utf-8")
    pd.concat({n: pq for n, pq in per_query.items()}, names=["model"]).reset_index(level=0).to_parquet(
        out_dir / "per_query.parquet", index=False)
    report["paths"] = {"json": str(out_dir / "report.json"), "html": str(out_dir / "report.html")}
    if update_card:  # each trained model's card gets its metrics, the other models' beside them
        from training.model_card import add_metrics

        for name, spec in models.items():
            if spec["kind"] == "trained" and name in report["models"]:
                add_metrics(spec["path"], report["models"][name], report["models"])
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
