"""Feast definitions for relgrade: two entities, three (query, item) feature views, one
training feature service.

Declarative like Feast's template. ``build(paths)`` returns the objects for any data
root (relgrade applies them programmatically per profile); the module-level names are
the same objects for the root selected by $RELGRADE_PROFILE / $RELGRADE_DATA_ROOT
(default profile), so ``feast -c feature_repo apply`` and ``feature-views list`` work.

Each view's offline source is one Parquet file under ``<data_root>/features/`` with an
``event_timestamp`` column (UTC microseconds): the instant the row's values became
known. Point-in-time joins use it: a row is joined to an entity row only when its
event_timestamp <= the entity row's event_timestamp (and within the TTL).
"""
from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relgrade.config import Paths, load_config  # noqa: E402

# Settled schemas: (name, feast type). Later stages fill them; nullable where noted.
RETRIEVAL_PRIOR_SCHEMA = [
    ("retrieval_prior", Float64),  # [0, 1], rank + agreement based
    ("rank_lexical", Int64),  # 1-based rank, null when the channel missed the item
    ("rank_dense", Int64),
    ("rank_behavioral", Int64),
    ("rank_external", Int64),
    ("agreement", Int64),  # number of channels that returned the item
    ("channel_pattern", String),  # e.g. "L-D-" (lexical, dense present)
    ("category", String),  # easy_positive | hard_positive | hard_negative | other
    ("difficulty_level", Int64),  # 1 (easiest) .. 5 (hardest)
]
RELEVANCE_GRADE_SCHEMA = [
    ("grade", Int64),  # 0..3
    ("expected_grade", Float64),  # sum_g g * p_g
    ("confidence", Float64),  # calibrated max probability
    ("p_grade_0", Float64),
    ("p_grade_1", Float64),
    ("p_grade_2", Float64),
    ("p_grade_3", Float64),
    ("deciding_stage", Int64),
    ("teacher_version", String),
]
GATED_ENGAGEMENT_SCHEMA = [
    ("impressions_7d", Int64),
    ("clicks_7d", Int64),
    ("add_to_cart_7d", Int64),
    ("orders_7d", Int64),
    ("impressions_28d", Int64),
    ("clicks_28d", Int64),
    ("add_to_cart_28d", Int64),
    ("orders_28d", Int64),
    ("ctr_raw_28d", Float64),  # clicks / impressions, null without impressions
    ("ctr_debiased_28d", Float64),  # inverse-propensity weighted, position curve from the log
    ("engagement_smoothed", Float64),  # shrunk toward the segment prior
    ("engagement_confidence", Float64),  # [0, 1], grows with debiased exposure
    ("gated_preference", Float64),  # null unless the pair is graded relevant
]

VIEW_SCHEMAS = {
    "retrieval_prior_fv": RETRIEVAL_PRIOR_SCHEMA,
    "relevance_grade_fv": RELEVANCE_GRADE_SCHEMA,
    "gated_engagement_fv": GATED_ENGAGEMENT_SCHEMA,
}
VIEW_DESCRIPTIONS = {
    "retrieval_prior_fv": "Multi-channel retrieval mining: per-channel ranks, agreement, prior, difficulty.",
    "relevance_grade_fv": "Calibrated teacher-cascade relevance grades with provenance.",
    "gated_engagement_fv": "Windowed engagement aggregates, debiased CTR, relevance-gated preference.",
}
JOIN_KEYS = ("query_id", "item_id")
TIMESTAMP_FIELD = "event_timestamp"
TRAINING_SERVICE = "training_fs"


def build(paths: Paths, ttl_days: int = 365) -> dict[str, object]:
    """All Feast objects for one data root, by name."""
    query = Entity(
        name="query",
        join_keys=["query_id"],
        value_type=ValueType.STRING,
        description="A search query (relgrade contract: queries.query_id).",
    )
    item = Entity(
        name="item",
        join_keys=["item_id"],
        value_type=ValueType.STRING,
        description="A catalog item (relgrade contract: catalog.item_id).",
    )
    objs: dict[str, object] = {"query": query, "item": item}
    views = []
    for view, schema in VIEW_SCHEMAS.items():
        source = FileSource(
            name=f"{view.removesuffix('_fv')}_source",
            path=str(paths.feature_source(view)),
            timestamp_field=TIMESTAMP_FIELD,
        )
        fv = FeatureView(
            name=view,
            entities=[query, item],
            ttl=timedelta(days=ttl_days),
            schema=[Field(name="query_id", dtype=String), Field(name="item_id", dtype=String)]
            + [Field(name=n, dtype=t) for n, t in schema],
            source=source,
            online=True,
            description=VIEW_DESCRIPTIONS[view],
            tags={"owner": "relgrade"},
        )
        objs[source.name] = source
        objs[view] = fv
        views.append(fv)
    objs[TRAINING_SERVICE] = FeatureService(
        name=TRAINING_SERVICE,
        features=views,
        description="Everything a training row needs: prior, grade, gated engagement.",
    )
    return objs


_cfg = load_config()
_objs = build(_cfg.paths, _cfg.feast.ttl_days)
query = _objs["query"]
item = _objs["item"]
retrieval_prior_source = _objs["retrieval_prior_source"]
relevance_grade_source = _objs["relevance_grade_source"]
gated_engagement_source = _objs["gated_engagement_source"]
retrieval_prior_fv = _objs["retrieval_prior_fv"]
relevance_grade_fv = _objs["relevance_grade_fv"]
gated_engagement_fv = _objs["gated_engagement_fv"]
training_fs = _objs[TRAINING_SERVICE]
