"""One typed configuration, loaded from YAML, with named profiles.

``configs/relgrade.yaml`` holds a ``base`` block and ``profiles``; a profile is a
partial override of ``base`` (deep-merged). Every path the system writes lives under
``data_root``; :class:`Paths` derives them so no module invents its own location.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relgrade.views import FEATURE_VIEWS, GATED_ENGAGEMENT_FV

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "configs" / "relgrade.yaml"
FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Which data to read (relgrade/adapters/): a public dataset's files, or your own in
    the contract's columns (adapter ``contract``, docs/own_data.md)."""

    adapter: Literal["homedepot", "esci", "wands", "contract"] = "homedepot"
    # Adapter inputs; relative paths resolve against the repository root (or, in your own
    # config file, against that file's folder).
    # (adapter homedepot, the default: the bundled file unless given; no other adapter
    # inherits a Home Depot path, see _homedepot_defaults)
    path: str | None = None
    products_path: str | None = None  # ESCI products jsonl / WANDS product.csv
    labels_path: str | None = None  # WANDS label.csv
    # adapter contract: catalog and judgments (queries optional), CSV or Parquet
    catalog_path: str | None = None
    judgments_path: str | None = None
    queries_path: str | None = None
    # adapter contract: judgments' `label` -> grade 0..3 (one of the two, unless they carry `grade`)
    label_map: dict[str, Annotated[int, Field(ge=0, le=3)]] | None = None  # categorical labels
    label_cuts: list[float] | None = None  # numeric labels: grade = number of cuts <= label
    # adapter contract: the numeric labels' scale [low, high]; a label outside it is refused
    label_range: list[float] | None = Field(None, min_length=2, max_length=2)
    # pairs rated blind (data/homedepot/PROVENANCE.md): the grading report measures the
    # published union grades on them; None (or no overlap) reports them not available.
    # Adapter homedepot: the bundled file unless given; other adapters: none unless given
    blind_ratings_path: str | None = None
    encoding: str = "latin-1"
    # Keep only this many queries (deterministic: lowest split-hash order). None = all.
    max_queries: int | None = Field(None, ge=1)
    # Judgments are stamped at this instant (UTC): raters labelled before the log starts.
    judged_at: datetime = datetime(2026, 6, 1, tzinfo=timezone.utc)

    @model_validator(mode="before")
    @classmethod
    def _homedepot_defaults(cls, data: Any) -> Any:
        """The bundled Home Depot files are the defaults of adapter homedepot only."""
        if isinstance(data, dict) and data.get("adapter", "homedepot") == "homedepot":
            data = {"path": "data/homedepot/train.csv.zip",
                    "blind_ratings_path": "data/homedepot/blind_ratings.csv", **data}
        return data

    @field_validator("label_range")
    @classmethod
    def _range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"label_range must be [low, high] with low < high, got {v}")
        return v


class SegmentConfig(_Strict):
    """Query segments by share of simulated traffic (queries ranked by popularity)."""

    head_traffic_share: float = Field(0.5, gt=0, lt=1)
    torso_traffic_share: float = Field(0.3, ge=0, lt=1)  # the rest is tail


