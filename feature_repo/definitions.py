"""relgrade's Feast repository: two entities, three (query, item) feature views, one
query feature view and the versioned feature services, each a top-level object (the layout of Feast's own template).

These objects describe the ``default`` profile's store, whose data root is ``var/default``
beside this folder: ``feast -c feature_repo apply`` (``plan``, ``serve``,
``materialize-incremental``) works on them from the repository root, before or after a
run. relgrade applies the same definitions to every other data root with that root's
paths, online flags and TTLs (``relgrade.featurestore.objects_for``).

Each view's offline source is one Parquet file under ``<data_root>/features/`` with an
``event_timestamp`` (UTC microseconds): the instant the row's values became known. A
point-in-time join uses a row only when its event_timestamp <= the entity row's and the
row is within the view's TTL.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

DATA_ROOT = Path(__file__).resolve().parent.parent / "var" / "default"  # the default profile's data root
JOIN_KEYS = ("query_id", "item_id")
TIMESTAMP_FIELD = "event_timestamp"

# ---------------------------------------------------------------------- schemas: (name, Feast type)
RETRIEVAL_PRIOR_SCHEMA = [
    ("retrieval_prior", Float64),  # [0, 1], rank + agreement based
    ("rank_lexical", Int64),  # 1-based rank, null when the channel missed the item
    ("rank_dense", Int64),
    ("rank_behavioral", Int64),
    ("rank_external", Int64),
    ("agreement", Int64),  # number of channels that returned the item
    ("channel_pattern", String),  # e.g. "LD--" (lexical, dense present)
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
QUERY_ATTRIBUTES_SCHEMA = [  # the query tagger's output (relgrade attributes); null: not named
    ("product_type", String),  # the head product type ("door" in "white shaker cabinet door")
    ("brand", String),
    ("size", String),  # size / dimension ("1/2 in.", "30 in")
    ("color", String),  # color / finish
    ("material", String),
    ("count", String),  # count / pack
    ("power", String),  # power / voltage ("20v")
    ("model_number", String),
    ("n_attributes", Int64),  # attribute spans besides the product type
    ("attributes_json", String),  # every span, with the product type each one modifies
    ("tagger_version", String),
]
VIEW_SCHEMAS = {
    "retrieval_prior_fv": RETRIEVAL_PRIOR_SCHEMA,
    "relevance_grade_fv": RELEVANCE_GRADE_SCHEMA,
    "gated_engagement_fv": GATED_ENGAGEMENT_SCHEMA,
    "query_attributes_fv": QUERY_ATTRIBUTES_SCHEMA,
}
# each view's join keys (a query feature view joins every (query, item) row of its query)
VIEW_KEYS = {name: JOIN_KEYS for name in VIEW_SCHEMAS} | {"query_attributes_fv": ("query_id",)}
TRAINING_SERVICE = "training_v2"  # v2: + query_attributes_fv
TRAINING_SERVICES = {"training_v1": ("retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv"),
                     "training_v2": ("retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv",
                                     "query_attributes_fv")}
SERVING_SERVICE = "serving_v1"


def _fields(schema, keys=JOIN_KEYS) -> list[Field]:
    return [Field(name=k, dtype=String) for k in keys] + [Field(name=n, dtype=t) for n, t in schema]


# ---------------------------------------------------------------------- entities
query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING,
               description="A search query (relgrade contract: queries.query_id).")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="A catalog item (relgrade contract: catalog.item_id).")

# ---------------------------------------------------------------------- sources
retrieval_prior_source = FileSource(name="retrieval_prior_source", timestamp_field=TIMESTAMP_FIELD,
                                    path=str(DATA_ROOT / "features" / "retrieval_prior_fv.parquet"))
relevance_grade_source = FileSource(name="relevance_grade_source", timestamp_field=TIMESTAMP_FIELD,
                                    path=str(DATA_ROOT / "features" / "relevance_grade_fv.parquet"))
gated_engagement_source = FileSource(name="gated_engagement_source", timestamp_field=TIMESTAMP_FIELD,
                                     path=str(DATA_ROOT / "features" / "gated_engagement_fv.parquet"))
query_attributes_source = FileSource(name="query_attributes_source", timestamp_field=TIMESTAMP_FIELD,
                                     path=str(DATA_ROOT / "features" / "query_attributes_fv.parquet"))

# ---------------------------------------------------------------------- feature views
retrieval_prior_fv = FeatureView(
    name="retrieval_prior_fv", entities=[query, item], ttl=timedelta(days=365),
    schema=_fields(RETRIEVAL_PRIOR_SCHEMA), source=retrieval_prior_source,
    online=False,  # ~2M rows a snapshot: training reads the offline store
    description="Multi-channel retrieval mining: per-channel ranks, agreement, prior, difficulty.",
    tags={"owner": "relgrade", "stage": "mine"})
relevance_grade_fv = FeatureView(
    name="relevance_grade_fv", entities=[query, item], ttl=timedelta(days=365),
    schema=_fields(RELEVANCE_GRADE_SCHEMA), source=relevance_grade_source,
    online=False,
    description="Calibrated teacher-cascade relevance grades with provenance.",
    tags={"owner": "relgrade", "stage": "grade"})
gated_engagement_fv = FeatureView(
    name="gated_engagement_fv", entities=[query, item],
    # each row is a daily snapshot of trailing windows ("as of" the midnight it is stamped
    # at); rows exist only for days with impressions, so a row older than a day is stale:
    # beyond one day a lookup returns nulls (unknown), never last month's 7-day count
    ttl=timedelta(days=1),
    schema=_fields(GATED_ENGAGEMENT_SCHEMA), source=gated_engagement_source,
    online=True,
    description="Windowed engagement aggregates, debiased CTR, relevance-gated preference (daily snapshots).",
    tags={"owner": "relgrade", "stage": "simulate, assemble"})
query_attributes_fv = FeatureView(
    name="query_attributes_fv", entities=[query], ttl=timedelta(days=365),
    schema=_fields(QUERY_ATTRIBUTES_SCHEMA, ("query_id",)), source=query_attributes_source,
    online=False,
    description="Query understanding: product type and attributes tagged by the MiniLM + CRF query tagger.",
    tags={"owner": "relgrade", "stage": "attributes"})

# ---------------------------------------------------------------------- feature services
training_v1 = FeatureService(
    name="training_v1", features=[retrieval_prior_fv, relevance_grade_fv, gated_engagement_fv],
    description="Prior, grade, gated engagement (offline, point in time).")
training_v2 = FeatureService(
    name="training_v2", features=[retrieval_prior_fv, relevance_grade_fv, gated_engagement_fv, query_attributes_fv],
    description="Everything a training row needs: prior, grade, gated engagement and the query's attributes "
                "(offline, point in time).")
serving_v1 = FeatureService(
    name=SERVING_SERVICE, features=[gated_engagement_fv],
    description="The views written online (feast serve / get_online_features).")
