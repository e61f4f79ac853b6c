"""Grading on Ray (``engine: ray``): the worker each actor of the pool runs, and the
call that hands it to the engine's chunk pool (:func:`relgrade.engine.run_chunk_pool`).

Each actor holds the cascade and the pair featurizer (through the object store, once per
actor) and grades whole chunks with the local path's own calls
(:meth:`TeacherCascade.grade` and :func:`grade_frame`), so the two engines write the same
chunk files."""
from __future__ import annotations

import copy
import os
from typing import Callable, Iterable

import pandas as pd

from relgrade import engine
from relgrade.config import RelgradeConfig
from relgrade.grading.cascade import grade_frame
from relgrade.grading.features import UNION_FEATURES
from relgrade.util import peak_rss_mb


class ChunkGrader:
    """A grading actor: :meth:`TeacherCascade.grade` + :func:`grade_frame` per chunk."""

    def __init__(self, cascade, fz, max_share, llm_share, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
            for t in cascade.teachers:
                if hasattr(t, "threads"):
                    t.threads = threads
        self.cascade, self.fz, self.max_share, self.llm_share = cascade, fz, max_share, llm_share

    def pid(self) -> int:
        return os.getpid()

    def run(self, c: int, part: pd.DataFrame) -> dict:
        import ray

        llm = self.cascade.llm
        if llm is not None:
            llm.take_stats()  # a retried chunk counts once: only what this call asked
        res = self.cascade.grade(part, self.fz, self.max_share, self.llm_share)
        return {"chunk": c, "frame": grade_frame(part, res, self.cascade.rule), "seconds": res.seconds,
                "llm_stats": None if llm is None else llm.take_stats(),
                "counts": res.counts, "llm_failed": res.llm_failed, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "peak_rss_mb": peak_rss_mb()}


def lean_featurizer(fz, union: pd.DataFrame):
    """The featurizer the workers need: union rows carry their own channel features
    (``PairFeaturizer.union_features`` reads them from the rows), so its lookup of every
    union pair stays on the driver; a worker's memory then does not grow with the union."""
    if getattr(fz, "union_key", None) is None or not all(c in union.columns for c in UNION_FEATURES):
        return fz
    lean = copy.copy(fz)
    lean.union_key, lean.union_vals = None, None
    return lean


def grade_chunks(cfg: RelgradeConfig, cascade, fz, union: pd.DataFrame, todo: Iterable[tuple[int, int, int]],
                 on_chunk: Callable[[dict], None], on_actors: Callable[[list[int]], None] | None = None) -> dict:
    """Grade the chunks ``todo`` (``(chunk, lo, hi)`` row ranges of ``union``) on
    ``ray.workers`` :class:`ChunkGrader` actors; ``on_chunk(result)`` is called on the
    driver as each chunk finishes, after the LLM judge's request counts of that chunk were
    added to the driver's judge. Returns :func:`relgrade.engine.run_chunk_pool`'s
    ``{"workers", "start_s"}``."""
    g = cfg.grading
    llm_share = g.llm_judge.max_share if g.llm_judge.enabled else None
    threads = cfg.ray.threads_per_worker or g.threads

    def done(r: dict) -> None:
        if r.get("llm_stats") and cascade.llm is not None:  # the judge's requests, tokens, latency
            cascade.llm.add_stats(r["llm_stats"])
        on_chunk(r)

    args = (cascade, lean_featurizer(fz, union), g.max_share, llm_share, threads)
    return engine.run_chunk_pool(cfg, ChunkGrader, args, union, todo, done, on_actors, what="grading")