class SimulationConfig(_Strict):
    """Engagement simulator parameters (docs/simulator.md). They are fixed: never tune
    them, or the click model, to make a student or teacher reach a target."""

    seed: int = Field(20260701, ge=0)
    start_date: datetime = datetime(2026, 7, 1, tzinfo=timezone.utc)
    days: int = Field(56, ge=1, le=3660)
    searches_per_day: int = Field(6000, ge=1)
    zipf_exponent: float = Field(1.0, ge=0, le=5)
    organic_slots: int = Field(8, ge=1, le=100)
    ad_positions: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5])  # 1-based positions
    candidates_per_query: int = Field(24, ge=1)  # production ranker candidate pool (judged + lexical fill)
    # production ranker score = w_lex * lexical + w_pop * popularity + w_margin * margin + noise
    ranker_lexical_weight: float = Field(1.0, ge=0, le=100)
    ranker_popularity_weight: float = Field(0.6, ge=0, le=100)
    ranker_margin_weight: float = Field(0.3, ge=0, le=100)
    ranker_noise: float = Field(0.3, ge=0, le=100)
    # advertisers: share of items that advertise, lognormal daily impression budgets
    advertiser_share: float = Field(0.3, ge=0, le=1)
    ad_budget_median: float = Field(4.0, gt=0)
    ad_budget_sigma: float = Field(1.2, ge=0, le=10)
    # ad auction score = bid * ((1 - w) + w * lexical), bids
    # lognormal with median 1 and this sigma (docs/simulator.md)
    ad_bid_sigma: float = Field(0.5, ge=0, le=10)
    ad_relevance_weight: float = Field(0.5, ge=0, le=1)
    # position-based click model: examine(p) = 1 / p ** position_bias_eta
    position_bias_eta: float = Field(1.0, ge=0, le=10)
    # attractiveness = sigmoid(bias + rel*relevance01 + pop*popularity + price*cheapness
    #                          + title*title_appeal + ad*is_ad)
    attract_bias: float = Field(-2.2, ge=-50, le=50)
    attract_relevance: float = Field(1.6, ge=-50, le=50)
    attract_popularity: float = Field(0.9, ge=-50, le=50)
    attract_price: float = Field(0.6, ge=-50, le=50)
    attract_title: float = Field(0.5, ge=-50, le=50)
    attract_ad: float = Field(0.2, ge=-50, le=50)
    # add-to-cart given click, order given add-to-cart
    atc_bias: float = Field(-1.6, ge=-50, le=50)
    atc_relevance: float = Field(1.4, ge=-50, le=50)
    atc_price: float = Field(0.5, ge=-50, le=50)
    order_given_atc: float = Field(0.45, ge=0, le=1)
    # latent grade of unjudged items filled in by the lexical candidate generator
    unjudged_grade_probs: list[float] = Field(default_factory=lambda: [0.35, 0.3, 0.2, 0.15])
    segments: SegmentConfig = SegmentConfig()

    @field_validator("unjudged_grade_probs")
    @classmethod
    def _probs(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or abs(sum(v) - 1.0) > 1e-6 or min(v) < 0:
            raise ValueError("unjudged_grade_probs must be 4 non-negative numbers summing to 1")
        return v


class EngagementFeatureConfig(_Strict):
    """Where engagement comes from: the simulator (``simulate``) or your own search log
    (``log``: a file in the events contract, docs/own_data.md)."""

    source: Literal["simulate", "log"] = "simulate"
    log_path: str | None = None  # CSV or Parquet: event_ts, search_id, query or query_id, item_id, position, ...


class FeastConfig(_Strict):
    project: str = "relgrade"
    ttl_days: int = Field(365, ge=1, le=36500)
    # per-view TTL: gated engagement rows are daily snapshots of trailing windows, stale
    # after a day (feature_repo/definitions.py)
    view_ttl_days: dict[str, Annotated[int, Field(ge=1, le=36500)]] = Field(
        default_factory=lambda: {GATED_ENGAGEMENT_FV: 1})
    # views whose latest row per (query, item) is written to the online store on publish
    # (the others are offline-only: training reads the offline store)
    online_views: list[Literal[FEATURE_VIEWS]] = Field(
        default_factory=lambda: list(FEATURE_VIEWS)
    )
    online_write_chunk_rows: int = Field(100_000, ge=1)  # bounds memory of online writes
    # the offline store the point-in-time joins run in: duckdb (one process, the default)
    # or spark (Feast's Spark offline store; `pip install -e ".[spark]"` and Java 17).
    # With spark every view's source is a SparkSource over the same Parquet file.
    offline_store: Literal["duckdb", "spark"] = "duckdb"
    # the Spark session Feast starts (spark.master: local[N] here, a cluster's URL at scale)
    spark_conf: dict[str, str] = Field(default_factory=lambda: {
        "spark.master": "local[2]", "spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"})


class ValidationConfig(_Strict):
    # distribution bounds used by the expectation suites
    max_future_skew_seconds: int = Field(0, ge=0)
    min_rows: int = Field(1, ge=0)  # every suite: a batch has at least this many rows
    # also build Great Expectations' Data Docs (reports/data_docs). GX prints raw unexpected
    # values unescaped, so when they are built no values from the data are kept in results;
    # the offline pages (reports/validation) then show counts only. Off: they show examples.
    gx_data_docs: bool = True
    # batches above this many rows are validated in partitions (a query's rows share one):
    # every row-level expectation runs on each partition, the batch-level ones (row count,
    # means, distinct counts, key uniqueness) once on the whole batch, and a failing
    # partition refuses the whole batch. None: always one run.
    partition_rows: int | None = Field(2_000_000, ge=1)


class PrefectConfig(_Strict):
    """Retries of the tasks that read or write files and stores (transient I/O errors only:
    bad data is never retried, flows/runtime.py:retry_io_only)."""

    task_retries: int = Field(2, ge=0, le=20)
    task_retry_delay_seconds: float = Field(1.0, ge=0, le=3600)


class RayConfig(_Strict):
    """Ray, when ``engine: ray`` (docs/architecture.md#engines): ``address`` none starts a
    local Ray in this process with ``num_cpus``; an address (``auto``, ``ray://host:10001``)
    joins a running cluster. An already initialized Ray (a test's ``Cluster``, a notebook)
    is reused as it is and left running."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # local Ray only; None: Ray's own count
    # actors per heavy stage (encoders, graders); each reserves ``cpus_per_worker`` CPUs
    # (capped by the CPUs the cluster has: a worker that cannot be placed would wait forever)
    workers: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0)
    # seconds the workers of a stage may take to start (import torch, receive the models)
    worker_start_timeout_s: float = Field(600.0, gt=0)
    # torch threads inside a worker (None: the stage's own setting, grading.threads /
    # mining.dense_threads, so the Ray path computes exactly what the local path does)
    threads_per_worker: int | None = Field(None, ge=1)
    # GPUs each encoder / grader actor reserves (fractions share one); with device auto or
    # cuda the actors then run their models there
    gpus_per_worker: float = Field(0.0, ge=0)
    # queries per search call of the lexical and dense channels (the fitted channel is
    # loaded once per search worker, the queries are sharded over the workers)
    search_shard_queries: int = Field(2000, ge=1)
    # a killed worker is restarted and its task retried this many times before the stage fails
    max_retries: int = Field(3, ge=0, le=100)
    # Ray's object store for a local Ray (bytes; None: Ray's default, 30% of memory)
    object_store_memory: int | None = Field(None, ge=78_643_200)


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


class AssembleConfig(_Strict):
    """Gated engagement, blended targets and the point-in-time training set (docs/assemble.md)."""

    # cut instant T of the training set (UTC); None = the mining snapshot (mining.snapshot_ts
    # or the end of the simulated log). Only feature rows stamped <= T are joined.
    cut_ts: datetime | None = None
    # query splits that go into training/trainset.parquet (never test)
    splits: list[Literal["train", "dev"]] = Field(default_factory=lambda: ["train"])
    # split assembled through the same point-in-time path for the report's evidence only
    report_split: Literal["train", "dev", "test"] = "dev"
    # gating: engagement counts as a preference only when the cascade grade >= this ...
    gate_min_grade: int = Field(2, ge=0, le=3)
    # ... and the cascade's confidence >= this
    gate_min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    # pseudo-exposure of the segment prior when the gated engagement is recomputed at T
    engagement_prior_strength: float = Field(20.0, gt=0)
    # recompute engagement as of T, gate it with the grades known at T, publish it to
    # gated_engagement_fv (stamped at T) before the training set is joined
    refresh_engagement: bool = True
    # blended target = w_grade * expected_grade/3 + w_prior * retrieval_prior
    #                  + w_preference * preference term; the weights must sum to 1
    weight_grade: float = Field(0.78, ge=0.0, le=1.0)
    weight_prior: float = Field(0.12, ge=0.0, le=1.0)
    weight_preference: float = Field(0.10, ge=0.0, le=1.0)
    # click_target = (clicks_28d + m * global CTR) / (impressions_28d + m), m = this
    click_prior_impressions: float = Field(10.0, ge=0.0)
    # re-derive category / difficulty_level from the channel ranks and the cascade grade
    # (relgrade.mining.prior.refine_levels); False keeps the pattern-only levels of the view
    refine_levels: bool = True
    # expectations on the assembled set (validation suite "training_set")
    min_list_size: int = Field(1, ge=1)  # union rows per training query
    max_list_size: int = Field(1000, ge=1)
    max_level_share: float = Field(0.95, gt=0.0, le=1.0)  # no difficulty level above this share
    min_levels_present: int = Field(2, ge=1, le=5)  # distinct difficulty levels in the set
    report_examples: int = Field(12, ge=0)  # example rows shown in the HTML report

    @field_validator("weight_preference")
    @classmethod
    def _weights_sum(cls, v: float, info) -> float:
        total = v + info.data.get("weight_grade", 0.0) + info.data.get("weight_prior", 0.0)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"assemble weights must sum to 1 (grade + prior + preference = {total})")
        return v


class LLMJudgeConfig(_Strict):
    """Optional last stage: an LLM judge behind an OpenAI-compatible chat-completions
    endpoint (relgrade/grading/llm_judge.py). Configured, not required: disabled by
    default."""

    enabled: bool = False
    base_url: str = "http://localhost:8000/v1"  # .../v1; POST {base_url}/chat/completions
    model: str = "judge"
    api_key_env: str = "RELGRADE_LLM_API_KEY"  # name of the env var holding the key (may be unset)
    timeout_s: float = Field(20.0, gt=0, le=600)
    max_share: float = Field(0.01, ge=0.0, le=1.0)  # share of a chunk's pairs escalated to it
    min_confidence: float = Field(0.6, ge=0.0, le=1.0)  # escalate pairs below this confidence
    judge_confidence: float = Field(0.85, ge=0.25, le=1.0)  # probability mass on the judge's grade
    concurrency: int = Field(4, ge=1, le=256)  # requests in flight
    max_retries: int = Field(4, ge=0, le=20)  # on 429, 5xx, timeouts
    backoff_s: float = Field(0.5, ge=0, le=60)  # first retry's wait, doubled each time (or Retry-After)
    max_tokens: int = Field(4, ge=1, le=256)
    few_shot: int = Field(8, ge=0, le=64)  # train-split examples in the prompt (an equal number per grade)
    cache: bool = True  # answers cached by (model, prompt version, pair) under <data_root>/cache
    eval_pairs: int = Field(300, ge=0)  # test pairs graded by the judge alone for the report


class NegativesConfig(_Strict):
    """Negatives added to the judged pairs the teachers learn from (train) and are
    calibrated on (dev): relgrade/grading/negatives.py."""

    random_per_query: int = Field(6, ge=0)  # uniform catalog items outside the query's union and judgments
    random_weight: float = Field(1.0, ge=0)  # their total weight as a share of the split's judged pairs
    mined_per_query: int = Field(3, ge=0)  # unjudged union items in the rank window, below the margin
    mined_weight: float = Field(0.5, ge=0)
    mined_rank_min: int = Field(11, ge=1)  # best channel rank window of mined negatives
    mined_rank_max: int = Field(100, ge=1)
    mined_relative_margin: float = Field(0.05, ge=0, lt=1)  # cosine <= (1 - m) * weakest judged positive's
    mined_label: list[float] = Field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0])  # their grade target

    @field_validator("mined_label")
    @classmethod
    def _label(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("mined_label must be 4 non-negative numbers summing to 1 (grades 0..3)")
        return v


class GBMStageConfig(_Strict):
    """Stage 1: histogram gradient boosting on the cheap pair features."""

    kind: Literal["gbm"] = "gbm"
    name: str = "gbm"
    max_iter: int = Field(500, ge=1)
    learning_rate: float = Field(0.06, gt=0, le=1)
    max_leaf_nodes: int = Field(15, ge=2)
    l2: float = Field(1.0, ge=0)
    cost_s_per_million: float = Field(52.0, ge=0)  # features + trees, measured (benchmarks/bench_grading.py)


class CrossEncoderStageConfig(_Strict):
    """A cross-encoder stage fine-tuned here from ``base_model`` (default: the bundled
    MiniLM), or, with ``pretrained: true``, a team's own sentence-transformers
    CrossEncoder folder used as is (calibrated and stacked on dev like the others)."""

    kind: Literal["cross_encoder"] = "cross_encoder"
    name: str
    base_model: str | None = None  # sentence-transformers folder; None = the bundled all-MiniLM-L6-v2
    pretrained: bool = False  # True: base_model is a trained CrossEncoder, not fine-tuned here
    layers: int | None = Field(None, ge=1, le=48)  # keep the first N transformer layers (None: all)
    steps: int = Field(800, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1.0e-4, gt=0, le=1)
    warmup_share: float = Field(0.1, ge=0, lt=1)
    max_seq_length: int = Field(32, ge=8, le=512)
    seed_offset: int = Field(0, ge=0)
    # int8 dynamic-quantized Linear layers at inference: off, because dynamic quantization
    # scales activations per batch, so a pair's logits moved by up to 0.99 with the pairs
    # batched beside it (fp32: 3e-6), and int8 was only ~1.2x faster here
    int8: bool = False
    cost_s_per_million: float = Field(1400.0, ge=0)  # inference on the pairs that reach it (3 layers, fp32, 2 threads)


GradingStageConfig = Annotated[Union[GBMStageConfig, CrossEncoderStageConfig], Field(discriminator="kind")]


def _default_stages() -> list:
    # Measured on the default profile (docs/grading.md): a second, 6-layer cross-encoder
    # (300 steps, 278 s of training, 2,200 s per million pairs int8) moved test RMSE by 0.0003
    # over this cascade on 2 CPU cores, so the default stops at one cross-encoder; add
    # stages (or a reranker of your own, `pretrained: true`) where compute allows.
    return [
        GBMStageConfig(),
        CrossEncoderStageConfig(name="ce2", layers=3, steps=600, learning_rate=1.0e-4, max_seq_length=32),
    ]


class ProbeConfig(_Strict):
    """Probes of the union distribution (grading report; relevance_grade_fv suite)."""

    random_pairs: int = Field(2000, ge=0)  # dev queries x uniformly drawn catalog items
    min_random_grade0_share: float = Field(0.97, ge=0, le=1)  # share of them graded 0
    rank_bands: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [5, 10, 25, 50, 100], min_length=1)  # upper edges of best-rank bands
    min_band_expected_grade_drop: float = Field(0.2, ge=0)  # top band's mean expected grade minus the deepest's
    min_judged_binary_agreement: float = Field(0.7, ge=0, le=1)  # union pairs that carry a human label
    # the gate refuses a sampled share (probe grade-0, judged agreement) only when its
    # Wilson upper bound at this one-sided confidence falls below the required share
    share_confidence: float = Field(0.99, gt=0.5, lt=1)

    @field_validator("rank_bands")
    @classmethod
    def _bands(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"grading.probe.rank_bands must increase, got {v}")
        return v


class GradingConfig(_Strict):
    """Calibrated teacher cascade (docs/grading.md)."""

    seed: int = Field(20260704, ge=0)
    # stages, cheapest first: stage 1 must be the GBM (it runs on every pair); stage k>1
    # stacks the outputs of stages 1..k (a multinomial logistic regression fitted on dev)
    stages: list[GradingStageConfig] = Field(default_factory=_default_stages)
    retrieval_features: bool = False  # stage 1 also sees channel ranks/agreement/prior (grades then depend on mining)
    # stage 1 also sees the query-item attribute agreement (the attributes stage's tagger and
    # lexicon; docs/attributes.md), and the cross-encoders read it as text after the title
    attribute_features: bool = True
    attribute_text: bool = False
    # publish a judged union pair of a train query with its human judgment (deciding stage 0)
    anchor_judgments: bool = True
    negatives: NegativesConfig = NegativesConfig()
    ensemble_c: float = Field(1.0, gt=0)  # inverse L2 strength of the stacking regressions
    infer_batch_size: int = Field(128, ge=1)
    eval_max_queries: int | None = Field(None, ge=1)  # dev/test queries scored (a hash sample; None: all)
    # intra-op threads (torch, OpenMP): 2 on an idle 2-core machine; set 1 when other
    # processes share the cores (OpenMP spin-waits made 2 threads up to 4x slower then)
    threads: int = Field(2, ge=1)
    grade_rule: Literal["quadratic", "argmax"] = "quadratic"
    ece_bins: int = Field(15, ge=2)
    # escalation: thresholds on each stage's calibrated confidence, chosen on dev as the
    # best dev quality whose modelled compute on the union (stages' cost_s_per_million
    # times the share of union pairs that would reach them) fits this budget
    compute_budget_s_per_million: float = Field(180.0, ge=0)
    threshold_grid: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [round(0.3 + 0.025 * i, 3) for i in range(29)]
    )  # candidate confidence thresholds
    budget_sample_pairs: int = Field(4000, ge=100)  # union pairs scored by every stage to model the compute
    # hard caps on the share of a chunk escalated to stages 2, 3, ... (None: thresholds
    # alone decide); when set, the report's cascade figures are graded under the same caps
    max_share: list[Annotated[float, Field(ge=0, le=1)] | None] = Field(default_factory=list)
    # prior-shift correction of the published posteriors to the union's class mix (EM,
    # relgrade/grading/priorshift.py): none | em
    prior_shift: Literal["none", "em"] = "none"
    chunk_size: int = Field(100_000, ge=100)  # union rows per checkpointed chunk
    progress_every_s: float = Field(10.0, gt=0)
    positive_grade: int = Field(2, ge=0, le=3)  # grade >= this is relevant (levels, binary agreement)
    report_split: Literal["test"] = "test"  # human-labelled split the report scores
    probe: ProbeConfig = ProbeConfig()
    llm_judge: LLMJudgeConfig = LLMJudgeConfig()

    @field_validator("threshold_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("grading.threshold_grid needs at least one threshold")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list) -> list:
        if not v or v[0].kind != "gbm" or any(s.kind == "gbm" for s in v[1:]):
            raise ValueError("grading.stages: the first stage must be the one gbm stage, the others cross-encoders")
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"grading.stages: names must be unique, got {names}")
        return v


class CurriculumStageConfig(_Strict):
    """One stage of the student's curriculum (docs/training.md)."""

    name: str
    # difficulty levels (1 easiest .. 5 hardest) whose rows this stage draws from
    levels: list[int]
    # cosent / cosine: pointwise (query, item, target); mnrl: in-batch contrastive
    # (query, positive); margin_mse: (query, positive, negative) with the target margin
    loss: Literal["cosent", "cosine", "mnrl", "margin_mse"]
    max_examples: int = Field(2048, ge=1)  # examples drawn for this stage (one pass)
    learning_rate: float = Field(5e-5, gt=0)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if not v or any(lv not in (1, 2, 3, 4, 5) for lv in v):
            raise ValueError(f"curriculum levels must be non-empty, within 1..5; got {v}")
        return sorted(set(v))


def _default_curriculum() -> list[CurriculumStageConfig]:
    return [
        CurriculumStageConfig(name="pointwise", levels=[1, 2], loss="cosent", max_examples=1280, learning_rate=5e-5),
        CurriculumStageConfig(name="in_batch", levels=[1, 2, 3], loss="mnrl", max_examples=640, learning_rate=4e-5),
        CurriculumStageConfig(name="hard_negative", levels=[1, 2, 3, 4, 5], loss="margin_mse", max_examples=1280,
                              learning_rate=3e-5),
    ]


class HardNegativeBaselineConfig(_Strict):
    """The peer recipe, ``hardneg_human`` (training/hardneg.py): judged train pairs with a
    grade >= ``min_grade``, one negative each from sentence-transformers'
    ``mine_hard_negatives`` with the base model over the catalog, MNRL, one epoch."""

    enabled: bool = True  # the train stage trains it (and the evaluation scores it)
    min_grade: int = Field(2, ge=0, le=3)  # positives: human grade at least this
    # positives drawn (seeded); None: the curriculum's examples in all, the student's budget
    positives: int | None = Field(None, ge=1)
    range_min: int = Field(10, ge=0)  # skip the base model's top range_min candidates ...
    range_max: int = Field(50, ge=1)  # ... and consider those up to range_max
    relative_margin: float | None = Field(0.05, ge=0, lt=1)  # negative score <= (1 - margin) * positive's
    num_negatives: int = Field(1, ge=1)
    sampling_strategy: Literal["random", "top"] = "random"
    learning_rate: float = Field(5e-5, gt=0)


class TrainingConfig(_Strict):
    """Student bi-encoder training (docs/training.md)."""

    base_model: str | None = None  # sentence-transformers folder; None = the bundled all-MiniLM-L6-v2
    target_column: str = "target"  # trainset column the student learns (blended relgrade target)
    click_target_column: str = "click_target"  # the click-trained baseline's target
    train_click_baseline: bool = True  # the train stage also trains the click-trained baseline
    # the sentence-transformers hard-negative recipe on the human judgments (hardneg_human)
    hardneg_baseline: HardNegativeBaselineConfig = Field(default_factory=HardNegativeBaselineConfig)
    curriculum: list[CurriculumStageConfig] = Field(default_factory=_default_curriculum)
    batch_size: int = Field(32, ge=2)  # examples per optimizer step, every stage
    max_seq_length: int = Field(32, ge=8)  # tokens, training and the student's catalog encoding
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # linear warm-up share of each stage's steps
    # fp32, or bf16 autocast (mixed precision); auto: bf16 where the hardware multiplies bf16
    # (AMX, AVX-512 BF16, a bf16 GPU), else fp32 (relgrade/numerics.py; benchmarks/bench_device.py)
    train_precision: Literal["auto", "fp32", "bf16"] = "auto"
    weight_decay: float = Field(0.01, ge=0)
    seed: int = Field(20260706, ge=0)
    # pair construction: targets are turned into percentiles over the whole set, so one
    # threshold serves the blended target and the (much smaller) click target alike
    positive_percentile: float = Field(0.7, ge=0, le=1)  # mnrl / margin_mse positive: at least this
    min_percentile_gap: float = Field(0.3, gt=0, le=1)  # margin_mse: positive - negative percentile
    positives_per_query: int = Field(2, ge=1)  # per query and stage, highest targets first
    negatives_per_positive: int = Field(2, ge=1)  # margin_mse negatives per positive
    new_level_negative_weight: float = Field(4.0, ge=1)  # sampling weight of negatives from a stage's new levels
    # margin_mse label = scale * (target_pos - target_neg). Target gaps of a pair reach
    # 0.3..1 while the base model's cosine gaps between two items of a query are mostly
    # under 0.3: 1.0 asks for gaps it rarely makes. Of
    # 1.0, 0.25 and 0.1 (docs/training.md; measured on the test queries, so a choice
    # made on the reported split), 0.25 gave the best recall@100
    margin_scale: float = Field(0.25, gt=0)
    mnrl_scale: float = Field(20.0, gt=0)  # inverse temperature of the in-batch softmax
    cosent_scale: float = Field(20.0, gt=0)
    # catalog encoding and index
    encode_batch_size: int = Field(128, ge=1)
    encode_precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 with AMX or AVX-512 BF16, else fp32 (relgrade/numerics.py)
    threads: int = Field(2, ge=1)  # torch / faiss threads
    progress_every_s: float = Field(10.0, gt=0)
    # experiments (`relgrade experiments`): graded-pair fractions for data scaling
    scaling_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.1, 0.3, 1.0])
    # experiments: the student and the click-trained baseline again with every stage's
    # examples multiplied by each factor (1.0 = the train stage's own models)
    budget_multipliers: list[Annotated[float, Field(gt=0, le=1000)]] = Field(default_factory=lambda: [2.0, 4.0, 8.0])


