"""The ladder's triplet recipes (training/hardneg.py): relgrade-target positives, level 4-5
negatives of the same query below the curriculum's negative percentile, the MarginMSE label
from the target margin."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relgrade.config import TrainingConfig
from training.args import TripletRecipe
from training.data import prepare
from training.hardneg import level_negatives, target_positives


def _trainset(n_queries: int = 40, per_query: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        for i in range(per_query):
            rows.append({"query_id": f"q{q}", "item_id": f"i{q}_{i}", "query_text": f"query {q}",
                         "item_title": f"title {q} {i}", "difficulty_level": int(rng.integers(1, 6)),
                         "grade": 1, "target": float(rng.random())})
    return prepare(pd.DataFrame(rows), "target")


def test_target_positives_are_each_querys_best_rows_above_the_percentile():
    t = TrainingConfig()
    df = _trainset()
    texts = dict(zip(df["item_id"], "text " + df["item_title"]))
    pos, stats = target_positives(df, texts, t, n=50, seed=1)
    assert len(pos) == 50 and stats["positives"] == 50
    assert (pos["pct"] >= t.positive_percentile).all()
    assert pos.groupby("query_id").size().max() <= t.positives_per_query
    assert (pos["positive"] == pos["item_id"].map(texts)).all()  # the text every dense model indexes
    assert pos.equals(target_positives(df, texts, t, n=50, seed=1)[0])  # seeded


def test_level_negatives_come_from_the_same_querys_levels_4_5_below_the_negative_percentile():
    t = TrainingConfig()
    df = _trainset()
    texts = dict(zip(df["item_id"], df["item_title"]))
    pos, _ = target_positives(df, texts, t, n=60, seed=2)
    trip, stats = level_negatives(df, pos, texts, t, seed=3)
    assert 0 < len(trip) <= len(pos)
    by_text = df.set_index("item_title")
    neg = by_text.loc[trip["negative"]]
    assert (neg["query_id"].to_numpy() == trip["query_id"].to_numpy()).all()
    assert neg["level"].isin([4, 5]).all()
    assert (neg["pct"].to_numpy() <= trip["pct"].to_numpy() - t.min_percentile_gap + 1e-12).all()  # the margin rule
    assert (neg["target"].to_numpy() == trip["negative_target"].to_numpy()).all()
    assert (trip["negative"] != trip["positive"]).all()
    assert stats["negative_levels"] == [4, 5]


def test_a_query_without_a_hard_level_negative_drops_its_positive():
    t = TrainingConfig()
    df = _trainset(n_queries=2)
    df.loc[df["query_id"] == "q0", "level"] = 1  # q0 has no level 4-5 row
    texts = dict(zip(df["item_id"], df["item_title"]))
    pos, _ = target_positives(df, texts, t, n=10, seed=0)
    trip, _ = level_negatives(df, pos, texts, t, seed=0)
    assert set(trip["query_id"]) == {"q1"} and "q0" in set(pos["query_id"])


def test_margin_mse_needs_targets_on_both_sides():
    from relgrade.config import load_config
    from training.hardneg import recipe_triplets

    with pytest.raises(ValueError, match="margin_mse needs a target on both sides"):
        recipe_triplets(load_config("quick"), None, TripletRecipe("human", "mined", "margin_mse"), 10, 0)


def test_a_curriculum_stage_can_draw_the_judged_rows_and_train_mnrl_with_a_hard_negative():
    from relgrade.config import CurriculumStageConfig
    from training.curriculum import plan, stage_examples

    rows = _trainset(n_queries=30).assign(judged=False)
    rows.loc[rows["query_id"].isin({"q1", "q2", "q3"}), "judged"] = True
    t = TrainingConfig(curriculum=[
        CurriculumStageConfig(name="judged", levels=[1, 2], loss="cosent", rows="judged", max_examples=40),
        CurriculumStageConfig(name="hard", levels=[1, 2, 3, 4, 5], loss="mnrl_hard", max_examples=30)])
    st_judged, st_hard = plan(t)
    ex = stage_examples(rows, st_judged, t, np.random.default_rng(0))
    judged_titles = set(rows.loc[rows["judged"], "item_title"])
    assert len(ex) == 40 and set(ex["sentence2"]) <= judged_titles  # whatever their level
    hard = stage_examples(rows, st_hard, t, np.random.default_rng(0))
    assert list(hard.columns) == ["anchor", "positive", "negative"] and len(hard) == 30
    # without the curriculum (the click-trained baseline) a stage draws from every level
    assert {s.rows for s in plan(t, use_curriculum=False)} == {"levels"}


def test_an_mnrl_triplet_stage_is_rung_3_with_negatives_from_its_new_levels_only():
    """Every train query's target positives, sampled, each with one negative of the same
    query from the stage's *new* levels under the margin rule; seeded; without the
    curriculum (the click-trained baseline) the negatives come from every level."""
    from relgrade.config import CurriculumStageConfig
    from training.curriculum import plan, stage_examples

    df = _trainset(n_queries=60, per_query=30)
    t = TrainingConfig(curriculum=[
        CurriculumStageConfig(name="easy", levels=[1, 2], loss="mnrl_triplet", max_examples=40),
        CurriculumStageConfig(name="hard", levels=[1, 2, 3, 4, 5], loss="mnrl_triplet", max_examples=50)])
    easy, hard = plan(t)
    by_title = df.set_index("item_title")
    for st, want in ((easy, {1, 2}), (hard, {3, 4, 5})):
        ex = stage_examples(df, st, t, np.random.default_rng(0))
        assert list(ex.columns) == ["anchor", "positive", "negative"] and len(ex) == st.max_examples
        assert set(by_title.loc[ex["negative"], "level"]) <= want
        pos = by_title.loc[ex["positive"]]
        assert (pos["pct"] >= t.positive_percentile).all()  # target positives of any level
        assert (by_title.loc[ex["negative"], "query_id"].to_numpy() == pos["query_id"].to_numpy()).all()
        assert ex.equals(stage_examples(df, st, t, np.random.default_rng(0)))  # seeded
    assert pos["level"].nunique() > 1
    flat = stage_examples(df, plan(t, use_curriculum=False)[0], t, np.random.default_rng(1))
    assert set(by_title.loc[flat["negative"], "level"]) - {1, 2}  # every level, not only the easy ones


def test_an_mnrl_triplet_stage_refuses_the_judged_rows():
    from pydantic import ValidationError

    from relgrade.config import CurriculumStageConfig

    with pytest.raises(ValidationError, match="mnrl_triplet draws its positives from every level"):
        CurriculumStageConfig(name="x", levels=[1], loss="mnrl_triplet", rows="judged")
