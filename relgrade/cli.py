"""The ``relgrade`` command: each subcommand starts one Prefect flow (or all of them).

Flows are imported inside each command, after the Prefect environment has been pointed
at the profile's data root (Prefect reads its settings on import).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs wrap to the terminal
    no_args_is_help=True,
    help="relgrade: relevance-graded training data for product-search retrievers. "
    "Every command runs a Prefect flow on the chosen config profile; outputs land under "
    "the profile's data root.",
)

ProfileOpt = typer.Option("default", "--profile", "-p", help="Config profile from configs/relgrade.yaml (default, quick, ...).")
DataRootOpt = typer.Option(None, "--data-root", help="Override the profile's data root folder.")


def _setup(profile: str, data_root: Optional[str], name: str):
    from flows.runtime import get_config, log_to_file

    overrides = {"data_root": data_root} if data_root else None
    cfg = get_config(profile, overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "great_expectations", "urllib3", "feast.infra.registry.registry"):  # per-request chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log_path = log_to_file(cfg, name)
    return cfg, overrides, log_path


def _run(fn, *args, **kw):
    """Run a flow; print bad-input errors plainly (no traceback) and exit 1."""
    from flows.runtime import is_data_error

    try:
        return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001
        if is_data_error(exc):
            typer.secho(f"\nrelgrade: input rejected, nothing was written:\n{exc}", fg="red", err=True)
            raise typer.Exit(1) from None
        raise


def _where(cfg, log_path: Path) -> None:
    p = cfg.paths
    typer.echo("\nOutputs")
    typer.echo(f"  feature store : {p.feast / 'feature_store.yaml'}  (offline Parquet: {p.features})")
    typer.echo(f"  data docs     : {p.data_docs / 'index.html'}")
    typer.echo(f"  reports       : {p.reports}  (mining, grading, assemble, evaluation: report.html)")
    student = p.root / "models" / "student"
    if student.exists():
        typer.echo(f"  student model : {student}  (FAISS index: {student / 'index.faiss'})")
    typer.echo(f"  run log       : {log_path}")
    typer.echo(f"  prefect home  : {p.prefect_home}")


@app.command()
def ingest(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Read the configured dataset through its adapter, conform it to the data contract,
    validate catalog, queries and judgments, and write them (all or none)."""
    cfg, ov, log_path = _setup(profile, data_root, "ingest")
    from flows.ingest import ingest_flow

    typer.echo(json.dumps(_run(ingest_flow, profile, ov)["rows"]))
    _where(cfg, log_path)