class EvaluationConfig(_Strict):
    """Evaluation of every model on human-labelled queries (docs/training.md)."""

    split: Literal["dev", "test"] = "test"  # human-labelled split scored
    # teacher: the grading cascade ranking the judged items (the distillation reference;
    # judged-set metrics only, left out when the grade stage has not run)
    models: list[Literal["student", "click_trained", "hardneg_human", "base", "bm25", "teacher"]] = Field(
        default_factory=lambda: ["student", "click_trained", "hardneg_human", "base", "bm25", "teacher"])
    ndcg_k: int = Field(10, ge=1)  # judged-set NDCG@k, gain 2^grade - 1
    embarrassing_k: int = Field(3, ge=1)  # share of the top-k judged items with grade 0
    recall_k: int = Field(100, ge=1)  # full-catalog recall@k ...
    recall_min_grade: int = Field(2, ge=0, le=3)  # ... of judged items with at least this grade
    bootstrap: int = Field(1000, ge=10)  # bootstrap resamples over queries
    ci: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(20260707, ge=0)
    # targets checked in the report: student vs click-trained
    target_relative_gain: float = Field(0.05, ge=0, le=10)
    target_embarrassing_ratio: float = Field(0.6, gt=0, le=10)
    # targets against the peer recipe (hardneg_human): recall@k at least 1 + this times
    # the peer's; NDCG@k on queries with a grade 0 at or above it; emb@k at or below it
    target_peer_recall_gain: float = Field(0.03, ge=0, le=10)
    query_batch_size: int = Field(256, ge=1)


