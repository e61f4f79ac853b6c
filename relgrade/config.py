"""One typed configuration, loaded from YAML, with named profiles.

``configs/relgrade.yaml`` holds a ``base`` block and ``profiles``; a profile is a
partial override of ``base`` (deep-merged). Every path the system writes lives under
``data_root``; :class:`Paths` derives them so no module invents its own location.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "configs" / "relgrade.yaml"
FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    adapter: Literal["homedepot", "esci", "wands"] = "homedepot"
    # Adapter inputs; relative paths resolve against the repository root.
    path: str = "data/homedepot/train.csv.zip"
    products_path: str | None = None  # ESCI products jsonl / WANDS product.csv
    labels_path: str | None = None  # WANDS label.csv
    encoding: str = "latin-1"
    # Keep only this many queries (deterministic: lowest split-hash order). None = all.
    max_queries: int | None = None
    # Judgments are stamped at this instant (UTC): raters labelled before the log starts.
    judged_at: datetime = datetime(2026, 6, 1, tzinfo=timezone.utc)


class SegmentConfig(_Strict):
    """Query segments by share of simulated traffic (queries ranked by popularity)."""

    head_traffic_share: float = 0.5
    torso_traffic_share: float = 0.3  # the rest is tail


class SimulationConfig(_Strict):
    """Engagement simulator parameters. Settled by the foundation issue: later issues
    must not tune these (or the click model) to reach their targets."""

    seed: int = 20260701
    start_date: datetime = datetime(2026, 7, 1, tzinfo=timezone.utc)
    days: int = 56
    searches_per_day: int = 6000
    zipf_exponent: float = 1.0
    organic_slots: int = 8
    ad_positions: list[int] = Field(default_factory=lambda: [1, 5])  # 1-based positions
    candidates_per_query: int = 24  # production ranker candidate pool (judged + lexical fill)
    # production ranker score = w_lex * lexical + w_pop * popularity + w_margin * margin + noise
    ranker_lexical_weight: float = 1.0
    ranker_popularity_weight: float = 0.6
    ranker_margin_weight: float = 0.3
    ranker_noise: float = 0.3
    # advertisers: share of items that advertise, lognormal daily impression budgets
    advertiser_share: float = 0.3
    ad_budget_median: float = 4.0
    ad_budget_sigma: float = 1.2
    # added by the simulator issue: ad auction score = bid * ((1 - w) + w * lexical), bids
    # lognormal with median 1 and this sigma (docs/simulator.md)
    ad_bid_sigma: float = 0.5
    ad_relevance_weight: float = 0.5
    # position-based click model: examine(p) = 1 / p ** position_bias_eta
    position_bias_eta: float = 1.0
    # attractiveness = sigmoid(bias + rel*relevance01 + pop*popularity + price*cheapness
    #                          + title*title_appeal + ad*is_ad)
    attract_bias: float = -2.2
    attract_relevance: float = 1.6
    attract_popularity: float = 0.9
    attract_price: float = 0.6
    attract_title: float = 0.5
    attract_ad: float = 0.2
    # add-to-cart given click, order given add-to-cart
    atc_bias: float = -1.6
    atc_relevance: float = 1.4
    atc_price: float = 0.5
    order_given_atc: float = 0.45
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
    windows_days: list[int] = Field(default_factory=lambda: [7, 28])


class FeastConfig(_Strict):
    project: str = "relgrade"
    ttl_days: int = 365
    # views whose latest row per (query, item) is written to the online store on publish
    # (the others are offline-only: training reads the offline store)
    online_views: list[str] = Field(
        default_factory=lambda: ["retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv"]
    )
    online_write_chunk_rows: int = Field(100_000, ge=1)  # bounds memory of online writes


class ValidationConfig(_Strict):
    # distribution bounds used by the expectation suites
    max_future_skew_seconds: int = 0
    min_rows: int = 1
    ctr_max: float = 1.0


class PrefectConfig(_Strict):
    task_retries: int = 2
    task_retry_delay_seconds: float = 1.0


class MiningConfig(_Strict):
    """Multi-channel retrieval mining and the retrieval prior (docs/mining.md)."""

    k: int = Field(100, ge=1)  # top-K per channel per query
    channels: list[Literal["lexical", "dense", "behavioral", "external"]] = Field(
        default_factory=lambda: ["lexical", "dense", "behavioral"]
    )  # "external" also runs whenever external_path is set
    external_path: str | None = None  # Parquet: query_id (or query), item_id, rank, score
    # mining instant (UTC); None = end of the simulated log (start_date + days)
    snapshot_ts: datetime | None = None
    query_batch_size: int = 1000
    progress_every_s: float = 5.0
    # lexical: BM25 (bm25s) over product-tokenized titles
    lexical_k1: float = 1.5
    lexical_b: float = 0.75
    # dense: base MiniLM + FAISS; exact IndexFlatIP up to dense_exact_max_items items
    dense_batch_size: int = 64
    dense_max_seq_length: int = 128
    dense_precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast: cos >= 0.9999 to fp32
    dense_exact_max_items: int = 200_000
    dense_ann: Literal["hnsw", "ivf"] = "hnsw"
    dense_hnsw_m: int = 32
    dense_hnsw_ef_construction: int = 80
    dense_hnsw_ef_search: int = 256
    dense_ivf_nlist: int | None = None  # None = 4 * sqrt(items)
    dense_ivf_nprobe: int = 32
    dense_recall_sample: int = 500  # queries used to measure ANN recall against exact
    # torch/faiss threads for the dense channel. 1 by default: on a shared 2-core machine
    # 2 threads ran 3x slower than 1 (14-18 vs 43-51 titles/s, OpenMP threads waiting on
    # each other); raise it on a dedicated machine
    dense_threads: int = Field(1, ge=1)
    dense_cache_dir: str | None = None  # None = <data_root>/cache/embeddings
    # behavioural: engagement graph from events before the snapshot
    behavioral_click_weight: float = 1.0
    behavioral_add_to_cart_weight: float = 2.0
    behavioral_order_weight: float = 3.0
    behavioral_half_life_days: float | None = 28.0
    behavioral_lookback_days: float | None = None
    behavioral_neighbors: int = 10
    behavioral_min_similarity: float = 0.5
    behavioral_neighbor_weight: float = 0.5
    # prior = (1 - agreement_weight) * weighted reciprocal rank + agreement_weight * agreement share
    prior_weights: dict[str, float] = Field(
        default_factory=lambda: {"lexical": 1.0, "dense": 1.0, "behavioral": 1.0, "external": 1.0}
    )
    prior_rank_constant: float = Field(10.0, gt=0)
    prior_agreement_weight: float = Field(0.25, ge=0, le=1)
    # categories and levels
    near_top_rank: int = 10  # easy positive: every active channel ranks it within this
    high_rank: int = 10  # "ranks it high": within this
    positive_grade: int = 2  # refine_levels: grade >= this is a positive
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
    """Optional final stage: an LLM judge behind an OpenAI-compatible HTTP endpoint
    (docs/grading.md). Configured, not required: disabled by default."""

    enabled: bool = False
    base_url: str = "http://localhost:8000/v1"  # .../v1; POST {base_url}/chat/completions
    model: str = "judge"
    api_key_env: str = "RELGRADE_LLM_API_KEY"  # name of the env var holding the key (may be unset)
    timeout_s: float = 20.0
    max_share: float = Field(0.01, ge=0.0, le=1.0)  # share of a chunk's pairs escalated to it
    min_confidence: float = Field(0.6, ge=0.0, le=1.0)  # escalate pairs below this confidence
    judge_confidence: float = Field(0.85, ge=0.25, le=1.0)  # probability mass on the judge's grade


class GradingConfig(_Strict):
    """Calibrated teacher cascade (docs/grading.md)."""

    seed: int = 20260704
    # stage 1: gradient boosting on cheap pair features
    gbm_max_iter: int = 500
    gbm_learning_rate: float = 0.06
    gbm_max_leaf_nodes: int = 15
    gbm_l2: float = 1.0
    # stage 2: cross-encoder fine-tuned from the base MiniLM (query, title) -> 4 grades
    ce_layers: int = Field(3, ge=1, le=6)  # keep the first N of MiniLM's 6 layers (cheaper)
    ce_steps: int = Field(300, ge=1)  # optimizer steps (bounded training)
    ce_batch_size: int = 32
    ce_lr: float = 8e-5
    ce_warmup_share: float = 0.1
    ce_max_seq_length: int = 32  # tokens; queries and titles are short
    # stage 3: a second cross-encoder (all 6 layers, longer inputs, more steps),
    # ensembled with stages 1 and 2 (mean of their calibrated log-probabilities)
    ce3_layers: int = Field(6, ge=1, le=6)
    ce3_steps: int = Field(250, ge=1)
    ce3_lr: float = 6e-5
    ce3_max_seq_length: int = 48
    ce3_seed_offset: int = 1
    # stage-3 combination: a multinomial logistic regression over the members' calibrated
    # log-probabilities fitted on dev (learns how far to trust each member); False = mean
    ensemble_stacking: bool = True
    ensemble_c: float = Field(1.0, gt=0)  # inverse L2 strength of that regression
    # inference
    infer_batch_size: int = 128
    # cross-encoder inference through int8 dynamic quantization of the Linear layers
    # (benchmark: 2.4-2.6x faster than fp32; logits move <= 0.5, no grade changed on 300 pairs)
    ce_int8: bool = False
    # dev and test keep only their first N query ids (a deterministic hash sample) to bound
    # calibration / report inference time; None = every judged pair
    eval_max_queries: int | None = None
    # intra-op threads (torch, OpenMP): 1 is several times faster than 2 while other
    # processes share the 2 cores (OpenMP spin-waits); 2 helps only on an idle machine
    threads: int = 1
    # grade of a distribution: "quadratic" = the integer nearest the expected grade (Bayes
    # decision under the squared loss QWK and RMSE charge), "argmax" = most probable grade;
    # confidence is always the calibrated max probability
    grade_rule: Literal["quadratic", "argmax"] = "quadratic"
    # calibration: temperature scaling fitted on dev; reliability bins
    ece_bins: int = 15
    # cascade thresholds: chosen on dev as the cheapest pair whose QWK is within
    # qwk_margin of stage 3 alone (a little tighter than the 0.01 target)
    qwk_margin: float = Field(0.006, ge=0.0)
    threshold_grid: list[float] = Field(
        default_factory=lambda: [round(0.3 + 0.025 * i, 3) for i in range(27)]
    )  # candidate confidence thresholds for stages 1 and 2
    # escalation budget on the mined union: at most this share of a chunk's pairs goes
    # to stage 2 / stage 3 (least confident first), so grading the union stays affordable
    max_share_stage2: float = Field(0.005, ge=0.0, le=1.0)
    max_share_stage3: float = Field(0.002, ge=0.0, le=1.0)
    chunk_size: int = Field(100_000, ge=100)  # union rows per checkpointed chunk
    progress_every_s: float = 10.0
    # grades used to refine category / difficulty_level (relgrade.mining.prior.refine_levels)
    positive_grade: int = Field(2, ge=0, le=3)
    report_split: Literal["test"] = "test"  # human-labelled split the report scores
    llm_judge: LLMJudgeConfig = LLMJudgeConfig()


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


class TrainingConfig(_Strict):
    """Student bi-encoder training (docs/training.md)."""

    base_model: str | None = None  # sentence-transformers folder; None = the bundled all-MiniLM-L6-v2
    target_column: str = "target"  # trainset column the student learns (blended relgrade target)
    click_target_column: str = "click_target"  # the click-trained baseline's target
    train_click_baseline: bool = True  # the train stage also trains the click-trained baseline
    curriculum: list[CurriculumStageConfig] = Field(default_factory=_default_curriculum)
    batch_size: int = Field(32, ge=2)  # examples per optimizer step, every stage
    max_seq_length: int = Field(32, ge=8)  # tokens, training and the student's catalog encoding
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # linear warm-up share of each stage's steps
    # fp32, or bf16 autocast (CPU mixed precision; benchmarks/bench_training.py measures both)
    train_precision: Literal["fp32", "bf16"] = "fp32"
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 20260706
    # pair construction: targets are turned into percentiles over the whole set, so one
    # threshold serves the blended target and the (much smaller) click target alike
    positive_percentile: float = Field(0.7, ge=0, le=1)  # mnrl / margin_mse positive: at least this
    min_percentile_gap: float = Field(0.3, gt=0, le=1)  # margin_mse: positive - negative percentile
    positives_per_query: int = Field(2, ge=1)  # per query and stage, highest targets first
    negatives_per_positive: int = Field(2, ge=1)  # margin_mse negatives per positive
    new_level_negative_weight: float = Field(4.0, ge=1)  # sampling weight of negatives from a stage's new levels
    margin_scale: float = Field(1.0, gt=0)  # margin_mse label = scale * (target_pos - target_neg)
    mnrl_scale: float = Field(20.0, gt=0)  # inverse temperature of the in-batch softmax
    cosent_scale: float = Field(20.0, gt=0)
    # catalog encoding and index
    encode_batch_size: int = Field(128, ge=1)
    encode_precision: Literal["fp32", "bf16"] = "bf16"
    threads: int = Field(2, ge=1)  # torch / faiss threads
    progress_every_s: float = Field(10.0, gt=0)
    # experiments (`relgrade experiments`): graded-pair fractions for data scaling
    scaling_fractions: list[float] = Field(default_factory=lambda: [0.1, 0.3, 1.0])
    # experiments: the student and the click-trained baseline again with every stage's
    # examples multiplied by each factor (1.0 = the train stage's own models)
    budget_multipliers: list[float] = Field(default_factory=lambda: [2.0])


class EvaluationConfig(_Strict):
    """Evaluation of every model on human-labelled queries (docs/training.md)."""

    split: Literal["dev", "test"] = "test"  # human-labelled split scored
    # teacher: the grading cascade ranking the judged items (the distillation reference;
    # judged-set metrics only, left out when the grade stage has not run)
    models: list[Literal["student", "click_trained", "base", "bm25", "teacher"]] = Field(
        default_factory=lambda: ["student", "click_trained", "base", "bm25", "teacher"])
    ndcg_k: int = Field(10, ge=1)  # judged-set NDCG@k, gain 2^grade - 1
    embarrassing_k: int = Field(3, ge=1)  # share of the top-k judged items with grade 0
    recall_k: int = Field(100, ge=1)  # full-catalog recall@k ...
    recall_min_grade: int = Field(2, ge=0, le=3)  # ... of judged items with at least this grade
    bootstrap: int = Field(1000, ge=10)  # bootstrap resamples over queries
    ci: float = Field(0.95, gt=0, lt=1)
    seed: int = 20260707
    # targets checked in the report: student vs click-trained
    target_relative_gain: float = 0.05
    target_embarrassing_ratio: float = 0.6
    query_batch_size: int = Field(256, ge=1)


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
    grading: GradingConfig = GradingConfig()
    assemble: AssembleConfig = AssembleConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @property
    def paths(self) -> "Paths":
        return Paths(resolve_path(self.data_root))

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


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(
    profile: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> RelgradeConfig:
    """Load ``profile`` (default: $RELGRADE_PROFILE or ``default``) from the YAML file.

    ``overrides`` is deep-merged last (tests use it to point data_root at a tmp dir).
    $RELGRADE_DATA_ROOT, when set, replaces the profile's data root.
    """
    profile = profile or os.environ.get("RELGRADE_PROFILE", "default")
    path = Path(config_file or os.environ.get("RELGRADE_CONFIG", DEFAULT_CONFIG_FILE))
    raw = yaml.safe_load(path.read_text()) or {}
    profiles = raw.get("profiles", {})
    if profile not in profiles:
        raise KeyError(f"unknown profile {profile!r} in {path}; known: {sorted(profiles)}")
    merged = _deep_merge(raw.get("base", {}), profiles[profile] or {})
    merged["profile"] = profile
    if os.environ.get("RELGRADE_DATA_ROOT"):
        merged["data_root"] = os.environ["RELGRADE_DATA_ROOT"]
    merged = _deep_merge(merged, overrides or {})
    return RelgradeConfig.model_validate(merged)
