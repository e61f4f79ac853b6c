"""The assemble stage end to end, without orchestration: assemble -> validation gate ->
training set + lists + manifest (written together, only after the gate passed) -> report.
The Prefect flow (flows/assemble.py) wraps :func:`run` in a cached task."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.util import write_json_atomic

log = logging.getLogger("relgrade.assemble")


def gate_context(cfg: RelgradeConfig, queries: pd.DataFrame):
    from relgrade.io import read_parquet
    from validation.suites import TrainingSetContext

    a = cfg.assemble
    catalog = read_parquet(cfg.paths.table("catalog"), columns=["item_id"])
    return TrainingSetContext(
        item_ids=pd.Index(catalog["item_id"]), query_ids=pd.Index(queries["query_id"]),
        excluded_query_ids=pd.Index(queries.loc[~queries["split"].isin(a.splits), "query_id"]),
        max_future_skew_seconds=cfg.validation.max_future_skew_seconds, min_rows=cfg.validation.min_rows,
        min_list_size=a.min_list_size, max_list_size=a.max_list_size, max_level_share=a.max_level_share,
        min_levels_present=a.min_levels_present, gate_min_grade=a.gate_min_grade,
    )


def run(cfg: RelgradeConfig, publish_gated: Callable[[pd.DataFrame], dict] | None = None) -> dict[str, Any]:
    """Build, validate and write the training set; returns a summary (rows, cut, hash,
    timings, Spearman with the human grade on the report split, paths)."""
    from relgrade.assemble.build import assemble, build_manifest, output_paths, trainset_frame
    from relgrade.assemble.report import write_report
    from relgrade.assemble.targets import list_form
    from relgrade.io import read_parquet, write_tables_atomic
    from validation.gate import validate

    a = cfg.assemble
    t_all = time.perf_counter()
    res = assemble(cfg, publish_gated=publish_gated)
    train = res["train"]
    t0 = time.perf_counter()
    gate = validate(train, "training_set", cfg, gate_context(cfg, res["queries"]))  # raises: nothing written
    res["timings"]["validation_s"] = round(time.perf_counter() - t0, 2)
    log.info("training set validated in %.1fs (%.0f rows/s)", res["timings"]["validation_s"],
             len(train) / max(res["timings"]["validation_s"], 1e-9))
    t1 = time.perf_counter()
    trainset = trainset_frame(train)
    lists = list_form(trainset)
    out = output_paths(cfg)
    res["timings"]["write_s"] = 0.0
    manifest = build_manifest(cfg, res, trainset, lists)
    manifest["validation"] = gate.summary().splitlines()[0]
    write_tables_atomic({out["trainset"]: trainset, out["lists"]: lists})
    manifest["timings"]["write_s"] = round(time.perf_counter() - t1, 2)
    t2 = time.perf_counter()
    judgments = read_parquet(cfg.paths.table("judgments"), columns=["query_id", "item_id", "grade"])
    manifest["timings"]["stage_s"] = round(time.perf_counter() - t_all, 2)  # without the report
    write_json_atomic(out["manifest"], manifest)
    report = write_report(out["report_html"].parent, cfg.paths.data_docs, trainset, res["report_rows"], judgments,
                          manifest, a.report_split, a.report_examples)
    manifest["timings"]["report_s"] = round(time.perf_counter() - t2, 2)
    manifest["timings"]["total_s"] = round(time.perf_counter() - t_all, 2)
    write_json_atomic(out["manifest"], manifest)
    ev = report["rank_correlation_with_human_grade"]["signals"]
    summary = {
        "stage": "assemble", "rows": manifest["rows"], "cut_ts": manifest["cut_ts"],
        "content_hash": manifest["content_hash"], "timings": manifest["timings"],
        "spearman_with_human_grade": {k: v["spearman"] for k, v in ev.items()},
        "gate_pass_share": (manifest.get("gated_engagement") or {}).get("gate_pass_share"),
        "paths": {k: str(v) for k, v in out.items()},
    }
    log.info("training set: %d rows, %d queries in %.1fs; Spearman with the human grade on %s: %s",
             manifest["rows"]["trainset"], manifest["rows"]["queries"], manifest["timings"]["total_s"], a.report_split,
             {k: (None if v is None else round(v, 3)) for k, v in summary["spearman_with_human_grade"].items()})
    return summary