class AttributesConfig(_Strict):
    """Query attribute extraction (docs/attributes.md): the catalog lexicon, the weak
    labels of the train queries, the MiniLM + CRF tagger, the hand gold set it is
    measured on."""

    gold_path: str | None = "data/homedepot/attributes_gold.jsonl"  # BIO-annotated dev/test queries
    lexicon_min_count: int = Field(3, ge=1)  # titles a brand / type / finish is seen in
    max_train_queries: int | None = Field(6000, ge=1)  # weakly labelled train queries the tagger fits on
    # 1 epoch: on the dev gold queries, 1 epoch + lexicon fill beat the dictionary on every
    # type with >= 20 spans, 2 epochs did not on sizes, at twice the time (docs/attributes.md)
    epochs: int = Field(1, ge=1, le=50)
    # after Viterbi, a lexicon span over words the tagger left outside every span is added
    # (QueryTagger.predict_tags); the CRF alone is reported beside it
    lexicon_fill: bool = True
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    head_learning_rate: float = Field(5e-3, gt=0, le=1)
    max_seq_length: int = Field(32, ge=8, le=512)
    seed: int = Field(13, ge=0)
    threads: int = Field(2, ge=1)
    progress_every_s: float = Field(10.0, gt=0)


class RelgradeConfig(_Strict):
    profile: str = "default"
    data_root: str = "var/default"
    dataset: DatasetConfig = DatasetConfig()
    simulation: SimulationConfig = SimulationConfig()
    engagement: EngagementFeatureConfig = EngagementFeatureConfig()
    feast: FeastConfig = FeastConfig()
    validation: ValidationConfig = ValidationConfig()
    prefect: PrefectConfig = PrefectConfig()
    mining: MiningConfig = MiningConfig()
    attributes: AttributesConfig = AttributesConfig()
    grading: GradingConfig = GradingConfig()
    assemble: AssembleConfig = AssembleConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    # where the heavy per-row work (encoding, the lexical and dense channels, grading the
    # union) runs: in this process, or on Ray (`pip install -e ".[distributed]"`). Prefect
    # orchestrates either way; the results are the same (tests/integration/test_ray_engine.py)
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()
    # where the models run (the teachers, the student's training, every encoding): auto
    # takes a CUDA device when torch sees one, else the CPU; cuda without one is an error.
    # Recorded with each precision in every run's numerics block and cache key (relgrade/numerics.py)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _log_needs_a_cut(self):
        if self.engagement.source == "log":
            if not self.engagement.log_path:
                raise ValueError("engagement.source is log: set engagement.log_path to your search log")
            if self.mining.snapshot_ts is None:
                raise ValueError("engagement.source is log: set mining.snapshot_ts to the instant your log ends "
                                 "(the mining snapshot and the training set's cut)")
        if self.dataset.adapter == "contract" and not (self.dataset.catalog_path and self.dataset.judgments_path):
            raise ValueError("dataset.adapter is contract: set dataset.catalog_path and dataset.judgments_path")
        return self

    @property
    def paths(self) -> "Paths":
        return Paths(resolve_path(self.data_root))

    @property
    def snapshot_ts(self) -> datetime:
        """The mining snapshot instant (UTC): ``mining.snapshot_ts``, or the end of the
        simulated log."""
        from datetime import timedelta

        ts = self.mining.snapshot_ts or (self.simulation.start_date + timedelta(days=self.simulation.days))
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)

    def resolve(self, rel: str | None) -> Path | None:
        return None if rel is None else resolve_path(rel)