@app.command()
def simulate(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Simulate the engagement log (searches, impressions, clicks, carts, orders) for
    the ingested catalog, validate it, and stage windowed engagement features."""
    cfg, ov, log_path = _setup(profile, data_root, "simulate")
    from flows.simulate import simulate_flow

    typer.echo(json.dumps(_run(simulate_flow, profile, ov)))
    _where(cfg, log_path)


@app.command()
def materialize(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    view: list[str] = typer.Option(None, "--view", help="Only these feature views (repeatable)."),
):
    """Validate staged feature batches, merge them into Feast's offline store and
    materialize them into the online store."""
    cfg, ov, log_path = _setup(profile, data_root, "materialize")
    from flows.materialize import materialize_flow

    typer.echo(json.dumps(_run(materialize_flow, profile, ov, views=view or None), default=str))
    _where(cfg, log_path)


@app.command()
def mine(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    external: Optional[str] = typer.Option(
        None, "--external", help="Parquet of your own retriever's output (query_id or query, item_id, rank, score): "
        "adds the external channel."),
):
    """Mine the retrieval snapshot: run every channel (lexical BM25, dense MiniLM+FAISS,
    behavioural click graph from events before the snapshot, optional external) as
    concurrent tasks, write the union table, publish retrieval_prior_fv through the
    validation gate and write the mining report (reports/mining/report.html)."""
    cfg, ov, log_path = _setup(profile, data_root, "mine")
    from flows.mine import mine_flow

    result = _run(mine_flow, profile, ov, external_path=external)
    typer.echo(json.dumps({k: result[k] for k in ("snapshot_ts", "channels", "union_rows", "union_path", "report")},
                          default=str)[:4000])
    _where(cfg, log_path)


@app.command()
def assemble(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Gate engagement by the cascade grade, join prior, grade and gated engagement
    point-in-time through Feast at the cut (default: the mining snapshot), compute the
    blended targets, validate (suite training_set) and write training/trainset.parquet,
    trainset_lists.parquet, manifest.json and the data-quality report."""
    cfg, ov, log_path = _setup(profile, data_root, "assemble")
    from flows.assemble import assemble_flow

    typer.echo(json.dumps(_run(assemble_flow, profile, ov), default=str, indent=1))
    _where(cfg, log_path)


@app.command()
def train(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Train the student bi-encoder from the base MiniLM on training/trainset.parquet with
    the three-stage curriculum over the five difficulty levels (config: training), and
    the click-trained baseline on the same queries and budget; save each as a
    sentence-transformers folder with a model card and a FAISS index of the catalog."""
    cfg, ov, log_path = _setup(profile, data_root, "train")
    from flows.train import train_flow

    result = _run(train_flow, profile, ov)
    typer.echo(json.dumps(result, default=str, indent=1)[:4000])
    for name, m in result["models"].items():
        typer.echo(f"  model {name:14s}: {m['path']}  (index: {m['index']})")
    _where(cfg, log_path)


@app.command()
def evaluate(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Evaluate the student, the click-trained baseline, the base MiniLM and BM25 on the
    held-out human grades (judged-set NDCG@10, embarrassing@3, full-catalog recall@100,
    by segment, bootstrap 95% intervals); write reports/evaluation/report.{html,json}."""
    cfg, ov, log_path = _setup(profile, data_root, "evaluate")
    from flows.evaluate import evaluate_flow

    result = _run(evaluate_flow, profile, ov)
    typer.echo(json.dumps(result, default=str, indent=1)[:6000])
    typer.echo(f"  evaluation report: {result['report']['html']}")
    _where(cfg, log_path)


@app.command()
def experiments(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    only: list[str] = typer.Option(None, "--only", help="Only these extra runs (no_curriculum, grades_only, scaling_0.1, ...)."),
    retrain: bool = typer.Option(False, "--retrain", help="Retrain models whose folders already exist."),
    budgets: list[float] = typer.Option(None, "--budget", help="Step-budget multipliers to run (repeatable; "
                                        "default: training.budget_multipliers, 2x 4x 8x)."),
):
    """Baselines, ablations (no curriculum, grades only), data scaling (10/30/100% of
    the teacher-graded pairs) and the step budget (student and click-trained with 2x, 4x
    and 8x the examples per stage), trained and evaluated together; writes
    reports/experiments/report.{html,json} and benchmarks/results/training_experiments.json.
    Not part of the pipeline (each extra model costs a training run and a catalog encoding)."""
    cfg, ov, log_path = _setup(profile, data_root, "experiments")
    if budgets:
        from flows.runtime import get_config

        cfg = get_config(profile, {**(ov or {}), "training": {"budget_multipliers": list(budgets)}})
    from training.experiments import run_experiments

    result = _run(run_experiments, cfg, only=only or None, reuse=not retrain)
    typer.echo(json.dumps({k: result[k] for k in ("metrics", "targets", "data_scaling", "step_budget", "report")}, default=str, indent=1)[:8000])
    _where(cfg, log_path)


@app.command()
def grade(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Grade every mined (query, item) pair with a calibrated cascade of teachers
    (GBM on cheap pair features -> fine-tuned cross-encoder -> cross-encoder ensemble),
    trained on train-split human judgments and calibrated on dev. Grades in resumable
    chunks, publishes relevance_grade_fv and the grade-refined retrieval_prior_fv through
    the validation gate, writes grading/grades.parquet and reports/grading/report.html."""
    cfg, ov, log_path = _setup(profile, data_root, "grade")
    from flows.grade import grade_flow

    res = _run(grade_flow, profile, ov)
    c = res["metrics"]["cascade"]
    typer.echo(json.dumps({"pairs": res["union"]["pairs"], "thresholds": res["thresholds"],
                           "test_qwk": {k: round(res["metrics"][k]["qwk"], 4) for k in ("stage1", "stage2", "stage3", "cascade")},
                           "test_rmse_cascade": round(c["rmse_raw"], 4),
                           "compute_share_of_stage3": round(c["compute_share_of_stage3"], 4),
                           "union_escalated": [round(res["union"]["escalated_to_stage2"], 4),
                                               round(res["union"]["escalated_to_stage3"], 4)],
                           "total_s": round(res["timings_s"]["total"], 1), "report": res["report"]["html"]}))
    _where(cfg, log_path)


@app.command()
def pipeline(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    until: str = typer.Option("evaluate", "--until", help="Stop after this stage (ingest, simulate, materialize, mine, grade, assemble, train, evaluate)."),
):
    """Run every stage in order: ingest, simulate, materialize, mine, grade, assemble,
    train, evaluate. Finished stages are cached and skipped on rerun."""
    cfg, ov, log_path = _setup(profile, data_root, "pipeline")
    from flows.pipeline import pipeline_flow

    result = _run(pipeline_flow, profile, ov, until=until)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "locations"}, default=str)[:4000])
    _where(cfg, log_path)


@app.command()
def features(
    entities: Path = typer.Argument(..., help="Parquet or CSV with query_id, item_id, event_timestamp."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the joined Parquet."),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    feature: list[str] = typer.Option(None, "--feature", help="view:feature refs (default: the training feature service)."),
):
    """Point-in-time feature retrieval through Feast for your own entity rows."""
    cfg, _, _ = _setup(profile, data_root, "features")
    import pandas as pd

    from relgrade.featurestore import historical_features
    from relgrade.io import write_parquet_atomic

    ent = pd.read_parquet(entities) if entities.suffix == ".parquet" else pd.read_csv(entities, dtype={"query_id": str, "item_id": str})
    ent["event_timestamp"] = pd.to_datetime(ent["event_timestamp"], utc=True)
    df = historical_features(cfg, ent, feature or None)
    write_parquet_atomic(df, out)
    typer.echo(f"{len(df)} rows -> {out}")


@app.command()
def contract():
    """Print the canonical data contract (tables, columns, types)."""
    from relgrade.contract import describe_markdown

    typer.echo(describe_markdown())


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
