"""The ground of the configuration: where the repository is, the strict base model, paths."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_FILE = REPO_ROOT / "configs" / "relgrade.yaml"
FEATURE_REPO_DIR = REPO_ROOT / "feature_repo"


class _Strict(BaseModel):
    """Every settings block: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(p: str | os.PathLike) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()