def resolve_path(p: str | os.PathLike) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


class Paths:
    """Every location under one data root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # stage outputs (the data contract between stages)
    @property
    def contract(self) -> Path:
        return self.root / "contract"

    def table(self, name: str) -> Path:
        return self.contract / f"{name}.parquet"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def feature_source(self, view: str) -> Path:
        return self.features / f"{view}.parquet"

    def staging(self, view: str) -> Path:
        """A validated-at-publish feature batch waiting for the materialize flow."""
        return self.features / "staging" / f"{view}.parquet"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def validation_pages(self) -> Path:
        return self.reports / "validation"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    # attributes
    @property
    def attributes(self) -> Path:
        return self.root / "attributes"

    @property
    def query_attributes(self) -> Path:
        """One row per query: its tagged spans and structured attributes."""
        return self.attributes / "query_attributes.parquet"

    @property
    def tagger(self) -> Path:
        return self.attributes / "tagger"

    # mining
    @property
    def mining(self) -> Path:
        return self.root / "mining"

    def union(self, snapshot_ts) -> Path:
        """The union table of one mining snapshot."""
        return self.mining / f"union_{_tag(snapshot_ts)}.parquet"

    def channel(self, snapshot_ts, channel: str) -> Path:
        """One retrieval channel's top-K frame of one mining snapshot."""
        return self.mining / "channels" / _tag(snapshot_ts) / f"{channel}.parquet"

    def mining_manifest(self, snapshot_ts) -> Path:
        return self.mining / f"manifest_{_tag(snapshot_ts)}.json"

    @property
    def cache(self) -> Path:
        """Content-addressed caches (embeddings, LLM-judge answers): safe to delete."""
        return self.root / "cache"

    @property
    def pipeline_run(self) -> Path:
        """What the last ``relgrade pipeline`` took: seconds per stage, peak memory."""
        return self.root / "pipeline_run.json"

    def lock(self, stage: str) -> Path:
        return self.root / "locks" / f"{stage}.lock"

    # grading
    @property
    def grading(self) -> Path:
        return self.root / "grading"

    @property
    def grades(self) -> Path:
        return self.grading / "grades.parquet"

    @property
    def test_scores(self) -> Path:
        """The teachers' expected grade for every human-judged pair of the report split
        (the evaluation ranks judged items by it as the distillation reference)."""
        return self.grading / "test_scores.parquet"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def teachers(self) -> Path:
        return self.models / "teachers"

    def report(self, stage: str) -> Path:
        """reports/<stage>/ (report.html, report.json)."""
        return self.reports / stage

    # assemble -> train
    @property
    def training(self) -> Path:
        return self.root / "training"

    @property
    def trainset(self) -> Path:
        """The point-in-time training set (one row per query-item pair, blended target)."""
        return self.training / "trainset.parquet"

    @property
    def trainset_lists(self) -> Path:
        return self.training / "trainset_lists.parquet"

    @property
    def trainset_manifest(self) -> Path:
        return self.training / "manifest.json"

    def model(self, name: str) -> Path:
        """A trained bi-encoder: the pipeline's runs (``student``, ``click_trained``, ``hardneg_human``)
        at models/<name>, every other run under models/experiments/<name>."""
        return self.models / name if name in ("student", "click_trained", "hardneg_human") else self.models / "experiments" / name


