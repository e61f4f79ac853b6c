"""The execution engine of the heavy per-row work: ``engine: local`` (this process, the
default) or ``engine: ray`` (a local Ray started here, or a cluster at ``ray.address``).

Prefect stays the orchestrator either way: a stage's Prefect task calls these functions,
and they fan the work out over Ray and bring the results back to the task, which writes
them exactly as the local path does. Three kinds of work go to Ray:

* **encoding** (:func:`encode_chunks`): Ray Data ``map_batches`` over an actor pool of
  :class:`TextEncoder` (the bi-encoder loads once per actor). The rows are the local
  path's own encoding chunks, so every ``model.encode`` call sees the same texts in the
  same order and the embeddings are bit for bit those of the local path.
* **channel search** (:func:`search_sharded`): the fitted lexical or dense channel is put
  once into the object store and loaded once by each of ``ray.workers``
  :class:`ChannelSearcher` actors (a FAISS index travels serialized and is rebuilt once
  per actor); the queries are sharded over them in shards of
  ``ray.search_shard_queries``. Ranks are per query, so sharding changes nothing.
* **grading** (:func:`grade_chunks`): an actor pool of :class:`ChunkGrader`, each holding
  the cascade and the pair featurizer (loaded once per actor), grades the union in the
  same fixed chunks as the local path; the driver writes each chunk atomically as it
  arrives, so the checkpoint and resume semantics are the local path's (a killed run
  resumes without regrading finished chunks, with either engine). A worker whose process
  dies is restarted and its chunk retried (``ray.max_retries``). One pool runs the whole
  cascade on a chunk rather than one pool per teacher stage: the escalation caps
  (``grading.max_share``) are shares of a chunk, so a chunk's stages belong together.
  With an LLM judge as the last stage each worker calls the endpoint for its chunks
  (``llm_judge.concurrency`` requests each) and shares the SQLite answer cache; the
  workers' request counts come back with the chunks.

Ray Core actors rather than Ray Data for grading: the chunk is the unit of the
checkpoint, and Ray Data would re-block the rows.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from relgrade.config import ConfigError, RelgradeConfig

log = logging.getLogger("relgrade.engine")
_LOCK = threading.Lock()
_WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "GX_ANALYTICS_ENABLED": "false"}


def peak_rss_mb() -> float:
    """This process's peak resident memory (what a worker reports with its results)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def uses_ray(cfg: RelgradeConfig) -> bool:
    return cfg.engine == "ray"


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError('engine: ray needs Ray: pip install -e ".[distributed]"') from exc
    return ray


def ensure_ray(cfg: RelgradeConfig):
    """The Ray this process uses: an initialized one as it is (a test's cluster, a
    notebook's), else ``ray.init`` at ``ray.address`` or, with none, a local Ray with
    ``ray.num_cpus`` CPUs and no dashboard. Returns the ``ray`` module."""
    ray = _import_ray()
    with _LOCK:
        if ray.is_initialized():
            return ray
        r = cfg.ray
        env = {"env_vars": {k: os.environ.get(k, v) for k, v in _WORKER_ENV.items()}}
        pp = os.environ.get("PYTHONPATH")
        if pp:
            env["env_vars"]["PYTHONPATH"] = pp
        key = cfg.grading.llm_judge.api_key_env
        if not r.address and cfg.grading.llm_judge.enabled and os.environ.get(key):
            # the LLM judge's key, for the workers of a Ray started here; on a cluster the
            # workers' own environment must hold it (a runtime_env is visible to the cluster)
            env["env_vars"][key] = os.environ[key]
        if r.address:
            log.info("engine ray: joining the cluster at %s", r.address)
            ray.init(address=r.address, runtime_env=env, log_to_driver=True)
        else:
            kw = {"num_cpus": r.num_cpus, "include_dashboard": False, "runtime_env": env}
            if r.object_store_memory:
                kw["object_store_memory"] = r.object_store_memory
            log.info("engine ray: starting a local Ray (num_cpus=%s)", r.num_cpus)
            ray.init(**kw)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        return ray


def _worker_options(cfg: RelgradeConfig) -> dict:
    return {"num_cpus": cfg.ray.cpus_per_worker}


