"""The progressive curriculum: which difficulty levels enter at which stage, and which
loss each stage trains with (the reasoning is in docs/training.md).

Default (``training.curriculum``; relgrade/config/training.py)::

    stage            levels     negatives from   loss           examples
    1 easy           1, 2       levels 1, 2      mnrl_triplet   320
    2 one_channel    1, 2, 3    level 3          mnrl_triplet   640
    3 hard_negative  1 .. 5     levels 4, 5      mnrl_triplet   2240

``mnrl_triplet``: (query, positive, negative) + in-batch negatives; the positives are every
train query's target positives (sampled), each negative a row of the same query from the
stage's new levels, at least ``min_percentile_gap`` below it (the ladder's rung 3 per stage).
(``cosent``, ``cosine``, ``mnrl``, ``mnrl_hard`` and ``margin_mse`` remain per-stage
choices; the ladder in docs/training.md measured the CoSENT -> MNRL -> MarginMSE curriculum
below the peer recipe.) Levels are the mining stage's difficulty (refined with the teacher grade: "how many
retrievers get this example wrong"). A stage keeps every earlier level (no forgetting)
and the levels it adds are its *new* levels: a hard-negative stage draws its negatives from
them first (4x as often). With ``use_curriculum=False`` (the no-curriculum ablation and the
click-trained baseline) every stage draws from all five levels, with the same losses,
order and budget: only the difficulty schedule differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from relgrade.config import CurriculumStageConfig, TrainingConfig
from training.data import contrastive_examples, margin_examples, pointwise_examples

ALL_LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class StagePlan:
    index: int  # 1-based
    name: str
    loss: str
    levels: tuple[int, ...]
    new_levels: tuple[int, ...]  # levels first seen in this stage
    max_examples: int
    learning_rate: float
    rows: str = "levels"  # levels | judged (the human-anchored rows)


def plan(tcfg: TrainingConfig, use_curriculum: bool = True, budget_multiplier: float = 1.0) -> list[StagePlan]:
    if budget_multiplier <= 0:
        raise ValueError(f"budget_multiplier must be > 0, got {budget_multiplier}")
    seen: set[int] = set()
    out = []
    for i, st in enumerate(tcfg.curriculum, start=1):
        levels = tuple(st.levels) if use_curriculum else ALL_LEVELS
        new = tuple(lv for lv in levels if lv not in seen) if use_curriculum else ()
        seen |= set(levels)
        n = max(1, int(round(st.max_examples * budget_multiplier)))
        out.append(StagePlan(i, st.name, st.loss, levels, new, n, st.learning_rate,
                             st.rows if use_curriculum else "levels"))
    return out


def stage_examples(df: pd.DataFrame, stage: StagePlan, tcfg: TrainingConfig, rng: np.random.Generator) -> pd.DataFrame:
    """The stage's examples as a frame whose columns are the loss's inputs (+ label)."""
    rows = df[df["judged"]] if stage.rows == "judged" else df[df["level"].isin(stage.levels)]
    if stage.loss in ("cosent", "cosine"):
        return pointwise_examples(rows, stage.max_examples, rng)
    if stage.loss == "mnrl":
        return contrastive_examples(rows, stage.max_examples, rng, tcfg)
    if stage.loss == "mnrl_hard":  # the margin triples without their label: in-batch + one hard negative
        ex = margin_examples(rows, stage.max_examples, rng, tcfg, stage.new_levels)
        return ex.drop(columns="label").rename(columns={"query": "anchor"})
    if stage.loss == "mnrl_triplet":  # the ladder's rung 3 per stage: negatives from the new levels only
        from training.hardneg import level_triplets

        texts = dict(zip(df["item_id"], df["item_title"]))
        trip, _ = level_triplets(df, texts, tcfg, stage.max_examples, int(rng.integers(2 ** 31)),
                                 stage.new_levels or stage.levels)
        return trip[["anchor", "positive", "negative"]]
    if stage.loss == "margin_mse":
        return margin_examples(rows, stage.max_examples, rng, tcfg, stage.new_levels)
    raise ValueError(f"unknown loss {stage.loss!r}")


def build_loss(model, stage: StagePlan, tcfg: TrainingConfig):
    from sentence_transformers.sentence_transformer import losses

    if stage.loss == "cosent":
        return losses.CoSENTLoss(model, scale=tcfg.cosent_scale)
    if stage.loss == "cosine":
        return losses.CosineSimilarityLoss(model)
    if stage.loss in ("mnrl", "mnrl_hard", "mnrl_triplet"):
        return losses.MultipleNegativesRankingLoss(model, scale=tcfg.mnrl_scale)
    if stage.loss == "margin_mse":
        return losses.MarginMSELoss(model)  # dot product of normalized embeddings = cosine
    raise ValueError(f"unknown loss {stage.loss!r}")


def describe(stages: list[StagePlan]) -> list[dict]:
    return [{"stage": s.index, "name": s.name, "loss": s.loss, "levels": list(s.levels),
             "new_levels": list(s.new_levels), "max_examples": s.max_examples, "learning_rate": s.learning_rate,
             "rows": s.rows}
            for s in stages]


__all__ = ["StagePlan", "plan", "stage_examples", "build_loss", "describe", "CurriculumStageConfig"]
