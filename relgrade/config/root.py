"""The typed root every profile loads into: one settings block per stage."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from relgrade.config.assemble import AssembleConfig
from relgrade.config.attributes import AttributesConfig
from relgrade.config.base import _Strict, resolve_path
from relgrade.config.engagement import EngagementFeatureConfig
from relgrade.config.grading import GradingConfig
from relgrade.config.ingest import DatasetConfig
from relgrade.config.mining import MiningConfig
from relgrade.config.paths import Paths
from relgrade.config.runtime import FeastConfig, PrefectConfig, RayConfig, ValidationConfig
from relgrade.config.simulate import SimulationConfig
from relgrade.config.training import EvaluationConfig, TrainingConfig


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
