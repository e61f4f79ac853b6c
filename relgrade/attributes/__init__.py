"""Query understanding: attribute extraction from search queries (docs/attributes.md).

``schema`` (types, BIO tags and spans) -> ``lexicon`` (catalog-mined dictionaries, the
weak labeller and the dictionary baseline) -> ``tagger`` (MiniLM token classifier with a
CRF layer, the decorative-relation correction) -> ``evaluate`` (span P/R/F1 on the hand
gold set) -> ``agreement`` (query-item attribute agreement features for the teachers) ->
``stage`` (the ``attributes`` stage that the Prefect flow runs)."""
