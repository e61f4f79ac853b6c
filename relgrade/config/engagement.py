"""The engagement features (relgrade/engagement.py)."""
from __future__ import annotations

from typing import Literal

from relgrade.config.base import _Strict


class EngagementFeatureConfig(_Strict):
    """Where engagement comes from: the simulator (``simulate``) or your own search log
    (``log``: a file in the events contract, docs/own_data.md)."""

    source: Literal["simulate", "log"] = "simulate"
    log_path: str | None = None  # CSV or Parquet: event_ts, search_id, query or query_id, item_id, position, ...
