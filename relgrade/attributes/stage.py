"""The attributes stage as small functions; ``flows/attributes.py`` runs them::

    catalog, queries = load_inputs(cfg)               # contract tables (ingest's output)
    gold = load_gold(cfg.attributes.gold_path)        # checked before any work
    lex = build_lexicon(catalog titles)               # brands, types, finishes, materials
    weak = weak_training_set(cfg, queries, lex)       # train queries only, weak BIO tags
    tagger = train_tagger(cfg, weak, lex)             # MiniLM + CRF, saved under attributes/tagger
    table = tag_queries(tagger, queries)              # every query: spans + structured attributes
    ev = evaluate_gold(cfg, tagger, lex, gold)        # span P/R/F1 per type on the hand gold set
    write_report(cfg, ev, stats)                      # reports/attributes/report.{json,html}

The gold set (``attributes.gold_path``) holds dev and test queries only and is never
trained on: a gold query found in the train split is an error.
"""
from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from relgrade.attributes.evaluate import span_scores
from relgrade.attributes.lexicon import Lexicon, build_lexicon, dictionary_tags, weak_tags
from relgrade.attributes.schema import COLUMNS, TYPES, check_tags, spans_from_tags, tokens_of
from relgrade.attributes.tagger import QueryTagger, TaggerArgs, structured
from relgrade.config import RelgradeConfig, resolve_path
from relgrade.contract import ContractError
from relgrade.io import read_parquet, write_parquet_atomic
from relgrade.util import Progress, write_json_atomic
from relgrade.views import QUERY_ATTRIBUTES_FV

log = logging.getLogger("relgrade.attributes")

QUERY_ATTRIBUTE_COLUMNS = ["query_id", "text", "split", "tags", "n_attributes", *COLUMNS.values(), "attributes_json",
                           "tagger_version"]


