"""Prefect tasks several flows share: publishing a feature view and writing a stage's
files, each with rollback hooks, so that a flow wraps them in ``with transaction():`` and
they land together or not at all (Prefect transactions: a task's ``on_rollback`` runs
when a later step of the same transaction raises)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from relgrade.config import RelgradeConfig


def _txn_set(name: str, value) -> None:
    from prefect.transactions import get_transaction

    txn = get_transaction()
    if txn is not None:
        txn.set(name, value)


def _publish_view(cfg: RelgradeConfig, view: str, batch, evidence=None, context: dict | None = None) -> dict:
    """Validate and publish ``batch`` into ``view``; ``evidence`` and ``context`` are
    extra fields of the suite's GateContext (validation.gate.gate_context)."""
    from relgrade import featurestore as fs
    from validation.gate import gate_for

    extra = dict(context or {})
    if evidence is not None:
        extra["evidence"] = evidence
    gate = gate_for(cfg, view, **extra)
    res = fs.publish(cfg, view, batch, gate, keep_backup=True)
    _txn_set("published", res)
    _txn_set("cfg", cfg)
    return res


def _undo_publish(txn) -> None:
    from relgrade import featurestore as fs

    res = txn.get("published", None)
    if res:
        logging.getLogger("flows").warning("rolling back %s: restoring its previous offline table", res["view"])
        fs.rollback_publish(res, txn.get("cfg", None))


def _commit_publish(txn) -> None:
    from relgrade import featurestore as fs

    res = txn.get("published", None)
    if res:
        fs.commit_publish(res)


def _write_outputs(cfg: RelgradeConfig, tables: dict) -> list[str]:
    """Parquet outputs written together (relgrade.io.write_tables_atomic), the previous
    files kept beside them until the transaction commits."""
    import shutil

    from relgrade.io import write_tables_atomic

    backups = {}
    for p in tables:
        p = Path(p)
        if p.exists():
            b = p.with_name(f".{p.name}.bak")
            shutil.copy2(p, b)
            backups[str(p)] = str(b)
        else:
            backups[str(p)] = None
    _txn_set("outputs", backups)
    write_tables_atomic({Path(p): t for p, t in tables.items()})
    return [str(p) for p in tables]


def _undo_outputs(txn) -> None:
    for p, b in (txn.get("outputs", None) or {}).items():
        if b is None:
            Path(p).unlink(missing_ok=True)
        else:
            os.replace(b, p)


def _commit_outputs(txn) -> None:
    for b in (txn.get("outputs", None) or {}).values():
        if b:
            Path(b).unlink(missing_ok=True)


publish_view = task(_publish_view, name="publish-view", task_run_name="publish-{view}", cache_policy=NO_CACHE)
publish_view.on_rollback(_undo_publish)
publish_view.on_commit(_commit_publish)
write_outputs = task(_write_outputs, name="write-stage-outputs", cache_policy=NO_CACHE)
write_outputs.on_rollback(_undo_outputs)
write_outputs.on_commit(_commit_outputs)