def _tag(ts) -> str:
    import pandas as pd

    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y%m%dT%H%M%SZ")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class ConfigError(ValueError):
    """A configuration that cannot be used: one line per problem, each naming the file,
    the key, the value, what is allowed and (for a misspelt key) the closest valid one."""


# keys whose values are file paths: relative ones in a user's config file resolve
# against that file's folder (the shipped profiles' against the repository root)
PATH_KEYS = ("data_root", "dataset.path", "dataset.products_path", "dataset.labels_path", "dataset.catalog_path",
             "dataset.blind_ratings_path",
             "dataset.judgments_path", "dataset.queries_path", "engagement.log_path", "mining.external_path",
             "mining.dense_cache_dir", "training.base_model", "attributes.gold_path")


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if doc is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(doc).__name__}")
    return doc


def _absolutize(doc: dict, base: Path) -> dict:
    out = _deep_merge({}, doc)
    for key in PATH_KEYS:
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str):
            v = Path(node[parts[-1]]).expanduser()
            node[parts[-1]] = str(v if v.is_absolute() else (base / v).resolve())
    stages = (out.get("grading") or {}).get("stages") if isinstance(out.get("grading"), dict) else None
    for st in stages or []:
        if isinstance(st, dict) and isinstance(st.get("base_model"), str) and not Path(st["base_model"]).is_absolute():
            st["base_model"] = str((base / st["base_model"]).resolve())
    return out


