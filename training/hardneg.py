"""The peer recipe, ``hardneg_human``: what a team with human judgments and
sentence-transformers would train without relgrade, as a named baseline.

1. positives: the train split's judged pairs with a grade of at least
   ``training.hardneg_baseline.min_grade`` (2 of 0..3), sampled (seeded) down to the
   budget, which is the curriculum's examples in all (the student's budget);
2. one hard negative per positive from :func:`sentence_transformers.util.mine_hard_negatives`
   with the base model over the whole catalog (``range_min`` 10, ``range_max`` 50,
   ``relative_margin`` 0.05, ``sampling_strategy`` random: the candidates between the
   10th and the 50th whose score is at most 95% of the positive's);
3. :class:`MultipleNegativesRankingLoss` on the (anchor, positive, negative) triplets,
   ``NO_DUPLICATES`` batches, the training section's batch size, sequence length and
   warm-up, one epoch (:func:`training.student.train` runs it as a one-stage plan).

The margin guard finds no valid negative for many positives (a judged title is often not
the best-scored of its query), so the recipe trains on fewer triplets than positives; the
summary says how many.

The same module builds the ladder's triplet recipes (:class:`training.recipes.TripletRecipe`,
training/ladder.py): positives from relgrade's target instead of the human grades
(:func:`target_positives`), negatives from relgrade's levels 4-5 instead of
``mine_hard_negatives`` (:func:`level_negatives`), a MarginMSE label from the target
margin, and positives drawn until the budget of triplets is met (``fill``).

The base model's catalog embeddings come from the mining stage's embedding cache (the
same model, texts and settings; :class:`relgrade.mining.channels.DenseChannel`), handed to
``mine_hard_negatives`` through its own ``cache_folder``, so the catalog is not encoded
again.
"""
from __future__ import annotations

import hashlib
import logging
import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig, TrainingConfig
from relgrade.contract import ContractError
from training.args import HARDNEG
from training.recipes import PEER, TripletRecipe

log = logging.getLogger("training.hardneg")


