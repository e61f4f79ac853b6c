"""Attributes flow: contract catalog and queries -> catalog lexicon and weak labels ->
MiniLM + CRF tagger (``Paths.tagger``) -> every query's attributes
(``Paths.query_attributes``) and ``query_attributes_fv`` through the validation gate, as
one transaction -> span P/R/F1 on the hand gold set, report ``reports/attributes/``.

Logic: ``relgrade/attributes/stage.py``. The task is cached on its inputs (the
``attributes`` config section, the catalog, queries and gold files, the code version)
and skipped on rerun while its outputs exist.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.transactions import transaction

from flows.runtime import cached, get_config, io_task, stage_artifacts, stage_key, stage_lock
from flows.tasks import publish_view, write_outputs
from relgrade.attributes import stage as S
from relgrade.config import RelgradeConfig, resolve_path


def _inputs(cfg: RelgradeConfig) -> list[Path]:
    gold = [resolve_path(cfg.attributes.gold_path)] if cfg.attributes.gold_path else []
    return [cfg.paths.table("catalog"), cfg.paths.table("queries"), *gold]


def _key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    # simulation, mining: the feature rows are stamped at the mining snapshot
    return stage_key("attributes", cfg, ["attributes", "simulation", "mining"], _inputs(cfg))


def _outputs(cfg: RelgradeConfig) -> list[Path]:
    return [cfg.paths.query_attributes, cfg.paths.feature_source(S.QUERY_ATTRIBUTES_FV), cfg.paths.tagger / "tagger.json",
            cfg.paths.report("attributes") / "report.json"]


@task(name="attributes", cache_key_fn=_key, persist_result=True)
def attributes_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    """Train the tagger on the weak labels, tag every query, publish, evaluate on the gold set."""
    import pandas as pd

    def land(table: pd.DataFrame, batch: pd.DataFrame) -> dict:
        texts = pd.Series(table["text"].astype(str).to_numpy(), index=table["query_id"].astype(str))
        with transaction():
            pub = io_task(publish_view, cfg)(cfg, S.QUERY_ATTRIBUTES_FV, batch, context={"query_texts": texts})
            write_outputs(cfg, {cfg.paths.query_attributes: table})
        return pub

    return S.run(cfg, land)


@flow(name="attributes", log_prints=True)
def attributes_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    cfg = get_config(profile, overrides)
    with stage_lock(cfg, "attributes"):
        summary = cached(io_task(attributes_stage, cfg), _outputs(cfg))(cfg)
    ev = summary.get("evaluation") or {}
    table = [{"split": sp, "system": sys_, "micro_f1": s[sys_]["micro"]["f1"]}
             for sp, s in (ev.get("splits") or {}).items()
             for sys_ in ("tagger", "weak_labels", "dictionary_baseline")]
    d = cfg.paths.report("attributes")
    stage_artifacts("attributes", table, {"html": str(d / "report.html"), "json": str(d / "report.json")})
    return summary


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(attributes_flow(sys.argv[1] if len(sys.argv) > 1 else "default"), indent=1, default=str)[:4000])
