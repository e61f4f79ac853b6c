"""Point-in-time assembly and the blended target (relgrade/assemble/, docs/assemble.md)."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from relgrade.config.base import _Strict


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
