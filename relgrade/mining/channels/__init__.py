"""Retrieval channels behind one small interface.

A channel is fitted on the catalog once and then returns, for each query, its top-K
items with a 1-based rank and a channel-specific score::

    ch = LexicalChannel().fit(catalog)
    hits = ch.search(queries, k=100)   # query_id, item_id, rank, score

Four kinds, a module each:

* :class:`LexicalChannel` - BM25 (bm25s) over product-tokenized titles
  (:mod:`relgrade.mining.tokenize`).
* :class:`DenseChannel` - the base MiniLM bi-encoder, cosine similarity through a FAISS
  index: exact (``IndexFlatIP``) up to ``exact_max_items`` items, HNSW or IVF above, with
  :meth:`DenseChannel.ann_recall` measuring recall@K of the ANN index against exact
  search. Embeddings are cached on disk keyed by a content hash of the texts, the model
  path and the encoding settings, so a rerun skips encoding.
* :class:`BehavioralChannel` - a query-item engagement graph built only from events
  strictly before ``as_of`` (filtered at construction), extended to queries without
  engagement of their own through lexically similar logged queries.
* :class:`ExternalChannel` - a user's production retriever output, a Parquet file of
  ``query_id`` (or ``query`` text), ``item_id``, ``rank``, ``score``.
"""

from relgrade.mining.channels.base import (RESULT_COLUMNS, Channel, ProgressFn, catalog_frame, empty_results, item_texts,
                                           query_frame)
from relgrade.mining.channels.behavioral import BehavioralChannel
from relgrade.mining.channels.dense import DenseChannel, default_model_path, load_model, texts_digest
from relgrade.mining.channels.external import ExternalChannel
from relgrade.mining.channels.lexical import LexicalChannel

__all__ = ["RESULT_COLUMNS", "BehavioralChannel", "Channel", "DenseChannel", "ExternalChannel", "LexicalChannel",
           "ProgressFn", "catalog_frame", "default_model_path", "empty_results", "item_texts", "load_model",
           "query_frame", "texts_digest"]
