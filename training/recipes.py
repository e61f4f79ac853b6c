"""What a one-stage triplet run trains on: the peer recipe and the ladder's rungs
(training/hardneg.py builds the examples, training/ladder.py names the rungs)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TripletRecipe:
    """Where a one-stage triplet run takes its examples from and what it trains with
    (the ladder in training/ladder.py changes one field per rung)."""

    positives: str = "human"  # human: judged train pairs with grade >= min_grade | target: relgrade's target positives
    negatives: str = "mined"  # mined: mine_hard_negatives with the base model | levels: relgrade's levels 4-5 of the query
    loss: str = "mnrl"  # mnrl (in-batch + the hard negative) | margin_mse (label: the target margin)
    fill: bool = False  # False: draw `budget` positives (some find no negative); True: draw until `budget` triplets


PEER = TripletRecipe()  # the peer recipe as a new user runs it