def judged_positives(cfg: RelgradeConfig, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Up to ``n`` (anchor, positive) pairs: the train split's judged pairs with grade >=
    ``min_grade`` (seeded sample), item text as every dense model indexes it."""
    from relgrade.mining.channels import item_texts

    h = cfg.training.hardneg_baseline
    paths = {t: cfg.paths.table(t) for t in ("queries", "judgments", "catalog")}
    for t, p in paths.items():
        if not p.exists():
            raise ContractError(f"{HARDNEG}: {p} not found: run `relgrade ingest` first")
    q = pd.read_parquet(paths["queries"], columns=["query_id", "text", "split"])
    j = pd.read_parquet(paths["judgments"], columns=["query_id", "item_id", "grade"])
    from relgrade.label_budget import visible_judgments

    j = visible_judgments(j, q, cfg.dataset.train_label_fraction)  # the label budget
    cat = pd.read_parquet(paths["catalog"]).drop_duplicates("item_id").reset_index(drop=True)
    cat = pd.DataFrame({"item_id": cat["item_id"].astype(str), "item_text": item_texts(cat).to_numpy()})
    train_q = q[q["split"] == "train"]
    pos = j[j["grade"] >= h.min_grade].merge(train_q, on="query_id").merge(cat, on="item_id")
    pos = pos[(pos["text"].str.strip() != "") & (pos["item_text"].str.strip() != "")]
    pos = pos.sort_values(["query_id", "item_id"], kind="stable").reset_index(drop=True)
    available = len(pos)
    if available == 0:
        raise ContractError(f"{HARDNEG}: no train-split judgment with grade >= {h.min_grade}")
    take = np.sort(np.random.default_rng(seed).choice(available, size=min(n, available), replace=False))
    pos = pos.iloc[take].reset_index(drop=True)
    stats = {"judged_train_pairs": int(len(j.merge(train_q[["query_id"]], on="query_id"))),
             "positive_pairs_available": int(available), "positives": int(len(pos)),
             "queries": int(pos["query_id"].nunique()), "min_grade": h.min_grade}
    return pos.rename(columns={"text": "anchor", "item_text": "positive"}), stats


def _seed_cache(cfg: RelgradeConfig, model, folder: Path, corpus: list[str]) -> bool:
    """Write the base model's corpus embeddings, from the mining stage's embedding cache,
    where ``mine_hard_negatives`` looks for them (its ``cache_folder`` names a file by a
    hash of the model name and the de-duplicated corpus). False when they are not cached
    (``mine_hard_negatives`` then encodes the catalog itself)."""
    from relgrade.mining.channels import DenseChannel
    from relgrade.mining.stage import embedding_cache_dir
    from training.args import base_model_path

    m = cfg.mining
    ch = DenseChannel(model_path=base_model_path(cfg), batch_size=m.dense_batch_size,
                      max_seq_length=m.dense_max_seq_length, precision=m.dense_precision,
                      cache_dir=embedding_cache_dir(cfg), threads=cfg.training.threads, device=cfg.device)
    # the list the mining stage encoded (every catalog row's text, duplicates too): its cache key
    from relgrade.mining.channels import catalog_frame, item_texts

    mined = item_texts(catalog_frame(pd.read_parquet(cfg.paths.table("catalog")))).tolist()
    at = {}
    for i, text in enumerate(mined):
        at.setdefault(text, i)
    emb = ch.encode(mined, what="items")
    hit = bool(ch.stats.get("items_cache_hit"))
    extra = [text for text in corpus if text not in at]
    if extra:  # texts the catalog does not hold (none when the positives are catalog items)
        emb = np.concatenate([emb, ch.encode(extra, what="extra")])
        at.update({text: len(mined) + i for i, text in enumerate(extra)})
    emb = emb[[at[text] for text in corpus]]
    name = model.model_card_data.base_model or ""
    digest = hashlib.sha256(repr((name, None, None, corpus)).encode()).hexdigest()
    np.save(folder / f"corpus_embeddings_{digest}.npy", emb.astype(np.float32))
    return hit


def mined_triplets(cfg: RelgradeConfig, model, pos: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
    """(anchor, positive, negative) for ``pos`` from ``mine_hard_negatives`` with ``model``
    (the base model, before any training) over the catalog, and its settings."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from training.data import load_catalog_texts

    h = cfg.training.hardneg_baseline
    _, catalog = load_catalog_texts(cfg)
    corpus = list(dict.fromkeys(catalog + pos["positive"].tolist()))
    state = random.getstate()  # mine_hard_negatives samples with the random module: seeded, then restored
    random.seed(seed)
    try:
        with tempfile.TemporaryDirectory(prefix="relgrade-hardneg-") as tmp:
            cached = _seed_cache(cfg, model, Path(tmp), corpus)
            ds = mine_hard_negatives(
                Dataset.from_pandas(pos[["anchor", "positive"]], preserve_index=False), model, corpus=corpus,
                range_min=h.range_min, range_max=h.range_max, relative_margin=h.relative_margin,
                num_negatives=h.num_negatives, sampling_strategy=h.sampling_strategy,
                batch_size=cfg.training.encode_batch_size, output_format="triplet", use_faiss=True,
                cache_folder=tmp, verbose=False)
    finally:
        random.setstate(state)
    stats = {"catalog_embeddings_cached": cached, "range_min": h.range_min, "range_max": h.range_max,
             "relative_margin": h.relative_margin, "num_negatives": h.num_negatives,
             "sampling_strategy": h.sampling_strategy, "corpus": len(corpus)}
    return ds.to_pandas()[["anchor", "positive", "negative"]], stats


def target_positives(df: pd.DataFrame, texts: dict[str, str], tcfg: TrainingConfig, n: int,
                     seed: int) -> tuple[pd.DataFrame, dict]:
    """Up to ``n`` positives from relgrade's target instead of the human grades: each
    train query's highest-target union items at or above ``positive_percentile`` (the
    curriculum's positives, :func:`training.data.positives`), seeded sample; item text
    as every dense model indexes it."""
    from training.data import positives

    pos = positives(df, tcfg)
    if len(pos) == 0:
        raise ContractError("no training-set row reaches the positive percentile")
    pos = pos.assign(positive=pos["item_id"].map(texts)).dropna(subset=["positive"])
    take = np.sort(np.random.default_rng(seed).choice(len(pos), size=min(n, len(pos)), replace=False))
    out = pos.iloc[take].rename(columns={"query_text": "anchor"}).reset_index(drop=True)
    stats = {"positive_pairs_available": int(len(pos)), "positives": int(len(out)),
             "queries": int(out["query_id"].nunique()), "source": "relgrade target"}
    return out[["query_id", "item_id", "anchor", "positive", "target", "pct"]], stats


def level_negatives(df: pd.DataFrame, pos: pd.DataFrame, texts: dict[str, str], tcfg: TrainingConfig, seed: int,
                    levels: tuple[int, ...] = (4, 5)) -> tuple[pd.DataFrame, dict]:
    """One negative per positive from relgrade's hardest levels instead of
    ``mine_hard_negatives``: a union item of the same query in ``levels`` whose target
    percentile is at least ``min_percentile_gap`` below the positive's (the curriculum's
    margin rule; a human positive outside the training set counts as percentile 1),
    drawn at random (seeded). Positives whose query has none are dropped. Carries the
    negative's target for a margin label."""
    cand = df[df["level"].isin(levels)]
    by_q = {q: g for q, g in cand.groupby("query_id", sort=False)}
    pct_of = dict(zip(zip(df["query_id"], df["item_id"]), df["pct"]))
    rng = np.random.default_rng(seed)
    rows = []
    for p in pos.itertuples(index=False):
        g = by_q.get(p.query_id)
        if g is None:
            continue
        top = pct_of.get((p.query_id, p.item_id), 1.0)
        g = g[(g["item_id"] != p.item_id) & (g["pct"] <= top - tcfg.min_percentile_gap)]
        if len(g) == 0:
            continue
        j = int(rng.integers(len(g)))
        neg_text = texts.get(g["item_id"].iat[j])
        if neg_text is None:
            continue
        rows.append({**p._asdict(), "negative": neg_text, "negative_target": float(g["target"].iat[j])})
    out = pd.DataFrame(rows, columns=list(pos.columns) + ["negative", "negative_target"])
    return out, {"negative_levels": list(levels), "negative_percentile_gap": tcfg.min_percentile_gap,
                 "queries_with_negatives": int(len(by_q))}


def level_triplets(df: pd.DataFrame, texts: dict[str, str], tcfg: TrainingConfig, n: int, seed: int,
                   levels: tuple[int, ...] = (4, 5)) -> tuple[pd.DataFrame, dict]:
    """Up to ``n`` (target positive, level negative) triplets, drawn until ``n`` are found:
    every target positive (:func:`target_positives`) gets its :func:`level_negatives` draw
    from ``levels``, and ``n`` of those that found one are kept (seeded). The ladder's rung
    3 and the curriculum's ``mnrl_triplet`` stages."""
    pos, stats = target_positives(df, texts, tcfg, 10 ** 9, seed)
    trip, more = level_negatives(df, pos, texts, tcfg, seed, levels)
    stats.update(more, triplets_found=int(len(trip)))
    if len(trip) > n:
        trip = trip.iloc[np.sort(np.random.default_rng(seed).choice(len(trip), size=n, replace=False))]
    return trip.reset_index(drop=True), stats


def _catalog_text(cfg: RelgradeConfig) -> dict[str, str]:
    from training.data import load_catalog_texts

    ids, texts = load_catalog_texts(cfg)
    return dict(zip(ids, texts))


# how many positives a filled run draws per wanted triplet (the mined guard drops most;
# None: every positive available, as drawing level negatives costs no encoding)
FILL_DRAW = {"mined": 4.0, "levels": None}


def recipe_triplets(cfg: RelgradeConfig, model, recipe: TripletRecipe, budget: int, seed: int,
                    trainset: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The examples of one triplet recipe (the peer recipe or a ladder rung): its positives,
    one negative each, at most ``budget`` rows; with ``recipe.fill`` positives are drawn
    until ``budget`` triplets are found. Columns: anchor, positive, negative (+ label for
    margin_mse, ``margin_scale`` times the target margin)."""
    t = cfg.training
    if recipe.loss == "margin_mse" and (recipe.positives, recipe.negatives) != ("target", "levels"):
        raise ValueError("margin_mse needs a target on both sides: positives 'target' and negatives 'levels'")
    need_df = recipe.positives == "target" or recipe.negatives == "levels"
    df = None
    if need_df:
        from training.data import load_trainset

        df = trainset if trainset is not None else load_trainset(cfg.paths.trainset, t.target_column)
    factor = FILL_DRAW[recipe.negatives]
    draw = (budget if not recipe.fill else 10 ** 9 if factor is None else int(np.ceil(budget * factor)))
    texts = _catalog_text(cfg) if need_df else {}
    if recipe.positives == "human":
        pos, stats = judged_positives(cfg, draw, seed)
    else:
        pos, stats = target_positives(df, texts, t, draw, seed)
    if recipe.negatives == "mined":
        trip, more = mined_triplets(cfg, model, pos, seed)
    else:
        trip, more = level_negatives(df, pos, texts, t, seed)
    stats.update(more)
    found = len(trip)
    if recipe.fill and len(trip) > budget:
        trip = trip.iloc[np.sort(np.random.default_rng(seed).choice(len(trip), size=budget, replace=False))]
    trip = trip.reset_index(drop=True)
    stats.update(recipe={"positives": recipe.positives, "negatives": recipe.negatives, "loss": recipe.loss,
                         "fill": recipe.fill}, budget=int(budget), triplets_found=int(found), triplets=int(len(trip)),
                 without_negative_share=round(1 - found / max(len(pos) * cfg.training.hardneg_baseline.num_negatives
                                                              if recipe.negatives == "mined" else len(pos), 1), 4))
    log.info("%s/%s/%s: %d positives, %d with a negative (%.0f%% without), %d triplets kept", recipe.positives,
             recipe.negatives, recipe.loss, len(pos), found, 100 * stats["without_negative_share"], len(trip))
    if recipe.loss == "margin_mse":
        label = (t.margin_scale * (trip["target"] - trip["negative_target"])).astype("float32")
        return pd.DataFrame({"query": trip["anchor"], "positive": trip["positive"], "negative": trip["negative"],
                             "label": label}), stats
    return trip[["anchor", "positive", "negative"]], stats


def hardneg_triplets(cfg: RelgradeConfig, model, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """The peer recipe's (anchor, positive, negative) triplets for ``model`` (the base
    model, before any training) and what it took to mine them."""
    return recipe_triplets(cfg, model, PEER, n, seed)
