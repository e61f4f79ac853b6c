"""The validation gate: run a suite on a batch with Great Expectations 1.x, write its
validation page, and raise :class:`ValidationFailed` (naming each failed expectation and
its offending-row count) before anything is written.

One file-backed GX context per data root (``<data_root>/gx``). Every run gets an offline
page under ``<data_root>/reports/validation/`` (index.html lists them; validation/docs.py);
GX's own Data Docs are built into ``<data_root>/reports/data_docs`` when
``validation.gx_data_docs`` is on, without raw values from the data (GX does not escape them),
and with the scripts and styles they load vendored into the site (they work offline).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.util import utc_now
from validation.docs import localize_data_docs, write_run_page
from validation.suites import SUITES, GateContext, _as_float_for_gx

log = logging.getLogger(__name__)
_LOCK = threading.RLock()  # GX contexts are not thread-safe; Prefect tasks may run in threads
_CONTEXTS: dict[str, object] = {}
SITE = "relgrade_docs"
DATASOURCE = "relgrade_batches"


@dataclass
class Failure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    observed: object = None

    def __str__(self) -> str:
        where = f"({self.column})" if self.column else ""
        if self.unexpected_count is not None:
            what = f"{self.unexpected_count} offending row(s)"
        else:
            obs = self.observed.item() if hasattr(self.observed, "item") and not isinstance(self.observed, str) \
                and getattr(self.observed, "ndim", 0) == 0 else self.observed  # a numpy scalar as its value
            what = f"observed {obs!r}"
        return f"{self.expectation}{where}: {what}"


@dataclass
class GateReport:
    suite: str
    success: bool
    evaluated: int
    rows: int
    failures: list[Failure] = field(default_factory=list)
    data_docs: Path | None = None
    partitions: int = 1  # validated in this many partitions (validation.partition_rows)

    def summary(self) -> str:
        head = (
            f"validation {'passed' if self.success else 'FAILED'} for {self.suite!r}: "
            f"{self.evaluated - len(self.failures)}/{self.evaluated} expectations met on {self.rows} rows"
            + (f" ({self.partitions} partitions)" if self.partitions > 1 else "")
        )
        lines = [head] + [f"  - {f}" for f in self.failures]
        if self.data_docs:
            lines.append(f"  validation page: {self.data_docs}")
        return "\n".join(lines)


class ValidationFailed(RuntimeError):
    def __init__(self, report: GateReport):
        self.report = report
        super().__init__(report.summary() + "\nNothing was written or materialized.")


def _context(cfg: RelgradeConfig):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    root = cfg.paths
    key = str(root.gx)
    if key in _CONTEXTS:
        return _CONTEXTS[key]
    import great_expectations as gx

    root.gx.mkdir(parents=True, exist_ok=True)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(root.gx))
    # a progress bar per validation floods flow logs; the flows log their own progress
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    sites = ctx.list_data_docs_sites() if hasattr(ctx, "list_data_docs_sites") else ctx.get_config().data_docs_sites
    if SITE not in (sites or {}):
        ctx.add_data_docs_site(
            site_name=SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root.data_docs)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    _CONTEXTS[key] = ctx
    return ctx


def _batch_definition(ctx, suite_name: str):
    try:
        ds = ctx.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, Exception):  # GX raises its own not-found types
        ds = ctx.data_sources.add_pandas(DATASOURCE)
    try:
        asset = ds.get_asset(suite_name)
    except LookupError:
        asset = ds.add_dataframe_asset(suite_name)
    try:
        return asset.get_batch_definition("whole")
    except (KeyError, LookupError, ValueError):
        return asset.add_batch_definition_whole_dataframe("whole")


def _failures(result) -> list[Failure]:
    out = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = cfg.kwargs
        col = kw.get("column") or (",".join(kw["column_list"]) if kw.get("column_list") else None)
        if col is None and kw.get("column_A"):
            col = f"{kw['column_A']},{kw['column_B']}"
        res = r.result or {}
        out.append(Failure(cfg.type, col, res.get("unexpected_count"), res.get("observed_value")))
    return out


def validate(
    df: pd.DataFrame,
    suite: str,
    cfg: RelgradeConfig,
    ctx: GateContext | None = None,
    *,
    raise_on_failure: bool = True,
    data_docs: bool = True,
) -> GateReport:
    """Validate ``df`` against ``suite``; raise ValidationFailed when any expectation fails
    (in any partition: :func:`partitions`)."""
    if suite not in SUITES:
        raise KeyError(f"no expectation suite named {suite!r}; known: {sorted(SUITES)}")
    ctx = ctx or GateContext(max_future_skew_seconds=cfg.validation.max_future_skew_seconds, min_rows=cfg.validation.min_rows)
    checked, expectations = SUITES[suite](df, ctx)
    checked = _as_float_for_gx(checked)
    parts = partition_indices(checked, cfg.validation.partition_rows)
    stamp = utc_now().strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]
    if len(parts) == 1:
        runs = [_run(cfg, suite, expectations, checked, f"{suite} {stamp} UTC", len(df), data_docs)]
        failures = _failures(runs[0][0])
    else:  # row-level expectations per partition, batch-level ones on the whole batch
        rows = [e for e in expectations if _row_level(e)]
        whole = [e for e in expectations if not _row_level(e)]
        runs = []
        for i, idx in enumerate(parts):  # one partition at a time: each is released after its run
            runs.append(_run(cfg, f"{suite}.rows", rows, checked.iloc[idx],
                             f"{suite} {stamp} UTC partition {i + 1} of {len(parts)}", len(idx), data_docs))
        if whole:
            runs.append(_run(cfg, f"{suite}.batch", whole, checked, f"{suite} {stamp} UTC batch-level", len(df),
                             data_docs))
        log.info("validated %s in %d partitions of at most %d rows", suite, len(parts), cfg.validation.partition_rows)
        failures = _merge_partition_failures([v for v, _ in runs])
    report = GateReport(
        suite=suite,
        success=all(bool(v.success) for v, _ in runs),
        evaluated=len(expectations),
        rows=len(df),
        failures=failures,
        data_docs=next((page for v, page in runs if not v.success), runs[-1][1]),  # the first failing run's page
        partitions=len(parts),
    )
    log.info(report.summary())
    if not report.success and raise_on_failure:
        raise ValidationFailed(report)
    return report


def _merge_partition_failures(results: list) -> list[Failure]:
    """The failures of the partition runs and the batch-level run as one list: the same
    expectation (type and arguments, and its place among identical ones) failing in
    several partitions is one failure whose offending rows are summed."""
    import json

    merged: dict = {}
    for vres in results:
        seen: dict = {}
        for r, f in zip([r for r in vres.results if not r.success], _failures(vres)):
            sig = (r.expectation_config.type, json.dumps(r.expectation_config.kwargs, sort_keys=True, default=str))
            seen[sig] = seen.get(sig, 0) + 1
            key = (*sig, seen[sig])
            if key in merged and f.unexpected_count is not None:
                merged[key].unexpected_count = (merged[key].unexpected_count or 0) + f.unexpected_count
            else:
                merged.setdefault(key, f)
    return list(merged.values())


# expectations that hold on a batch when they hold on each of its parts (judged row by
# row, no "mostly" below 1); every other one, key uniqueness included (two equal keys may
# fall in two partitions: the events suite has two keys and a partition follows one),
# runs once on the whole batch
_PER_ROW = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null",
            "expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
            "expect_column_values_to_not_be_in_set", "expect_column_value_lengths_to_be_between",
            "expect_column_value_lengths_to_equal", "expect_column_values_to_match_regex",
            "expect_column_values_to_not_match_regex", "expect_column_values_to_be_json_parseable",
            "expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list",
            "expect_column_pair_values_a_to_be_greater_than_b", "expect_column_pair_values_to_be_equal",
            "expect_column_pair_values_to_be_in_set", "expect_select_column_values_to_be_unique_within_record",
            "expect_multicolumn_sum_to_equal"}


def _row_level(expectation) -> bool:
    """May ``expectation`` run per partition (see ``_PER_ROW``)?"""
    mostly = getattr(expectation, "mostly", None)
    return expectation.expectation_type in _PER_ROW and (mostly is None or mostly >= 1)


def partition_indices(df: pd.DataFrame, max_rows: int | None) -> list[np.ndarray]:
    """Row positions of ``df``: all of them, or ``ceil(len / max_rows)`` partitions by a
    stable hash of ``query_id`` (else ``item_id``), so a query's rows stay together."""
    if max_rows is None or len(df) <= max_rows:
        return [np.arange(len(df))]
    n = -(-len(df) // max_rows)
    key = next((c for c in ("query_id", "item_id") if c in df.columns), None)
    h = (pd.util.hash_pandas_object(df[key].astype(str), index=False).to_numpy() if key is not None
         else np.arange(len(df))) % n
    order = np.argsort(h, kind="stable")
    bounds = np.searchsorted(h[order], np.arange(1, n))
    return [p for p in np.split(order, bounds) if len(p)]


def partitions(df: pd.DataFrame, max_rows: int | None) -> list[pd.DataFrame]:
    """The partitions of :func:`partition_indices` as frames."""
    return [df.iloc[i] for i in partition_indices(df, max_rows)] if max_rows is not None and len(df) > max_rows \
        else [df]


def _run(cfg: RelgradeConfig, suite: str, expectations: list, checked: pd.DataFrame, run_name: str, rows: int,
         data_docs: bool):
    """One GX checkpoint run of ``expectations`` on ``checked``; (result, its page)."""
    import great_expectations as gx
    from great_expectations.checkpoint import Checkpoint, UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    with _LOCK:
        gctx = _context(cfg)
        bd = _batch_definition(gctx, suite)
        gsuite = gctx.suites.add_or_update(gx.ExpectationSuite(name=suite, expectations=[e.copy() for e in expectations]))
        vd = gctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{suite}_validation", data=bd, suite=gsuite)
        )
        gx_docs = data_docs and cfg.validation.gx_data_docs
        actions = [UpdateDataDocsAction(name="data_docs", site_names=[SITE])] if gx_docs else []
        fmt = {"result_format": "SUMMARY", "partial_unexpected_count": 0 if gx_docs else 10}
        cp = gctx.checkpoints.add_or_update(
            Checkpoint(name=f"{suite}_gate", validation_definitions=[vd], actions=actions, result_format=fmt)
        )
        started = time.time()
        run = cp.run(batch_parameters={"dataframe": checked}, run_id=RunIdentifier(run_name=run_name))
        if gx_docs:  # GX's pages load their scripts and styles from CDNs: point them at the vendored copies
            localize_data_docs(cfg.paths.data_docs, since=started)
    vres = list(run.run_results.values())[0]
    page = write_run_page(cfg.paths.validation_pages, suite, run_name, rows, vres.to_json_dict())
    return vres, page


