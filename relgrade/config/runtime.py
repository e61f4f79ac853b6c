"""Where a run stores and runs: Feast, the validation gate, Prefect, Ray."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from relgrade.config.base import _Strict
from relgrade.views import FEATURE_VIEWS, GATED_ENGAGEMENT_FV


class FeastConfig(_Strict):
    project: str = "relgrade"
    ttl_days: int = Field(365, ge=1, le=36500)
    # per-view TTL: gated engagement rows are daily snapshots of trailing windows, stale
    # after a day (feature_repo/definitions.py)
    view_ttl_days: dict[str, Annotated[int, Field(ge=1, le=36500)]] = Field(
        default_factory=lambda: {GATED_ENGAGEMENT_FV: 1})
    # views whose latest row per (query, item) is written to the online store on publish
    # (the others are offline-only: training reads the offline store)
    online_views: list[Literal[FEATURE_VIEWS]] = Field(
        default_factory=lambda: list(FEATURE_VIEWS)
    )
    online_write_chunk_rows: int = Field(100_000, ge=1)  # bounds memory of online writes
    # the offline store the point-in-time joins run in: duckdb (one process, the default)
    # or spark (Feast's Spark offline store; `pip install -e ".[spark]"` and Java 17).
    # With spark every view's source is a SparkSource over the same Parquet file.
    offline_store: Literal["duckdb", "spark"] = "duckdb"
    # the Spark session Feast starts (spark.master: local[N] here, a cluster's URL at scale)
    spark_conf: dict[str, str] = Field(default_factory=lambda: {
        "spark.master": "local[2]", "spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"})


class ValidationConfig(_Strict):
    # distribution bounds used by the expectation suites
    max_future_skew_seconds: int = Field(0, ge=0)
    min_rows: int = Field(1, ge=0)  # every suite: a batch has at least this many rows
    # also build Great Expectations' Data Docs (reports/data_docs). GX prints raw unexpected
    # values unescaped, so when they are built no values from the data are kept in results;
    # the offline pages (reports/validation) then show counts only. Off: they show examples.
    gx_data_docs: bool = True
    # batches above this many rows are validated in partitions (a query's rows share one):
    # every row-level expectation runs on each partition, the batch-level ones (row count,
    # means, distinct counts, key uniqueness) once on the whole batch, and a failing
    # partition refuses the whole batch. None: always one run.
    partition_rows: int | None = Field(2_000_000, ge=1)


class PrefectConfig(_Strict):
    """Retries of the tasks that read or write files and stores (transient I/O errors only:
    bad data is never retried, flows/runtime.py:retry_io_only)."""

    task_retries: int = Field(2, ge=0, le=20)
    task_retry_delay_seconds: float = Field(1.0, ge=0, le=3600)


class RayConfig(_Strict):
    """Ray, when ``engine: ray`` (docs/architecture.md#engines): ``address`` none starts a
    local Ray in this process with ``num_cpus``; an address (``auto``, ``ray://host:10001``)
    joins a running cluster. An already initialized Ray (a test's ``Cluster``, a notebook)
    is reused as it is and left running."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # local Ray only; None: Ray's own count
    # actors per heavy stage (encoders, graders); each reserves ``cpus_per_worker`` CPUs
    # (capped by the CPUs the cluster has: a worker that cannot be placed would wait forever)
    workers: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0)
    # seconds the workers of a stage may take to start (import torch, receive the models)
    worker_start_timeout_s: float = Field(600.0, gt=0)
    # torch threads inside a worker (None: the stage's own setting, grading.threads /
    # mining.dense_threads, so the Ray path computes exactly what the local path does)
    threads_per_worker: int | None = Field(None, ge=1)
    # GPUs each encoder / grader actor reserves (fractions share one); with device auto or
    # cuda the actors then run their models there
    gpus_per_worker: float = Field(0.0, ge=0)
    # queries per search call of the lexical and dense channels (the fitted channel is
    # loaded once per search worker, the queries are sharded over the workers)
    search_shard_queries: int = Field(2000, ge=1)
    # a killed worker is restarted and its task retried this many times before the stage fails
    max_retries: int = Field(3, ge=0, le=100)
    # Ray's object store for a local Ray (bytes; None: Ray's default, 30% of memory)
    object_store_memory: int | None = Field(None, ge=78_643_200)
