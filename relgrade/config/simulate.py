"""The engagement simulator's settings (relgrade/simulate.py, docs/simulator.md)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import Field, field_validator

from relgrade.config.base import _Strict


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
