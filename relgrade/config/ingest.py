"""The dataset a run reads (relgrade/adapters/, docs/own_data.md)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from relgrade.config.base import _Strict


class DatasetConfig(_Strict):
    """Which data to read (relgrade/adapters/): a public dataset's files, or your own in
    the contract's columns (adapter ``contract``, docs/own_data.md)."""

    adapter: Literal["homedepot", "esci", "wands", "contract"] = "homedepot"
    # Adapter inputs; relative paths resolve against the repository root (or, in your own
    # config file, against that file's folder).
    # (adapter homedepot, the default: the bundled file unless given; no other adapter
    # inherits a Home Depot path, see _homedepot_defaults)
    path: str | None = None
    products_path: str | None = None  # ESCI products jsonl / WANDS product.csv
    labels_path: str | None = None  # WANDS label.csv
    # adapter contract: catalog and judgments (queries optional), CSV or Parquet
    catalog_path: str | None = None
    judgments_path: str | None = None
    queries_path: str | None = None
    # adapter contract: judgments' `label` -> grade 0..3 (one of the two, unless they carry `grade`)
    label_map: dict[str, Annotated[int, Field(ge=0, le=3)]] | None = None  # categorical labels
    label_cuts: list[float] | None = None  # numeric labels: grade = number of cuts <= label
    # adapter contract: the numeric labels' scale [low, high]; a label outside it is refused
    label_range: list[float] | None = Field(None, min_length=2, max_length=2)
    # pairs rated blind (data/homedepot/PROVENANCE.md): the grading report measures the
    # published union grades on them; None (or no overlap) reports them not available.
    # Adapter homedepot: the bundled file unless given; other adapters: none unless given
    blind_ratings_path: str | None = None
    encoding: str = "latin-1"
    # Keep only this many queries (deterministic: lowest split-hash order). None = all.
    max_queries: int | None = Field(None, ge=1)
    # The label budget (relgrade/label_budget.py): keep the judgments of this share of the
    # train queries and withhold the rest from the teachers, the calibration, the target's
    # human anchor and the peer recipe; the queries stay (mined, graded, trained on)
    train_label_fraction: float = Field(1.0, gt=0, le=1)
    # Judgments are stamped at this instant (UTC): raters labelled before the log starts.
    judged_at: datetime = datetime(2026, 6, 1, tzinfo=timezone.utc)

    @model_validator(mode="before")
    @classmethod
    def _homedepot_defaults(cls, data: Any) -> Any:
        """The bundled Home Depot files are the defaults of adapter homedepot only."""
        if isinstance(data, dict) and data.get("adapter", "homedepot") == "homedepot":
            data = {"path": "data/homedepot/train.csv.zip",
                    "blind_ratings_path": "data/homedepot/blind_ratings.csv", **data}
        return data

    @field_validator("label_range")
    @classmethod
    def _range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"label_range must be [low, high] with low < high, got {v}")
        return v
