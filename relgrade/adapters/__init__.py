"""Dataset adapters: each turns one public dataset into the contract tables.

``ADAPTERS`` maps ``dataset.adapter`` to the adapter's ``load``; :func:`load_dataset`
reads the configured files, applies ``dataset.max_queries`` and conforms the tables.

Config fields per adapter (relative paths resolve against the repository root):

=========== ===================== ============================ =================
adapter     ``path``              ``products_path``            ``labels_path``
=========== ===================== ============================ =================
homedepot   train.csv(.zip)       --                           --
esci        examples parquet      products jsonl / parquet     --
wands       query.csv             product.csv                  label.csv
=========== ===================== ============================ =================

``contract`` (your own data, :mod:`relgrade.adapters.contract`) reads
``catalog_path``, ``judgments_path`` and, optionally, ``queries_path``, with the label
mapping of ``label_map`` / ``label_cuts``.

Note: ``dataset.encoding`` is passed to every adapter. The base config says ``latin-1``
(right for Home Depot); ESCI and WANDS are UTF-8, so their profiles must set
``encoding: utf-8`` (latin-1 decodes any bytes, so a wrong setting garbles text
silently instead of failing).
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from relgrade.adapters import contract, esci, homedepot, wands
from relgrade.config import DatasetConfig, resolve_path
from relgrade.contract import QUERIES, ContractError, Table, conform

ADAPTERS: dict[str, Callable[..., dict[str, pd.DataFrame]]] = {
    "homedepot": homedepot.load,
    "esci": esci.load,
    "wands": wands.load,
    "contract": contract.load,
}

# config fields each adapter needs, in the order its load() takes them
REQUIRED_PATHS: dict[str, tuple[str, ...]] = {
    "homedepot": ("path",),
    "esci": ("path", "products_path"),
    "wands": ("path", "products_path", "labels_path"),
    "contract": ("catalog_path", "judgments_path"),
}

# the queries table as adapters deliver it: segment is added by the ingest stage
QUERIES_BASE = Table(
    QUERIES.name,
    tuple(c for c in QUERIES.columns if c.name != "segment"),
    key=QUERIES.key,
    doc=QUERIES.doc,
)


def limit_queries(tables: dict[str, pd.DataFrame], max_queries: int) -> dict[str, pd.DataFrame]:
    """Keep the ``max_queries`` queries with the smallest ``query_id`` (string order),
    their judgments, and the catalog items judged for them.

    Deterministic and independent of file order. For Home Depot the query id is a hash
    of the normalized text, so this is a pseudo-random slice that keeps the split
    shares; for sources with their own ids (``esci:``/``wands:``) it is the first ids in
    string order.
    """
    if max_queries < 1:
        raise ContractError(f"dataset.max_queries must be >= 1 or null, got {max_queries}")
    queries = tables["queries"]
    keep = set(sorted(queries["query_id"].astype(str))[:max_queries])
    q = queries[queries["query_id"].astype(str).isin(keep)].reset_index(drop=True)
    j = tables["judgments"]
    j = j[j["query_id"].astype(str).isin(keep)].reset_index(drop=True)
    items = set(j["item_id"].astype(str))
    c = tables["catalog"]
    c = c[c["item_id"].astype(str).isin(items)].reset_index(drop=True)
    return {"catalog": c, "queries": q, "judgments": j}


def load_dataset(ds: DatasetConfig) -> dict[str, pd.DataFrame]:
    """Load the configured dataset as ``{"catalog", "queries", "judgments"}``.

    catalog and judgments are conformed to the contract; queries carry
    ``query_id, text, split`` (conformed to the contract's types) and ``segment`` only
    where the source gives one; the ingest stage derives the rest.
    """
    if ds.adapter not in ADAPTERS:
        raise ContractError(f"unknown dataset.adapter {ds.adapter!r}; known: {sorted(ADAPTERS)}")
    fields = REQUIRED_PATHS[ds.adapter]
    missing = [f for f in fields if not getattr(ds, f)]
    if missing:
        raise ContractError(
            f"dataset.adapter {ds.adapter!r} needs dataset.{', dataset.'.join(missing)} in the config "
            f"(it reads {', '.join(fields)})"
        )
    paths = [resolve_path(getattr(ds, f)) for f in fields]
    if ds.adapter == "contract":
        tables = contract.load(*paths, resolve_path(ds.queries_path) if ds.queries_path else None,
                               encoding=ds.encoding, judged_at=ds.judged_at, label_map=ds.label_map,
                               label_cuts=ds.label_cuts, label_range=ds.label_range)
    else:
        tables = ADAPTERS[ds.adapter](*paths, encoding=ds.encoding, judged_at=ds.judged_at)
    if ds.max_queries is not None:
        tables = limit_queries(tables, ds.max_queries)
    queries = conform(tables["queries"], QUERIES_BASE)
    if "segment" in tables["queries"].columns:  # given by the source (contract queries file)
        queries["segment"] = tables["queries"]["segment"].astype("string").values
    return {
        "catalog": conform(tables["catalog"], "catalog"),
        "queries": queries,
        "judgments": conform(tables["judgments"], "judgments"),
    }