def n_workers(cfg: RelgradeConfig, jobs: int) -> int:
    """``ray.workers``, at most one per job and at most as many as the cluster's CPUs can
    place (a worker that cannot be placed would leave its share of the work waiting)."""
    ray = ensure_ray(cfg)
    fit = int(ray.cluster_resources().get("CPU", 1.0) // cfg.ray.cpus_per_worker)
    n = max(1, min(cfg.ray.workers, jobs, fit))
    if n < min(cfg.ray.workers, jobs):
        log.warning("engine ray: %d worker(s) of %.1f CPU fit the cluster, not the %d asked for", n,
                    cfg.ray.cpus_per_worker, cfg.ray.workers)
    return n


def _start(cfg: RelgradeConfig, actors: list, what: str) -> list[int]:
    """Wait until ``actors`` are up (their process ids), or fail clearly."""
    ray = ensure_ray(cfg)
    try:
        return ray.get([a.pid.remote() for a in actors], timeout=cfg.ray.worker_start_timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise RuntimeError(f"engine ray: {len(actors)} {what} worker(s) did not start within "
                           f"{cfg.ray.worker_start_timeout_s:.0f}s (ray.worker_start_timeout_s); the cluster has "
                           f"{ray.available_resources()} free") from exc


# --------------------------------------------------------------------------- encoding
class TextEncoder:
    """A Ray Data actor: the bi-encoder, loaded once, encodes one chunk per row with the
    local path's own call (:func:`relgrade.mining.channels.dense.encode_chunk`)."""

    def __init__(self, model_path: str, max_seq_length: int, batch_size: int, precision: str, threads: int):
        from relgrade.mining.channels.dense import load_model

        self.model = load_model(model_path, threads)
        self.model.max_seq_length = max_seq_length
        self.batch_size, self.precision = batch_size, precision

    def __call__(self, batch: dict) -> dict:
        from relgrade.mining.channels.dense import encode_chunk

        pos, emb = [], []
        for p, texts in zip(batch["pos"], batch["texts"]):
            emb.append(encode_chunk(self.model, [str(t) for t in texts], self.batch_size, self.precision))
            pos.append(np.asarray(p, dtype=np.int64))
        pos = np.concatenate(pos)
        return {"pos": pos, "emb": np.concatenate(emb), "rss_mb": np.full(len(pos), peak_rss_mb())}


def encode_chunks(cfg: RelgradeConfig, chunks: list[list[str]], positions: list[np.ndarray], n: int, *,
                  model_path: str, max_seq_length: int, batch_size: int, precision: str, threads: int,
                  progress=None) -> tuple[np.ndarray, float]:
    """``(n, dim)`` embeddings of ``chunks`` (``positions[i]``: the rows chunk ``i``
    fills), encoded by ``ray.workers`` :class:`TextEncoder` actors, and the actors' peak
    memory (MB)."""
    ray = ensure_ray(cfg)
    out = None
    rows = [{"pos": np.asarray(p, dtype=np.int64), "texts": list(c)} for p, c in zip(positions, chunks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    workers = n_workers(cfg, len(rows))
    threads = cfg.ray.threads_per_worker or threads
    enc = ds.map_batches(TextEncoder, batch_size=1, concurrency=workers, batch_format="numpy",
                         fn_constructor_kwargs={"model_path": model_path, "max_seq_length": max_seq_length,
                                                "batch_size": batch_size, "precision": precision,
                                                "threads": threads},
                         max_restarts=cfg.ray.max_retries, max_task_retries=cfg.ray.max_retries,
                         **_worker_options(cfg))
    done, peak = 0, 0.0
    for b in enc.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.zeros((n, b["emb"].shape[1]), dtype=np.float32)
        out[b["pos"]] = b["emb"]
        peak = max(peak, float(b["rss_mb"].max()))
        done += len(b["pos"])
        if progress:
            progress(done, n)
    return out, round(peak, 1)


# --------------------------------------------------------------------------- channel search
class ChannelSearcher:
    """A search actor: one fitted channel (loaded once), one query shard per call."""

    def __init__(self, channel):
        self.channel = channel

    def pid(self) -> int:
        return os.getpid()

    def search(self, i: int, shard: pd.DataFrame, k: int, qemb: np.ndarray | None):
        ch = self.channel
        res = ch.search_embeddings(shard, qemb, k) if qemb is not None else ch.search_local(shard, k)
        return i, res, peak_rss_mb()


def search_sharded(cfg: RelgradeConfig, channel, queries: pd.DataFrame, k: int, qemb: np.ndarray | None = None,
                   progress=None) -> tuple[pd.DataFrame, dict]:
    """``channel.search_local(queries, k)`` (or ``search_embeddings`` with the query
    embeddings ``qemb``, row-aligned with ``queries``) in shards of about
    ``ray.search_shard_queries`` queries over :class:`ChannelSearcher` actors; the
    shards' frames concatenated in query order, and ``{"peak_rss_mb", "start_s",
    "seconds"}`` (the actors' peak memory, the seconds until they were up, in all).

    A shard is a whole number of the channel's own query batches
    (``query_batch_size`` / ``batch_size``), so each batch the workers score is one the
    local path scores: BLAS may round a row differently in a batch of another size,
    which could reorder near-tied items."""
    import time

    from relgrade.mining.channels.base import empty_results

    t0 = time.perf_counter()
    ray = ensure_ray(cfg)
    qbs = int(getattr(channel, "query_batch_size", None) or getattr(channel, "batch_size", None) or 1)
    step = max(1, -(-cfg.ray.search_shard_queries // qbs)) * qbs
    n = len(queries)
    shards = list(range(0, n, step))
    if not shards:
        return empty_results(), {"peak_rss_mb": 0.0, "start_s": 0.0, "seconds": 0.0}
    r = cfg.ray
    Actor = ray.remote(ChannelSearcher).options(max_restarts=r.max_retries, max_task_retries=r.max_retries,
                                                **_worker_options(cfg))
    ch_ref = ray.put(channel)
    actors = [Actor.remote(ch_ref) for _ in range(n_workers(cfg, len(shards)))]
    out, done, peak = [None] * len(shards), 0, 0.0
    try:
        _start(cfg, actors, "search")
        start_s = time.perf_counter() - t0
        pending = [actors[j % len(actors)].search.remote(j, queries.iloc[s:s + step], k,
                                                          None if qemb is None else qemb[s:s + step])
                   for j, s in enumerate(shards)]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            j, res, rss = ray.get(ready[0])
            out[j], peak = res, max(peak, rss)
            done += len(queries.iloc[shards[j]:shards[j] + step])
            if progress:
                progress(done, n)
    finally:
        for a in actors:
            ray.kill(a)
    info = {"peak_rss_mb": round(peak, 1), "start_s": round(start_s, 3), "seconds": round(time.perf_counter() - t0, 3)}
    return pd.concat(out, ignore_index=True), info


# --------------------------------------------------------------------------- grading
class ChunkGrader:
    """A grading actor: the cascade and the pair featurizer (given once, through the
    object store), :meth:`TeacherCascade.grade` + :func:`grade_frame` per chunk."""

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

    def grade(self, c: int, part: pd.DataFrame) -> dict:
        from relgrade.grading.cascade import grade_frame

        llm = self.cascade.llm
        if llm is not None:
            llm.take_stats()  # a retried chunk counts once: only what this call asked
        res = self.cascade.grade(part, self.fz, self.max_share, self.llm_share)
        import ray

        return {"chunk": c, "frame": grade_frame(part, res, self.cascade.rule), "seconds": res.seconds,
                "llm_stats": None if llm is None else llm.take_stats(),
                "counts": res.counts, "llm_failed": res.llm_failed, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "peak_rss_mb": peak_rss_mb()}


def _lean_featurizer(fz, union: pd.DataFrame):
    """The featurizer the workers need: union rows carry their own channel features
    (``PairFeaturizer.union_features`` reads them from the rows), so its lookup of every
    union pair stays on the driver; a worker's memory then does not grow with the union."""
    import copy

    from relgrade.grading.features import UNION_FEATURES

    if getattr(fz, "union_key", None) is None or not all(c in union.columns for c in UNION_FEATURES):
        return fz
    lean = copy.copy(fz)
    lean.union_key, lean.union_vals = None, None
    return lean


def grade_chunks(cfg: RelgradeConfig, cascade, fz, union: pd.DataFrame, todo: Iterable[tuple[int, int, int]],
                 on_chunk: Callable[[dict], None], on_actors: Callable[[list[int]], None] | None = None) -> dict:
    """Grade the chunks ``todo`` (``(chunk, lo, hi)`` row ranges of ``union``) on
    ``ray.workers`` :class:`ChunkGrader` actors; ``on_chunk(result)`` is called on the
    driver as each chunk finishes (it writes the chunk file). ``on_actors(pids)`` is told
    the actors' process ids once they are up (tests kill one). Returns ``{"workers",
    "start_s"}``: how many actors graded, and the seconds until they were up."""
    import time

    t0 = time.perf_counter()
    ray = ensure_ray(cfg)
    todo = list(todo)
    if not todo:
        return {"workers": 0, "start_s": 0.0}
    g, r = cfg.grading, cfg.ray
    n_act = n_workers(cfg, len(todo))
    Actor = ray.remote(ChunkGrader).options(max_restarts=r.max_retries, max_task_retries=r.max_retries,
                                            **_worker_options(cfg))
    cas_ref, fz_ref = ray.put(cascade), ray.put(_lean_featurizer(fz, union))
    llm_share = g.llm_judge.max_share if g.llm_judge.enabled else None
    actors = [Actor.remote(cas_ref, fz_ref, g.max_share, llm_share, r.threads_per_worker or g.threads)
              for _ in range(n_act)]
    queue = list(todo)
    inflight: dict = {}

    def submit(a) -> None:
        c, lo, hi = queue.pop(0)
        inflight[a.grade.remote(c, union.iloc[lo:hi])] = a

    try:
        pids = _start(cfg, actors, "grading")
        start_s = time.perf_counter() - t0
        if on_actors is not None:
            on_actors(pids)
        for a in actors:  # two chunks per actor in flight: the next is queued while one grades
            for _ in range(2):
                if queue:
                    submit(a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            a = inflight.pop(ready[0])
            r = ray.get(ready[0])
            if r.get("llm_stats") and cascade.llm is not None:  # the judge's requests, tokens, latency
                cascade.llm.add_stats(r["llm_stats"])
            on_chunk(r)
            if queue:
                submit(a)
    finally:
        for a in actors:
            ray.kill(a)
    return {"workers": n_act, "start_s": round(start_s, 3)}
