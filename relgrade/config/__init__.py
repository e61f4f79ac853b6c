"""One typed configuration, loaded from YAML, with named profiles.

``configs/relgrade.yaml`` holds a ``base`` block and ``profiles``; a profile is a
partial override of ``base`` (deep-merged) into the typed root, :class:`RelgradeConfig`.
Each stage's settings live in a module of their own; every path the system writes lives
under ``data_root``, and :class:`Paths` derives them so no module invents its own location.

    base.py        the repository root, the strict base model, path resolution
    ingest.py      dataset                 (relgrade/adapters/)
    simulate.py    simulation              (relgrade/simulate.py)
    engagement.py  engagement              (relgrade/engagement.py)
    mining.py      mining                  (relgrade/mining/)
    attributes.py  attributes              (relgrade/attributes/)
    grading.py     grading                 (relgrade/grading/)
    assemble.py    assemble                (relgrade/assemble/)
    training.py    training, evaluation    (training/)
    runtime.py     feast, validation, prefect, ray
    root.py        RelgradeConfig: the root, one block per stage
    paths.py       Paths: every location under one data root
    loading.py     load_config: YAML, profiles, the strict errors

Import from here (``from relgrade.config import load_config, RelgradeConfig``): the
modules are where each setting is read and documented.
"""
from __future__ import annotations

from relgrade.config.assemble import AssembleConfig
from relgrade.config.attributes import AttributesConfig
from relgrade.config.base import DEFAULT_CONFIG_FILE, FEATURE_REPO_DIR, REPO_ROOT, _Strict, resolve_path
from relgrade.config.engagement import EngagementFeatureConfig
from relgrade.config.grading import (CrossEncoderStageConfig, GBMStageConfig, GradingConfig, GradingStageConfig,
                                     LLMJudgeConfig, NegativesConfig, ProbeConfig)
from relgrade.config.ingest import DatasetConfig
from relgrade.config.loading import PATH_KEYS, ConfigError, format_validation_error, load_config
from relgrade.config.mining import MiningConfig
from relgrade.config.paths import Paths
from relgrade.config.root import RelgradeConfig
from relgrade.config.runtime import FeastConfig, PrefectConfig, RayConfig, ValidationConfig
from relgrade.config.simulate import SegmentConfig, SimulationConfig
from relgrade.config.training import (CurriculumStageConfig, EvaluationConfig, HardNegativeBaselineConfig,
                                      TrainingConfig)

__all__ = [
    "AssembleConfig", "AttributesConfig", "ConfigError", "CrossEncoderStageConfig", "CurriculumStageConfig",
    "DEFAULT_CONFIG_FILE", "DatasetConfig", "EngagementFeatureConfig", "EvaluationConfig", "FEATURE_REPO_DIR",
    "FeastConfig", "GBMStageConfig", "GradingConfig", "GradingStageConfig", "HardNegativeBaselineConfig",
    "LLMJudgeConfig", "MiningConfig", "NegativesConfig", "PATH_KEYS", "Paths", "PrefectConfig", "ProbeConfig",
    "REPO_ROOT", "RayConfig", "RelgradeConfig", "SegmentConfig", "SimulationConfig", "TrainingConfig",
    "ValidationConfig", "format_validation_error", "load_config", "resolve_path", "_Strict",
]
