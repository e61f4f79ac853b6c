"""The execution engine of the heavy per-row work: ``engine: local`` (this process, the
default) or ``engine: ray`` (a local Ray started here, or a cluster at ``ray.address``).

Prefect stays the orchestrator either way: a stage's Prefect task calls these functions,
and they fan the work out over Ray and bring the results back to the task, which writes
them exactly as the local path does. Three kinds of work go to Ray:

* **encoding** (:func:`encode_chunks`): Ray Data ``map_batches`` over an actor pool of
  the caller's encoder class (the dense channel's
  :class:`relgrade.mining.channels.dense.TextEncoder`: the bi-encoder loads once per actor). The rows are the local
  path's own encoding chunks, so every ``model.encode`` call sees the same texts in the
  same order and the embeddings are bit for bit those of the local path.
* **channel search** (:func:`search_sharded`): the fitted lexical or dense channel is put
  once into the object store and loaded once by each of ``ray.workers``
  :class:`ChannelSearcher` actors (a FAISS index travels serialized and is rebuilt once
  per actor); the queries are sharded over them in shards of
  ``ray.search_shard_queries``. Ranks are per query, so sharding changes nothing.
* **grading** (:func:`run_chunk_pool`): an actor pool of the caller's worker class
  (:class:`relgrade.grading.ray_worker.ChunkGrader`), each holding
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

The engine is ground: it knows Ray, not the stages. The stages hand it their own worker
classes (``tests/code/test_layers.py`` keeps it so).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from relgrade.config import ConfigError, RelgradeConfig
from relgrade.util import peak_rss_mb

log = logging.getLogger("relgrade.engine")
_LOCK = threading.Lock()
_WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "GX_ANALYTICS_ENABLED": "false"}


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
    """What each heavy actor reserves: ``ray.cpus_per_worker`` CPUs and, when set,
    ``ray.gpus_per_worker`` GPUs (Ray then sets the actor's ``CUDA_VISIBLE_DEVICES``)."""
    opts = {"num_cpus": cfg.ray.cpus_per_worker}
    if cfg.ray.gpus_per_worker:
        opts["num_gpus"] = cfg.ray.gpus_per_worker
    return opts


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
def encode_chunks(cfg: RelgradeConfig, chunks: list[list[str]], positions: list[np.ndarray], n: int, *,
                  encoder: type, encoder_kwargs: dict, progress=None) -> tuple[np.ndarray, float]:
    """``(n, dim)`` embeddings of ``chunks`` (``positions[i]``: the rows chunk ``i``
    fills), encoded by ``ray.workers`` actors of ``encoder`` (a Ray Data callable class:
    ``encoder(**encoder_kwargs)`` maps a batch of ``{"pos", "texts"}`` rows to ``{"pos",
    "emb", "rss_mb"}``), and the actors' peak memory (MB)."""
    ray = ensure_ray(cfg)
    out = None
    rows = [{"pos": np.asarray(p, dtype=np.int64), "texts": list(c)} for p, c in zip(positions, chunks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    workers = n_workers(cfg, len(rows))
    kwargs = dict(encoder_kwargs)
    if cfg.ray.threads_per_worker:
        kwargs["threads"] = cfg.ray.threads_per_worker
    enc = ds.map_batches(encoder, batch_size=1, concurrency=workers, batch_format="numpy",
                         fn_constructor_kwargs=kwargs,
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

    t0 = time.perf_counter()
    ray = ensure_ray(cfg)
    qbs = int(getattr(channel, "query_batch_size", None) or getattr(channel, "batch_size", None) or 1)
    step = max(1, -(-cfg.ray.search_shard_queries // qbs)) * qbs
    n = len(queries)
    shards = list(range(0, n, step))
    if not shards:  # nothing to send: the channel's own (empty) answer
        res = channel.search_embeddings(queries, qemb, k) if qemb is not None else channel.search_local(queries, k)
        return res, {"peak_rss_mb": 0.0, "start_s": 0.0, "seconds": 0.0}
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


# --------------------------------------------------------------------------- chunk pools
def run_chunk_pool(cfg: RelgradeConfig, worker: type, worker_args: tuple, frame: pd.DataFrame,
                   todo: Iterable[tuple[int, int, int]], on_chunk: Callable[[dict], None],
                   on_actors: Callable[[list[int]], None] | None = None, what: str = "grading") -> dict:
    """Run the chunks ``todo`` (``(chunk, lo, hi)`` row ranges of ``frame``) on
    ``ray.workers`` actors of ``worker`` (``worker(*worker_args)``; each argument goes
    through the object store once; the actor has ``pid()`` and ``run(chunk, rows) -> dict``).
    ``on_chunk(result)`` is called on the driver as each chunk finishes (the grading stage
    writes the chunk file there). ``on_actors(pids)`` is told the actors' process ids once
    they are up (tests kill one). A killed actor is restarted and its chunk retried
    (``ray.max_retries``). Returns ``{"workers", "start_s"}``: how many actors ran, and the
    seconds until they were up."""
    import time

    t0 = time.perf_counter()
    ray = ensure_ray(cfg)
    todo = list(todo)
    if not todo:
        return {"workers": 0, "start_s": 0.0}
    r = cfg.ray
    n_act = n_workers(cfg, len(todo))
    Actor = ray.remote(worker).options(max_restarts=r.max_retries, max_task_retries=r.max_retries,
                                       **_worker_options(cfg))
    refs = [ray.put(a) for a in worker_args]
    actors = [Actor.remote(*refs) for _ in range(n_act)]
    queue = list(todo)
    inflight: dict = {}

    def submit(a) -> None:
        c, lo, hi = queue.pop(0)
        inflight[a.run.remote(c, frame.iloc[lo:hi])] = a

    try:
        pids = _start(cfg, actors, what)
        start_s = time.perf_counter() - t0
        if on_actors is not None:
            on_actors(pids)
        for a in actors:  # two chunks per actor in flight: the next is queued while one runs
            for _ in range(2):
                if queue:
                    submit(a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            a = inflight.pop(ready[0])
            on_chunk(ray.get(ready[0]))
            if queue:
                submit(a)
    finally:
        for a in actors:
            ray.kill(a)
    return {"workers": n_act, "start_s": round(start_s, 3)}