def gate_context(cfg: RelgradeConfig, catalog: pd.DataFrame | None = None, queries: pd.DataFrame | None = None,
                 **extra) -> GateContext:
    """The context every suite checks against: catalog and query ids (referential
    integrity; those of the data root unless ``catalog``/``queries`` are given, e.g. an
    ingest batch's own tables) and the allowed clock skew; ``extra`` fields (e.g.
    ``evidence`` for relevance_grade_fv, ``cut`` for events) are set on it."""
    from relgrade.io import read_parquet

    if catalog is None:
        catalog = read_parquet(cfg.paths.table("catalog"), columns=["item_id"])
    if queries is None:
        queries = read_parquet(cfg.paths.table("queries"), columns=["query_id"])
    ctx = GateContext(item_ids=pd.Index(catalog["item_id"].dropna()), query_ids=pd.Index(queries["query_id"].dropna()),
                      max_future_skew_seconds=cfg.validation.max_future_skew_seconds)
    for k, v in extra.items():
        setattr(ctx, k, v)
    return ctx


def gate_for(cfg: RelgradeConfig, suite: str, **extra):
    """The validation callable :func:`relgrade.featurestore.publish` runs before it writes
    anything: ``suite`` (a feature view's name) against :func:`gate_context`."""
    ctx = gate_context(cfg, **extra)
    return lambda batch: validate(batch, suite, cfg, ctx)
