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
  once into the object store (numpy arrays are read zero-copy by every worker of a node;
  FAISS indexes travel serialized) and the queries are sharded into tasks of
  ``ray.search_shard_queries``; ranks are per query, so sharding changes nothing.
* **grading** (:func:`grade_chunks`): an actor pool of :class:`ChunkGrader`, each holding
  the cascade and the pair featurizer (loaded once per actor), grades the union in the
  same fixed chunks as the local path; the driver writes each chunk atomically as it
  arrives, so the checkpoint and resume semantics are the local path's (a killed run
  resumes without regrading finished chunks, with either engine). A worker whose process
  dies is restarted and its chunk retried (``ray.max_retries``). One pool runs the whole
  cascade on a chunk rather than one pool per teacher stage: the escalation caps
  (``grading.max_share``) are shares of a chunk, so a chunk's stages belong together.

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
    r = cfg.ray
    opts = {"num_cpus": r.cpus_per_worker}
    if r.gpus_per_worker:
        opts["num_gpus"] = r.gpus_per_worker
    return opts


def _device(cfg: RelgradeConfig) -> str:
    return "cuda" if cfg.ray.gpus_per_worker else "cpu"


# --------------------------------------------------------------------------- encoding
class TextEncoder:
    """A Ray Data actor: the bi-encoder, loaded once, encodes one chunk per row with the
    local path's own call (:func:`relgrade.mining.channels.dense.encode_chunk`)."""

    def __init__(self, model_path: str, max_seq_length: int, batch_size: int, precision: str, threads: int,
                 device: str = "cpu"):
        from relgrade.mining.channels.dense import load_model

        self.model = load_model(model_path, threads, device=device)
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
                  progress=None, stats: dict | None = None) -> np.ndarray:
    """``(n, dim)`` embeddings of ``chunks`` (``positions[i]``: the rows chunk ``i``
    fills), encoded by ``ray.workers`` :class:`TextEncoder` actors (their peak memory
    goes to ``stats["ray_worker_peak_rss_mb"]``)."""
    ray = ensure_ray(cfg)
    out = None
    rows = [{"pos": np.asarray(p, dtype=np.int64), "texts": list(c)} for p, c in zip(positions, chunks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    workers = min(cfg.ray.workers, len(rows))
    threads = cfg.ray.threads_per_worker or threads
    enc = ds.map_batches(TextEncoder, batch_size=1, concurrency=workers, batch_format="numpy",
                         fn_constructor_kwargs={"model_path": model_path, "max_seq_length": max_seq_length,
                                                "batch_size": batch_size, "precision": precision,
                                                "threads": threads, "device": _device(cfg)},
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
    if stats is not None:
        stats["ray_worker_peak_rss_mb"] = round(peak, 1)
    return out


# --------------------------------------------------------------------------- channel search
def _search_shard(channel, shard: pd.DataFrame, k: int, qemb: np.ndarray | None):
    res = channel.search_embeddings(shard, qemb, k) if qemb is not None else channel.search(shard, k)
    return res, peak_rss_mb()


def search_sharded(cfg: RelgradeConfig, channel, queries: pd.DataFrame, k: int, qemb: np.ndarray | None = None,
                   progress=None) -> pd.DataFrame:
    """``channel.search(queries, k)`` (or ``search_embeddings`` with the query embeddings
    ``qemb``, row-aligned with ``queries``) in shards of ``ray.search_shard_queries``
    queries, one Ray task each, the fitted channel shared through the object store; the
    shards' frames concatenated in query order (the tasks' peak memory goes to
    ``channel.stats["ray_worker_peak_rss_mb"]``)."""
    import copy

    ray = ensure_ray(cfg)
    step = cfg.ray.search_shard_queries
    n = len(queries)
    local = copy.copy(channel)
    local.engine = None  # a task searches its shard in-process
    ch_ref = ray.put(local)
    task = ray.remote(_search_shard).options(num_cpus=cfg.ray.cpus_per_worker, max_retries=cfg.ray.max_retries)
    refs = [task.remote(ch_ref, queries.iloc[s:s + step], k, None if qemb is None else qemb[s:s + step])
            for s in range(0, n, step)]
    out, done, peak = [None] * len(refs), 0, 0.0
    index = {r: i for i, r in enumerate(refs)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = index[ready[0]]
        out[i], rss = ray.get(ready[0])
        peak = max(peak, rss)
        done += min(step, n - i * step)
        if progress:
            progress(done, n)
    channel.stats["ray_worker_peak_rss_mb"] = round(peak, 1)
    return pd.concat(out, ignore_index=True) if out else local.search(queries.iloc[:0], k)


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

        res = self.cascade.grade(part, self.fz, self.max_share, self.llm_share)
        import ray

        return {"chunk": c, "frame": grade_frame(part, res, self.cascade.rule), "seconds": res.seconds,
                "counts": res.counts, "llm_failed": res.llm_failed, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "peak_rss_mb": peak_rss_mb()}


def grade_chunks(cfg: RelgradeConfig, cascade, fz, union: pd.DataFrame, todo: Iterable[tuple[int, int, int]],
                 on_chunk: Callable[[dict], None], on_actors: Callable[[list[int]], None] | None = None) -> None:
    """Grade the chunks ``todo`` (``(chunk, lo, hi)`` row ranges of ``union``) on
    ``ray.workers`` :class:`ChunkGrader` actors; ``on_chunk(result)`` is called on the
    driver as each chunk finishes (it writes the chunk file). ``on_actors(pids)`` is told
    the actors' process ids once they are up (tests kill one)."""
    if cascade.llm is not None:
        raise ConfigError("engine: ray does not run the LLM judge stage yet (its cache and HTTP client live in one "
                          "process): grade with engine: local when grading.llm_judge is enabled")
    ray = ensure_ray(cfg)
    todo = list(todo)
    if not todo:
        return
    g, r = cfg.grading, cfg.ray
    n_act = min(r.workers, len(todo))
    Actor = ray.remote(ChunkGrader).options(max_restarts=r.max_retries, max_task_retries=r.max_retries,
                                            **_worker_options(cfg))
    cas_ref, fz_ref = ray.put(cascade), ray.put(fz)
    llm_share = g.llm_judge.max_share if g.llm_judge.enabled else None
    actors = [Actor.remote(cas_ref, fz_ref, g.max_share, llm_share, r.threads_per_worker or g.threads)
              for _ in range(n_act)]
    if on_actors is not None:
        on_actors(ray.get([a.pid.remote() for a in actors]))
    queue = list(todo)
    inflight: dict = {}

    def submit(a) -> None:
        c, lo, hi = queue.pop(0)
        inflight[a.grade.remote(c, union.iloc[lo:hi])] = a

    for a in actors:  # two chunks per actor in flight: the next is queued while one grades
        for _ in range(2):
            if queue:
                submit(a)
    try:
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            a = inflight.pop(ready[0])
            on_chunk(ray.get(ready[0]))
            if queue:
                submit(a)
    finally:
        for a in actors:
            ray.kill(a)
