"""The names of relgrade's feature views and feature services: the one place code refers
to them from. Their Feast declarations (schemas, sources, TTLs) are in
``feature_repo/definitions.py``, which imports only Feast; a test checks the two agree."""

RETRIEVAL_PRIOR_FV = "retrieval_prior_fv"  # mine: per-channel ranks, agreement, prior, difficulty level
RELEVANCE_GRADE_FV = "relevance_grade_fv"  # grade: calibrated teacher-cascade grades
GATED_ENGAGEMENT_FV = "gated_engagement_fv"  # simulate/assemble: engagement, gated by grade
QUERY_ATTRIBUTES_FV = "query_attributes_fv"  # attributes: the query tagger's product type and attributes (query-keyed)
# query_attributes_fv's column per attribute type (relgrade/attributes/schema.py: the types)
QUERY_ATTRIBUTE_FIELDS = {"TYPE": "product_type", "BRAND": "brand", "SIZE": "size", "COLOR": "color",
                          "MATERIAL": "material", "COUNT": "count", "POWER": "power", "MODEL": "model_number"}
FEATURE_VIEWS = (RETRIEVAL_PRIOR_FV, RELEVANCE_GRADE_FV, GATED_ENGAGEMENT_FV, QUERY_ATTRIBUTES_FV)

TRAINING_SERVICE = "training_v2"  # every view, read point in time by assemble (training_v1: without the attributes)
SERVING_SERVICE = "serving_v1"  # the views written online
