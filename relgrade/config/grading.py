"""The grading cascade: its teachers, negatives, probes and calibration (relgrade/grading/, docs/grading.md)."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from relgrade.config.base import _Strict


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
