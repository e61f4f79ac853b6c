"""Multi-channel retrieval mining (relgrade/mining/, docs/mining.md)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator

from relgrade.config.base import _Strict


class MiningConfig(_Strict):
    """Multi-channel retrieval mining and the retrieval prior (docs/mining.md)."""

    k: int = Field(100, ge=1)  # top-K per channel per query
    channels: list[Literal["lexical", "dense", "behavioral", "external"]] = Field(
        default_factory=lambda: ["lexical", "dense", "behavioral"]
    )  # "external" also runs whenever external_path is set
    external_path: str | None = None  # Parquet: query_id (or query), item_id, rank, score
    # mining instant (UTC); None = end of the simulated log (start_date + days)
    snapshot_ts: datetime | None = None
    query_batch_size: int = Field(1000, ge=1)
    progress_every_s: float = Field(5.0, gt=0)
    # lexical: BM25 (bm25s) over product-tokenized titles
    lexical_k1: float = Field(1.5, ge=0, le=10)
    lexical_b: float = Field(0.75, ge=0, le=1)
    # dense: base MiniLM + FAISS; exact IndexFlatIP up to dense_exact_max_items items
    dense_batch_size: int = Field(64, ge=1)
    dense_max_seq_length: int = Field(128, ge=8, le=512)
    dense_precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast with AMX or AVX-512 BF16 (cos >= 0.9999 to fp32), else fp32
    dense_exact_max_items: int = Field(200_000, ge=0)
    dense_ann: Literal["hnsw", "ivf"] = "hnsw"
    dense_hnsw_m: int = Field(32, ge=2, le=256)
    dense_hnsw_ef_construction: int = Field(80, ge=1)
    dense_hnsw_ef_search: int = Field(256, ge=1)
    dense_ivf_nlist: int | None = Field(None, ge=1)  # None = 4 * sqrt(items)
    dense_ivf_nprobe: int = Field(32, ge=1)
    dense_recall_sample: int = Field(500, ge=0)  # queries used to measure ANN recall against exact
    # torch/faiss threads for the dense channel: 2 on an idle 2-core machine; use 1 when
    # other jobs share the cores (2 threads then ran 3x slower than 1: 14-18 vs 43-51
    # titles/s, OpenMP threads waiting on each other)
    dense_threads: int = Field(2, ge=1)
    dense_cache_dir: str | None = None  # None = <data_root>/cache/embeddings
    # behavioural: engagement graph from events before the snapshot
    behavioral_click_weight: float = Field(1.0, ge=0)
    behavioral_add_to_cart_weight: float = Field(2.0, ge=0)
    behavioral_order_weight: float = Field(3.0, ge=0)
    behavioral_half_life_days: float | None = Field(28.0, gt=0)
    behavioral_lookback_days: float | None = Field(None, gt=0)
    behavioral_neighbors: int = Field(10, ge=0)
    behavioral_min_similarity: float = Field(0.5, ge=0, le=1)
    behavioral_neighbor_weight: float = Field(0.5, ge=0, le=1)
    # prior = (1 - agreement_weight) * weighted reciprocal rank + agreement_weight * agreement share
    prior_weights: dict[str, Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=lambda: {"lexical": 1.0, "dense": 1.0, "behavioral": 1.0, "external": 1.0}
    )
    prior_rank_constant: float = Field(10.0, gt=0)
    prior_agreement_weight: float = Field(0.25, ge=0, le=1)
    # categories and levels
    near_top_rank: int = Field(10, ge=1)  # easy positive: every active channel ranks it within this
    high_rank: int = Field(10, ge=1)  # "ranks it high": within this
    positive_grade: int = Field(2, ge=0, le=3)  # refine_levels: grade >= this is a positive
    report_split: Literal["train", "dev", "test"] = "dev"

    @field_validator("prior_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"lexical", "dense", "behavioral", "external"}
        if set(v) - known or any(w < 0 for w in v.values()):
            raise ValueError(f"prior_weights: keys in {sorted(known)}, values >= 0; got {v}")
        return v