def load_inputs(cfg: RelgradeConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = cfg.paths
    for t in ("catalog", "queries"):
        if not p.table(t).exists():
            raise FileNotFoundError(f"{p.table(t)} does not exist: run `relgrade ingest` first")
    return read_parquet(p.table("catalog")), read_parquet(p.table("queries"))


def lexicon_of(cfg: RelgradeConfig, catalog: pd.DataFrame) -> Lexicon:
    t0 = time.perf_counter()
    lex = build_lexicon(catalog["title"].astype(str).tolist(), min_count=cfg.attributes.lexicon_min_count)
    log.info("attribute lexicon from %d titles: %s (%.1fs)", len(catalog), lex.sizes(), time.perf_counter() - t0)
    return lex


def weak_training_set(cfg: RelgradeConfig, queries: pd.DataFrame, lex: Lexicon) -> pd.DataFrame:
    """The train split's queries with their weak tags (a deterministic sample of at most
    ``attributes.max_train_queries``)."""
    tr = queries[queries["split"] == "train"].sort_values("query_id")
    n = cfg.attributes.max_train_queries
    if n is not None and len(tr) > n:
        tr = tr.sample(n=n, random_state=cfg.attributes.seed).sort_values("query_id")
    toks = [tokens_of(t) for t in tr["text"]]
    return pd.DataFrame({"query_id": tr["query_id"].to_numpy(), "tokens": toks,
                         "tags": [weak_tags(t, lex) for t in toks]})


def tagger_args(cfg: RelgradeConfig) -> TaggerArgs:
    a = cfg.attributes
    return TaggerArgs(epochs=a.epochs, lexicon_fill=a.lexicon_fill, batch_size=a.batch_size, learning_rate=a.learning_rate,
                      head_learning_rate=a.head_learning_rate, max_seq_length=a.max_seq_length, seed=a.seed,
                      threads=a.threads)


def staged_tagger_dir(cfg: RelgradeConfig) -> Path:
    return cfg.paths.attributes / ".tagger.staged"


def swap_in_tagger(cfg: RelgradeConfig) -> Path:
    """The staged tagger folder replaces ``Paths.tagger`` (rename, the old one removed)."""
    import shutil

    new, dst = staged_tagger_dir(cfg), cfg.paths.tagger
    old = dst.with_name(".tagger.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    new.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def train_tagger(cfg: RelgradeConfig, weak: pd.DataFrame, lex: Lexicon) -> QueryTagger:
    args = tagger_args(cfg)
    steps = args.epochs * ((len(weak) + args.batch_size - 1) // args.batch_size)
    progress = Progress("tagger training", steps, cfg.attributes.progress_every_s, log, unit="steps")
    tagger = QueryTagger.train(list(weak["tokens"]), list(weak["tags"]), lex, args, progress=progress)
    import shutil

    shutil.rmtree(staged_tagger_dir(cfg), ignore_errors=True)
    tagger.save(staged_tagger_dir(cfg))  # moved into place once the batch is published (run)
    log.info("tagger %s: %d queries, %d steps in %.1fs", tagger.version, len(weak), steps, tagger.train_seconds)
    return tagger


def tag_queries(tagger: QueryTagger, queries: pd.DataFrame) -> pd.DataFrame:
    """One row per query: BIO tags, the first value of each attribute type, every span
    (JSON, with the head type each attribute modifies)."""
    toks = [tokens_of(t) for t in queries["text"]]
    return attribute_rows(queries, toks, tagger.predict_tags(toks), tagger.version)


def attribute_rows(queries: pd.DataFrame, toks: list[list[str]], tags: list[list[str]], version: str) -> pd.DataFrame:
    """The query attribute table (QUERY_ATTRIBUTE_COLUMNS) of ``queries`` (query_id, text,
    split) from their tokens and BIO tags; the product type is the last type span (the
    head), every other column the first span of its type."""
    rows = []
    for qid, text, split, tk, tg in zip(queries["query_id"], queries["text"], queries["split"], toks, tags):
        spans = spans_from_tags(tg)
        st = structured(tk, spans)
        row = {"query_id": qid, "text": text, "split": split, "tags": " ".join(tg),
               "n_attributes": len(st["attributes"]), "attributes_json": json.dumps(st),
               "tagger_version": version}
        for k, col in COLUMNS.items():
            vals = [" ".join(tk[s:e]) for s, e, t in spans if t == k]
            row[col] = (vals[-1] if k == "TYPE" else vals[0]) if vals else None
        rows.append(row)
    return pd.DataFrame(rows, columns=QUERY_ATTRIBUTE_COLUMNS)


def load_gold(path: Path) -> pd.DataFrame:
    """The hand-annotated gold set: JSON lines with query_id, split (dev | test), query,
    tokens, tags. Invalid BIO, a token list that is not the query's, or a train-split
    query is an error."""
    from relgrade.adapters.common import split_of

    path = Path(path)
    if not path.exists():
        raise ContractError(f"attribute gold set not found: {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for n, r in enumerate(rows, 1):
        if r["tokens"] != tokens_of(r["query"]):
            raise ContractError(f"{path}:{n}: tokens are not the query's whitespace tokens")
        try:
            check_tags(r["tokens"], r["tags"])
        except ValueError as exc:
            raise ContractError(f"{path}:{n}: {exc}") from None
        if split_of(r["query"]) == "train" or r.get("split") not in ("dev", "test"):
            raise ContractError(f"{path}:{n}: {r['query']!r} is not a dev/test query; the tagger trains on train")
    return pd.DataFrame(rows)


def evaluate_gold(cfg: RelgradeConfig, tagger: QueryTagger, lex: Lexicon, gold: pd.DataFrame | None) -> dict | None:
    """Span P/R/F1 per type on each gold split: the tagger as published, the CRF alone
    (no lexicon fill), the dictionary baseline, the weak labels themselves (the tagger's
    training signal), and the tagger without the decorative-relation correction."""
    if gold is None:
        return None
    out = {"gold_path": str(cfg.attributes.gold_path), "queries": int(len(gold)), "splits": {}}
    for split in ("dev", "test", "all"):
        g = gold if split == "all" else gold[gold["split"] == split]
        if g.empty:
            continue
        toks, tags = list(g["tokens"]), list(g["tags"])
        t0 = time.perf_counter()
        pred = tagger.predict_tags(toks)
        qps = len(toks) / max(time.perf_counter() - t0, 1e-9)
        out["splits"][split] = {
            "queries": int(len(g)),
            "tagger": span_scores(tags, pred),
            "tagger_crf_only": span_scores(tags, tagger.predict_tags(toks, fill=False)),
            "tagger_uncorrected": span_scores(tags, tagger.predict_tags(toks, correct=False)),
            "dictionary_baseline": span_scores(tags, [dictionary_tags(t, lex) for t in toks]),
            "weak_labels": span_scores(tags, [weak_tags(t, lex) for t in toks]),
            "tagger_queries_per_s": round(qps, 1),
        }
    return out


def write_report(cfg: RelgradeConfig, ev: dict | None, stats: dict) -> dict:
    d = cfg.paths.report("attributes")
    d.mkdir(parents=True, exist_ok=True)
    rep = {"stats": stats, "evaluation": ev}
    write_json_atomic(d / "report.json", rep)
    (d / "report.html").write_text(render_html(rep))
    return rep


def render_html(rep: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>relgrade: query attributes</title>",
             "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}table{border-collapse:collapse}"
             "tr:nth-child(even){background:#f4f4f4}</style>",
             "<h1>Query attribute extraction</h1>"]
    st = rep["stats"]
    parts.append("<p>" + e(f"tagger {st.get('tagger_version')}: trained on {st.get('train_queries')} weakly "
                           f"labelled train queries in {st.get('train_seconds')} s; tagged "
                           f"{st.get('queries_tagged')} queries at {st.get('queries_per_s')} queries/s.") + "</p>")
    ev = rep.get("evaluation")
    if not ev:
        parts.append("<p>No gold set configured (attributes.gold_path): no evaluation.</p>")
        return "\n".join(parts)
    systems = ["tagger", "tagger_crf_only", "tagger_uncorrected", "weak_labels", "dictionary_baseline"]
    for split, s in ev["splits"].items():
        parts.append(f"<h2>{e(split)}: {s['queries']} hand-annotated queries (span F1, exact match)</h2>")
        parts.append("<table><tr><th>type</th><th>gold spans</th>" + "".join(f"<th>{e(x)} P / R / F1</th>"
                                                                          for x in systems) + "</tr>")
        for t in [*TYPES, "micro"]:
            rows = [s[x]["micro"] if t == "micro" else s[x]["per_type"][t] for x in systems]
            parts.append(f"<tr><td>{e(t)}</td><td>{rows[0]['gold']}</td>" + "".join(
                f"<td>{r['precision']:.3f} / {r['recall']:.3f} / <b>{r['f1']:.3f}</b></td>" for r in rows) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)


def feature_batch(cfg: RelgradeConfig, table: pd.DataFrame) -> pd.DataFrame:
    """``query_attributes_fv`` rows of the tagged table, stamped at the mining snapshot:
    the tagger reads the catalog and queries as they stand at that instant, as the
    grades it informs do."""
    from relgrade.featurestore import view_columns
    from relgrade.mining.stage import default_snapshot

    out = table.copy()
    out["event_timestamp"] = pd.Series(default_snapshot(cfg), index=out.index).astype("datetime64[us, UTC]")
    out["query_id"] = out["query_id"].astype(str)
    return out[view_columns(QUERY_ATTRIBUTES_FV)]


def write_local(cfg: RelgradeConfig, table: pd.DataFrame, batch: pd.DataFrame) -> dict:
    """Land the table without the feature store (benchmarks, notebooks): the flow
    publishes ``batch`` through the validation gate and writes the table in one
    transaction instead."""
    write_parquet_atomic(table, cfg.paths.query_attributes)
    return {"view": None, "rows": len(batch)}


def run(cfg: RelgradeConfig, land: Callable[[pd.DataFrame, pd.DataFrame], dict] | None = None) -> dict:
    """The whole stage (train, tag, evaluate, report); returns its summary. ``land(table,
    batch)`` writes the query table and publishes the feature batch (default:
    :func:`write_local`); it runs before the gold evaluation, and nothing is written
    when it raises."""
    catalog, queries = load_inputs(cfg)
    gold = load_gold(resolve_path(cfg.attributes.gold_path)) if cfg.attributes.gold_path else None  # fails first
    lex = lexicon_of(cfg, catalog)
    weak = weak_training_set(cfg, queries, lex)
    if weak.empty:
        raise ContractError("no train-split queries to fit the attribute tagger on")
    tagger = train_tagger(cfg, weak, lex)
    t0 = time.perf_counter()
    table = tag_queries(tagger, queries)
    tag_s = time.perf_counter() - t0
    cfg.paths.attributes.mkdir(parents=True, exist_ok=True)
    try:
        published = (land or (lambda t, b: write_local(cfg, t, b)))(table, feature_batch(cfg, table))
    except BaseException:
        import shutil

        shutil.rmtree(staged_tagger_dir(cfg), ignore_errors=True)  # the previous tagger stays
        raise
    swap_in_tagger(cfg)
    ev = evaluate_gold(cfg, tagger, lex, gold)
    stats = {"tagger_version": tagger.version, "train_queries": int(len(weak)),
             "train_seconds": round(tagger.train_seconds, 1), "queries_tagged": int(len(table)),
             "tag_seconds": round(tag_s, 1), "queries_per_s": round(len(table) / max(tag_s, 1e-9), 1),
             "lexicon": lex.sizes(),
             "share_with_type": round(float(table["product_type"].notna().mean()), 4),
             "mean_attributes": round(float(table["n_attributes"].mean()), 3)}
    write_report(cfg, ev, stats)
    return {"stats": stats, "evaluation": ev, "published": published, "query_attributes": str(cfg.paths.query_attributes),
            "tagger": str(cfg.paths.tagger)}


def read_query_attributes(cfg: RelgradeConfig) -> pd.DataFrame:
    return read_parquet(cfg.paths.query_attributes)
