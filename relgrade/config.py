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
    dense_threads: int = 2
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
