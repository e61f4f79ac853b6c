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

from relgrade.config import RelgradeConfig
from relgrade.contract import ContractError
from training.args import HARDNEG

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


def hardneg_triplets(cfg: RelgradeConfig, model, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """The recipe's (anchor, positive, negative) triplets for ``model`` (the base model,
    before any training) and what it took to mine them."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from training.data import load_catalog_texts

    h = cfg.training.hardneg_baseline
    pos, stats = judged_positives(cfg, n, seed)
    _, catalog = load_catalog_texts(cfg)
    corpus = list(dict.fromkeys(catalog + pos["positive"].tolist()))
    state = random.getstate()  # mine_hard_negatives samples with the random module: seeded, then restored
    random.seed(seed)
    try:
        with tempfile.TemporaryDirectory(prefix="relgrade-hardneg-") as tmp:
            stats["catalog_embeddings_cached"] = _seed_cache(cfg, model, Path(tmp), corpus)
            ds = mine_hard_negatives(
                Dataset.from_pandas(pos[["anchor", "positive"]], preserve_index=False), model, corpus=corpus,
                range_min=h.range_min, range_max=h.range_max, relative_margin=h.relative_margin,
                num_negatives=h.num_negatives, sampling_strategy=h.sampling_strategy,
                batch_size=cfg.training.encode_batch_size, output_format="triplet", use_faiss=True,
                cache_folder=tmp, verbose=False)
    finally:
        random.setstate(state)
    trip = ds.to_pandas()
    stats.update(triplets=int(len(trip)), without_negative_share=round(1 - len(trip) / max(len(pos) * h.num_negatives, 1), 4),
                 range_min=h.range_min, range_max=h.range_max, relative_margin=h.relative_margin,
                 num_negatives=h.num_negatives, sampling_strategy=h.sampling_strategy,
                 corpus=len(corpus))
    log.info("%s: %d positives (of %d judged train pairs with grade >= %d), %d triplets (%.0f%% without a valid "
             "negative)", HARDNEG, stats["positives"], stats["positive_pairs_available"], h.min_grade, len(trip),
             100 * stats["without_negative_share"])
    return trip[["anchor", "positive", "negative"]], stats
