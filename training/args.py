"""Typed arguments of one training run and every location the train / evaluate stages use.

The settings live in :class:`relgrade.config.TrainingConfig` / ``EvaluationConfig``
(``configs/relgrade.yaml``); a :class:`TrainRun` names what differs between the student,
the baselines and the ablations, so each of them is the same code path with other
arguments (Tevatron-style: typed arguments in, a thin entry point on top).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from relgrade.config import RelgradeConfig
from training.recipes import PEER, TripletRecipe

STUDENT = "student"
CLICK = "click_trained"
HARDNEG = "hardneg_human"  # the peer recipe: sentence-transformers hard negatives on the human judgments
TRIPLETS = "triplets"  # one stage on (query, positive, negative) triplets: the peer recipe and the ladder's rungs




@dataclass(frozen=True)
class TrainRun:
    """One model to train."""

    name: str  # student, click_trained, no_curriculum, grades_only, scaling_0.1, ...
    target_column: str  # trainset column used as the training target
    output_dir: Path  # sentence-transformers folder written by the run
    use_curriculum: bool = True  # False: every stage draws from all five levels
    graded_fraction: float = 1.0  # share of teacher-graded pairs kept (data scaling)
    budget_multiplier: float = 1.0  # every stage's max_examples times this (budget experiment)
    recipe: str = "curriculum"  # curriculum (the staged plan) | hardneg_human | triplets (training/hardneg.py)
    triplets: TripletRecipe | None = None  # the triplet recipe (recipe hardneg_human or triplets)
    description: str = ""

    def with_(self, **kw) -> "TrainRun":
        return replace(self, **kw)


def base_model_path(cfg: RelgradeConfig) -> str:
    if cfg.training.base_model:
        return str(cfg.resolve(cfg.training.base_model))
    from relgrade.mining.channels import default_model_path

    return default_model_path()


# ---------------------------------------------------------------- runs
def student_run(cfg: RelgradeConfig) -> TrainRun:
    return TrainRun(STUDENT, cfg.training.target_column, cfg.paths.model(STUDENT),
                    description="relgrade blended target, three-stage curriculum")


def click_run(cfg: RelgradeConfig) -> TrainRun:
    """Same queries, losses and step budget; raw-engagement target; no difficulty
    ordering (the levels are refined with the teacher's grades, which a click-only
    system would not have)."""
    return TrainRun(CLICK, cfg.training.click_target_column, cfg.paths.model(CLICK), use_curriculum=False,
                    description="engagement-only target (smoothed CTR), same losses and budget, no curriculum")


def hardneg_run(cfg: RelgradeConfig) -> TrainRun:
    """The peer recipe at the student's budget (training/hardneg.py)."""
    return TrainRun(HARDNEG, "grade", cfg.paths.model(HARDNEG), use_curriculum=False, recipe=HARDNEG, triplets=PEER,
                    description="sentence-transformers recipe: human grade >= 2 positives, one mine_hard_negatives "
                                "negative each, MNRL, same base, sequence length and budget")


def pipeline_runs(cfg: RelgradeConfig) -> list[TrainRun]:
    runs = [student_run(cfg)]
    if cfg.training.train_click_baseline:
        runs.append(click_run(cfg))
    if cfg.training.hardneg_baseline.enabled:
        runs.append(hardneg_run(cfg))
    return runs


def experiment_runs(cfg: RelgradeConfig) -> list[TrainRun]:
    """Ablations and data scaling (``relgrade experiments``); the student and the
    click-trained baseline come from the train stage."""
    runs = [
        TrainRun("no_curriculum", cfg.training.target_column, cfg.paths.model("no_curriculum"), use_curriculum=False,
                 description="relgrade target, every stage on all five levels"),
        TrainRun("grades_only", "grade_target", cfg.paths.model("grades_only"),
                 description="expected_grade / 3 only (no prior, no engagement), curriculum"),
    ]
    for f in cfg.training.scaling_fractions:
        if f < 1.0:
            runs.append(TrainRun(f"scaling_{f:g}", cfg.training.target_column, cfg.paths.model(f"scaling_{f:g}"),
                                 graded_fraction=f, description=f"student on {f:.0%} of the teacher-graded pairs"))
    # the step budget: the student, the click-trained baseline and the peer recipe with
    # every stage's examples (the peer: its positives) multiplied (does a larger budget
    # widen the gap?)
    bases = [student_run(cfg), click_run(cfg)] + ([hardneg_run(cfg)] if cfg.training.hardneg_baseline.enabled else [])
    for m in cfg.training.budget_multipliers:
        if m != 1.0:
            for base in bases:
                name = f"{base.name}_budget_{m:g}x"
                runs.append(base.with_(name=name, output_dir=cfg.paths.model(name), budget_multiplier=m,
                                       description=f"{base.description}; {m:g}x the examples of every stage"))
    return runs