def _model_at(loc: tuple) -> type | None:
    """The config model a validation error location points into (for key suggestions)."""
    model: Any = RelgradeConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(model, _UnionOf):
            tagged = [a for a in model.members if getattr(a.model_fields.get("kind"), "default", None) == part]
            if tagged:
                model = tagged[0]
                continue
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        if part not in model.model_fields:
            return model
        ann = model.model_fields[part].annotation
        nxt = [a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = nxt[0] if len(nxt) == 1 else (_UnionOf(nxt) if nxt else ann)
    return model if isinstance(model, type) else None


class _UnionOf:
    def __init__(self, members):
        self.members = members


def _flatten(ann) -> list:
    import typing

    args = typing.get_args(ann)
    if not args:
        return [ann]
    out = []
    for a in args:
        out += _flatten(a)
    return out


def format_validation_error(exc, source: str) -> str:
    """One line per problem: ``source: key = value: what is allowed`` (with the closest
    valid key for an unknown one)."""
    import difflib

    lines = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in ("gbm", "cross_encoder")))
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            fields = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            hint = f" (did you mean {prefix}{close[0]}?)" if close else (f" (valid: {', '.join(fields)})" if fields else "")
            lines.append(f"{source}: unknown key {key}{hint}")
        elif not key or isinstance(e.get("input"), dict):
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key + ': ' if key else ''}{msg}")
        else:
            lines.append(f"{source}: {key} = {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_config(
    profile: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> RelgradeConfig:
    """The configuration: the typed defaults, the shipped profile ``profile`` (default:
    $RELGRADE_PROFILE or ``default``) and a user's config file (``config_file`` or
    $RELGRADE_CONFIG), deep-merged in that order, then ``overrides`` (tests point
    data_root at a tmp dir) and $RELGRADE_DATA_ROOT.

    A user's file holds only what differs from the defaults (any subset of the keys
    ``relgrade config`` prints); one with ``profiles:`` is a whole profile file and
    replaces the shipped one. Relative paths in it resolve against its folder. Every
    problem raises :class:`ConfigError` with one line per key."""
    profile = profile or os.environ.get("RELGRADE_PROFILE", "default")
    env_file = os.environ.get("RELGRADE_CONFIG")
    if config_file is None and env_file is not None:
        if not env_file.strip():
            raise ConfigError("RELGRADE_CONFIG is set but empty: unset it or give the path of a config file")
        config_file = env_file
    shipped = _read_yaml(DEFAULT_CONFIG_FILE)
    source = str(DEFAULT_CONFIG_FILE)
    user = None
    if config_file is not None:
        upath = Path(config_file).expanduser().resolve()
        user = _absolutize(_read_yaml(upath), upath.parent)
        source = str(upath)
    table = user if user is not None and ("profiles" in user or "base" in user) else shipped
    profiles = table.get("profiles") or {}
    if profile not in profiles:
        import difflib

        close = difflib.get_close_matches(profile, list(profiles), n=1)
        where = source if table is user else str(DEFAULT_CONFIG_FILE)
        raise ConfigError(f"{where}: unknown profile {profile!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; known: {', '.join(sorted(profiles))}")
    merged = _deep_merge(table.get("base") or {}, profiles[profile] or {})
    if user is not None and table is shipped:
        merged = _deep_merge(merged, user)
    merged["profile"] = profile
    if os.environ.get("RELGRADE_DATA_ROOT"):
        merged["data_root"] = os.environ["RELGRADE_DATA_ROOT"]
    merged = _deep_merge(merged, overrides or {})
    from pydantic import ValidationError

    try:
        return RelgradeConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
