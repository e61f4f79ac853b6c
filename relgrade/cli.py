"""The ``relgrade`` command: each subcommand starts one Prefect flow (or all of them).

Flows are imported inside each command, after the Prefect environment has been pointed
at the profile's data root (Prefect reads its settings on import).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs wrap to the terminal
    no_args_is_help=True,
    help="relgrade: relevance-graded training data for product-search retrievers. "
    "Every command runs a Prefect flow on the chosen config profile; outputs land under "
    "the profile's data root.",
)

_STATE = {"debug": False}


def _debug() -> bool:
    return _STATE["debug"] or os.environ.get("RELGRADE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="On an error, show the full traceback (Prefect's "
                                     "task and flow logs included); also RELGRADE_DEBUG=1.")):
    _STATE["debug"] = debug


ProfileOpt = typer.Option("default", "--profile", "-p", help="Config profile from configs/relgrade.yaml (default, quick, ...).")
DataRootOpt = typer.Option(None, "--data-root", help="Override the profile's data root folder.")
ConfigOpt = typer.Option(None, "--config", "-c", help="A config file of your own: overrides of the defaults "
                         "(`relgrade init` writes one), or a whole profile file. Default: $RELGRADE_CONFIG.")


def _setup(profile: str, data_root: Optional[str], name: str, config: Optional[Path] = None):
    from flows.runtime import get_config, log_to_file
    from relgrade.config import ConfigError

    if config is not None:
        os.environ["RELGRADE_CONFIG"] = str(Path(config).expanduser().resolve())  # the flows read it too
    overrides = {"data_root": data_root} if data_root else None
    try:
        cfg = get_config(profile, overrides)
    except ConfigError as exc:
        _refuse(exc, name)
    if name not in ("features", "label", "serve"):  # commands that run flows: a Prefect server tied to this process
        from flows.runtime import start_server

        start_server(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "great_expectations", "urllib3", "feast.infra.registry.registry"):  # per-request chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log_path = log_to_file(cfg, name)
    return cfg, overrides, log_path


INPUT_SUITES = {"catalog", "queries", "judgments", "events"}  # suites of data a user brings
MAX_LINES = 10  # a refusal's message on the terminal, at most
# settings that name an input file: a refusal naming the file says which one it is
FILE_SETTINGS = ("dataset.path", "dataset.products_path", "dataset.labels_path", "dataset.catalog_path",
                 "dataset.judgments_path", "dataset.queries_path", "dataset.blind_ratings_path",
                 "engagement.log_path", "mining.external_path", "attributes.gold_path")


def _config_source(profile: str | None = None) -> str:
    return os.environ.get("RELGRADE_CONFIG") or f"profile {profile or 'default'} of configs/relgrade.yaml"


def _setting_of(cfg, path: str) -> str | None:
    """The config key whose value is the file ``path`` (None when none is)."""
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    for key in FILE_SETTINGS:
        section, field = key.split(".")
        value = getattr(getattr(cfg, section, None), field, None)
        if isinstance(value, str) and cfg.resolve(value) == target:
            return key
    return None


def _refusal_lines(exc: BaseException, stage: str, cfg=None, log_path: Path | None = None) -> tuple[list[str], int]:
    """What the terminal shows for an input error (at most MAX_LINES lines: what was
    refused, the file or setting, what is wrong, a hint, where the details are) and the
    exit status."""
    import re

    from relgrade.config import ConfigError
    from validation.gate import ValidationFailed

    more = "details: rerun with `relgrade --debug ...` (or RELGRADE_DEBUG=1) for the traceback"
    if log_path is not None:
        more += f"; run log {log_path}"
    if isinstance(exc, ConfigError):
        problems = str(exc).splitlines() or [type(exc).__name__]
        shown = problems[:MAX_LINES - 4] + ([f"  ... and {len(problems) - (MAX_LINES - 4)} more"]
                                            if len(problems) > MAX_LINES - 4 else [])
        return ([f"relgrade {stage}: bad configuration, nothing was run:"] + [f"  {p}" for p in shown]
                + ["  hint: fix the key or value in that file; `relgrade config --config FILE` prints every "
                   "setting with its value", f"  {more}"], 2)
    if isinstance(exc, ValidationFailed):
        rep = exc.report
        user = rep.suite in INPUT_SUITES
        head = (f"relgrade {stage}: input refused by validation (suite {rep.suite}), nothing was written:" if user
                else f"relgrade {stage}: its output failed validation (suite {rep.suite}), nothing was written:")
        summary = rep.summary().splitlines()
        page = [ln for ln in summary if ln.strip().startswith("validation page:")]
        failed = [ln for ln in summary[1:] if ln not in page]
        room = MAX_LINES - 4 - len(page)
        failed = failed[:room] + ([f"  ... and {len(failed) - room} more failed expectation(s)"]
                                  if len(failed) > room else [])
        hint = ("  hint: the validation page shows each failed expectation; docs/own_data.md, 'What each error "
                "means', says what to fix" if user else "  hint: the stage's report and the validation page say why")
        return [head, f"  {summary[0]}", *[f"  {ln.strip()}" for ln in failed], *[f"  {ln.strip()}" for ln in page],
                hint, f"  {more}"][:MAX_LINES], (2 if user else 1)
    # ContractError: "<file>: what is wrong[; how to fix it]" (or a message naming a setting)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    lines = [f"relgrade {stage}: input refused, nothing was written:"]
    m = re.match(r"(?:input file not found: )?((?:/|~)[^:]*?)(?:: (.*))?$", msg)
    if m:
        path, what = m.group(1), m.group(2) or "not found"
        setting = _setting_of(cfg, path) if cfg is not None else None
        lines.append(f"  file   : {path}" + (f"  (setting {setting}, {_config_source(cfg.profile)})" if setting else ""))
        lines.append(f"  problem: {what}")
        hint = ("fix the file" + (f", or point {setting} at another" if setting else "")
                + "; what each file holds: `relgrade contract` and docs/own_data.md")
    else:
        lines.append(f"  problem: {msg}")
        hint = "docs/own_data.md says what each setting and file needs"
    return lines + [f"  hint   : {hint}", f"  {more}"], 2


def _run_log_handler(log_path: Path | None) -> logging.Handler | None:
    """The run log's file handler (:func:`flows.runtime.log_to_file` put it on "relgrade")."""
    for h in logging.getLogger("relgrade").handlers:
        if log_path is not None and isinstance(h, logging.FileHandler) and h.baseFilename == str(log_path):
            return h
    return None


def _refuse(exc: BaseException, stage: str, cfg=None, log_path: Path | None = None):
    """Print an input error in a few lines (the traceback too with --debug) and exit;
    the run log gets the traceback."""
    from flows.runtime import quiet_input_errors

    if _run_log_handler(log_path) is not None:
        with quiet_input_errors():  # to the run log only
            logging.getLogger("relgrade").error("%s: input refused", stage, exc_info=exc)
    lines, code = _refusal_lines(exc, stage, cfg, log_path)
    typer.secho("\n".join(lines), fg="red", err=True)
    if _debug():
        import traceback

        typer.echo("".join(traceback.format_exception(exc)), err=True)
    raise typer.Exit(code) from None


def _run(fn, *args, stage: str = "relgrade", setup: tuple | None = None, **kw):
    """Run a flow and say plainly what went wrong, without a traceback on the terminal
    (the run log keeps it; --debug shows it): bad input, a refused configuration or an
    input batch the validation gate refused (a few lines, exit 2; Prefect's own report of
    the failed task and flow runs is kept off the terminal), a stage output its gate
    refused (exit 1), a stage run before the one it needs (exit 2), or a failure inside
    the stage, with its reason (exit 1). ``setup``: ``(cfg, log_path)`` of :func:`_setup`,
    for the message."""
    import logging

    from flows.runtime import input_error_of, quiet_input_errors

    cfg, log_path = setup or (None, None)
    run_log = _run_log_handler(log_path)
    prefect_log = logging.getLogger("prefect")
    if run_log is not None and run_log not in prefect_log.handlers:
        prefect_log.addHandler(run_log)  # Prefect's logging setup, on its import, took it off
    try:
        with quiet_input_errors(enabled=not _debug()):
            return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - sorted below
        bad = input_error_of(exc)
        if bad is not None:
            _refuse(bad, stage, cfg, log_path)
        if isinstance(exc, FileNotFoundError):
            typer.secho(f"\nrelgrade {stage}: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        # a defect inside the stage: report it as such
        logging.getLogger("relgrade").exception("%s failed", stage)
        typer.secho(f"\nrelgrade {stage} failed: {type(exc).__name__}: {exc}\n(traceback in the run log)",
                    fg="red", err=True)
        raise typer.Exit(1) from None


def _stage(stage: str, profile: str, data_root: Optional[str], config: Optional[Path],
           show: Callable[[dict], Any] = lambda r: r, limit: int | None = None, indent: int | None = None,
           **flow_kwargs) -> dict:
    """One pipeline stage from the command line: set up (config, Prefect server, run log),
    run ``flows.<stage>.<stage>_flow``, print ``show(result)`` as JSON (cut at ``limit``
    characters) and where the outputs are."""
    import importlib

    cfg, ov, log_path = _setup(profile, data_root, stage, config)
    flow_fn = getattr(importlib.import_module(f"flows.{stage}"), f"{stage}_flow")
    result = _run(flow_fn, profile, ov, stage=stage, setup=(cfg, log_path), **flow_kwargs)
    text = json.dumps(show(result), default=str, indent=indent)
    typer.echo(text[:limit] if limit else text)
    _where(cfg, log_path)
    return result


def _where(cfg, log_path: Path) -> None:
    p = cfg.paths
    typer.echo("\nOutputs")
    typer.echo(f"  feature store : {p.feast / 'feature_store.yaml'}  (offline Parquet: {p.features})")
    typer.echo(f"  validation    : {p.validation_pages / 'index.html'}  (GX Data Docs: {p.data_docs / 'index.html'})")
    typer.echo(f"  reports       : {p.reports}  (mining, grading, assemble, evaluation: report.html)")
    student = p.model("student")
    if student.exists():
        typer.echo(f"  student model : {student}  (FAISS index: {student / 'index.faiss'})")
    typer.echo(f"  run log       : {log_path}")
    typer.echo(f"  prefect home  : {p.prefect_home}")


@app.command()
def ingest(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Read the configured dataset through its adapter, conform it to the data contract,
    validate catalog, queries and judgments, and write them (all or none)."""
    _stage("ingest", profile, data_root, config, show=lambda r: r["rows"])


@app.command()
def simulate(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Simulate the engagement log (searches, impressions, clicks, carts, orders) for
    the ingested catalog, validate it, and stage windowed engagement features."""
    _stage("simulate", profile, data_root, config)


@app.command()
def materialize(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    view: list[str] = typer.Option(None, "--view", help="Only these feature views (repeatable)."),
):
    """Validate staged feature batches, merge them into Feast's offline store and
    materialize them into the online store."""
    _stage("materialize", profile, data_root, config, views=view or None)


@app.command()
def mine(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    external: Optional[str] = typer.Option(
        None, "--external", help="Parquet of your own retriever's output (query_id or query, item_id, rank, score): "
        "adds the external channel."),
):
    """Mine the retrieval snapshot: run every channel (lexical BM25, dense MiniLM+FAISS,
    behavioural click graph from events before the snapshot, optional external) as
    concurrent tasks, write the union table, publish retrieval_prior_fv through the
    validation gate and write the mining report (reports/mining/report.html)."""
    _stage("mine", profile, data_root, config, limit=4000, external_path=external,
           show=lambda r: {k: r[k] for k in ("snapshot_ts", "channels", "union_rows", "union_path", "report")})


@app.command()
def assemble(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Gate engagement by the cascade grade, join prior, grade and gated engagement
    point-in-time through Feast at the cut (default: the mining snapshot), compute the
    blended targets, validate (suite training_set) and write training/trainset.parquet,
    trainset_lists.parquet, manifest.json and the data-quality report."""
    _stage("assemble", profile, data_root, config, indent=1)


@app.command()
def train(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Train the student bi-encoder from the base MiniLM on training/trainset.parquet with
    the three-stage curriculum over the five difficulty levels (config: training), and
    the click-trained baseline on the same queries and budget; save each as a
    sentence-transformers folder with a model card and a FAISS index of the catalog."""
    result = _stage("train", profile, data_root, config, indent=1, limit=4000)
    for name, m in result["models"].items():
        typer.echo(f"  model {name:14s}: {m['path']}  (index: {m['index']})")


@app.command()
def evaluate(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Evaluate the student, the click-trained baseline, the base MiniLM and BM25 on the
    held-out human grades (judged-set NDCG@10, embarrassing@3, full-catalog recall@100,
    by segment, bootstrap 95% intervals); write reports/evaluation/report.{html,json}."""
    result = _stage("evaluate", profile, data_root, config, indent=1, limit=6000)
    typer.echo(f"  evaluation report: {result['report']['html']}")


@app.command()
def experiments(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
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
    cfg, ov, log_path = _setup(profile, data_root, "experiments", config)
    if budgets:
        from flows.runtime import get_config

        cfg = _run(get_config, profile, {**(ov or {}), "training": {"budget_multipliers": list(budgets)}},
                   stage="experiments", setup=(cfg, log_path))
    from training.experiments import run_experiments

    result = _run(run_experiments, cfg, stage="experiments", setup=(cfg, log_path), only=only or None,
                  reuse=not retrain)
    typer.echo(json.dumps({k: result[k] for k in ("metrics", "targets", "data_scaling", "step_budget", "report")}, default=str, indent=1)[:8000])
    _where(cfg, log_path)


@app.command()
def ladder(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    retrain: bool = typer.Option(False, "--retrain", help="Retrain rungs whose folders already exist."),
    judged_only: bool = typer.Option(False, "--judged-only", help="Judged-set metrics only: no catalog index "
                                     "per rung, no recall (minutes instead of a catalog encoding per rung)."),
):
    """The ladder from the peer recipe (hardneg_human) to the relgrade student, one change
    per rung at the same budget (training/ladder.py): trains the missing rungs, evaluates
    them together (reports/ladder/) and writes benchmarks/results/ladder.json. Needs the
    pipeline's assembled training set."""
    cfg, ov, log_path = _setup(profile, data_root, "ladder", config)
    from training.ladder import RESULTS_FILE, run_ladder, table  # the JSON says whether recall was measured

    result = _run(run_ladder, cfg, stage="ladder", setup=(cfg, log_path), reuse=not retrain,
                  full_catalog=not judged_only, results_file=RESULTS_FILE)
    typer.echo(table(result))
    _where(cfg, log_path)


@app.command("label-budget")
def label_budget(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    fractions: list[float] = typer.Option(None, "--fraction", help="Shares of the train queries whose judgments are "
                                          "kept (repeatable; default 0.05 and 0.2; 1 is always run)."),
):
    """The label-budget experiment (training/label_budget.py): the whole pipeline once per
    share of the train queries' judgments kept (dataset.train_label_fraction, each on a data
    root of its own), the student, the peer recipe and click-trained compared at each;
    writes benchmarks/results/label_budget.json and reports/experiments/label_budget.html."""
    cfg, ov, log_path = _setup(profile, data_root, "label-budget", config)
    from flows.label_budget import label_budget_flow
    from training.label_budget import table

    result = _run(label_budget_flow, profile, ov, list(fractions) if fractions else None, stage="label-budget",
                  setup=(cfg, log_path))
    typer.echo(table(result))
    _where(cfg, log_path)


@app.command()
def attributes(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
               config: Optional[Path] = ConfigOpt):
    """Query attribute extraction: mine a lexicon from the catalog, weakly label the train
    queries, train the MiniLM + CRF tagger, tag every query (attributes/query_attributes.parquet)
    and measure span P/R/F1 per type on the hand gold set (reports/attributes/report.html)."""
    def show(res: dict) -> dict:
        ev = (res.get("evaluation") or {}).get("splits") or {}
        return {"stats": res["stats"],
                "micro_f1": {sp: {k: s[k]["micro"]["f1"] for k in ("tagger", "weak_labels", "dictionary_baseline")}
                             for sp, s in ev.items()},
                "query_attributes": res["query_attributes"], "tagger": res["tagger"]}

    _stage("attributes", profile, data_root, config, show=show, indent=1)


@app.command()
def grade(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
        config: Optional[Path] = ConfigOpt):
    """Grade every mined (query, item) pair with a calibrated cascade of teachers
    (GBM on cheap pair features -> fine-tuned cross-encoder -> cross-encoder ensemble),
    trained on train-split human judgments and calibrated on dev. Grades in resumable
    chunks, publishes relevance_grade_fv and the grade-refined retrieval_prior_fv through
    the validation gate, writes grading/grades.parquet and reports/grading/report.html."""
    def show(res: dict) -> dict:
        c = res["metrics"]["cascade"]
        return {"pairs": res["union"]["pairs"], "thresholds": res["thresholds"],
                "test_qwk": {k: round(v["qwk"], 4) for k, v in res["metrics"].items() if "qwk" in v},
                "test_rmse_cascade": round(c.get("rmse_raw") or c["rmse_grade"], 4),
                "random_probe_grade0": res["probe"]["grade_0_share"], "union_reach_share": res["union"]["reach_share"],
                "total_s": round(res["timings_s"]["total"], 1), "report": res["report"]["html"]}

    _stage("grade", profile, data_root, config, show=show)


@app.command()
def pipeline(
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    until: str = typer.Option("evaluate", "--until", help="Stop after this stage (ingest, simulate, materialize, mine, attributes, grade, assemble, train, evaluate)."),
):
    """Run every stage in order: ingest, simulate, materialize, mine, attributes, grade,
    assemble, train, evaluate. Finished stages are cached and skipped on rerun."""
    from flows.stages import STAGES

    if until not in STAGES:
        import difflib

        close = difflib.get_close_matches(until, STAGES, n=1)
        typer.secho(f"relgrade pipeline: --until {until!r} is not a stage"
                    + (f" (did you mean {close[0]!r}?)" if close else "") + f"; stages: {', '.join(STAGES)}",
                    fg="red", err=True)
        raise typer.Exit(2)
    cfg, ov, log_path = _setup(profile, data_root, "pipeline", config)
    from flows.pipeline import pipeline_flow

    result = _run(pipeline_flow, profile, ov, stage="pipeline", setup=(cfg, log_path), until=until)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "locations"}, default=str)[:4000])
    _where(cfg, log_path)


@app.command()
def serve(
    profile: str = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default relgrade-<profile>)."),
    cron: Optional[str] = typer.Option(None, "--cron", help="Run on this cron schedule (UTC), e.g. '0 3 * * *'."),
    interval_minutes: Optional[int] = typer.Option(None, "--interval-minutes", help="Or every N minutes."),
    until: str = typer.Option("evaluate", "--until", help="Last stage of each run."),
    register_only: bool = typer.Option(False, "--register-only",
                                       help="Register (or update) the deployment and exit instead of serving it."),
):
    """Register the pipeline as a Prefect deployment (`pipeline/<name>`) with an optional
    schedule, and serve it: scheduled runs, and runs started from the UI or with
    `prefect deployment run pipeline/<name>`, execute in this process's environment until
    it is stopped (Ctrl-C pauses the schedule). Needs a Prefect server (PREFECT_API_URL,
    e.g. after `prefect server start`)."""
    import os

    from flows.stages import STAGES

    if until not in STAGES:
        typer.secho(f"relgrade serve: --until {until!r} is not a stage; stages: {', '.join(STAGES)}", fg="red", err=True)
        raise typer.Exit(2)
    if not os.environ.get("PREFECT_API_URL"):
        typer.secho("relgrade serve: set PREFECT_API_URL to a Prefect server (e.g. `prefect server start`, then "
                    "PREFECT_API_URL=http://127.0.0.1:4200/api): a deployment lives on a server", fg="red", err=True)
        raise typer.Exit(2)
    cfg, _, _ = _setup(profile, None, "serve", config)
    from prefect.deployments.runner import EntrypointType

    from flows.pipeline import pipeline_flow

    params = {"profile": profile, "until": until}
    if config is not None:
        params["config_file"] = str(Path(config).expanduser().resolve())
    dep = pipeline_flow.to_deployment(
        name=name or f"relgrade-{profile}", parameters=params, cron=cron,
        interval=interval_minutes * 60 if interval_minutes else None, tags=["relgrade", profile],
        description=f"relgrade pipeline, profile {profile}, data root {cfg.paths.root}",
        entrypoint_type=EntrypointType.MODULE_PATH)
    if register_only:
        dep_id = dep.apply()
        typer.echo(f"deployment pipeline/{dep.name} registered ({dep_id}); start runs with "
                   f"`prefect deployment run pipeline/{dep.name}` while `relgrade serve` runs")
        return
    from prefect import serve as prefect_serve

    prefect_serve(dep)


@app.command()
def features(
    entities: Path = typer.Argument(..., help="Parquet or CSV with query_id, item_id, event_timestamp."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the joined Parquet."),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
    feature: list[str] = typer.Option(None, "--feature", help="view:feature refs (default: the training feature service)."),
):
    """Point-in-time feature retrieval through Feast for your own entity rows."""
    cfg, _, _ = _setup(profile, data_root, "features", config)
    import pandas as pd

    from relgrade.featurestore import historical_features
    from relgrade.io import write_parquet_atomic

    def join() -> pd.DataFrame:
        ent = (pd.read_parquet(entities) if entities.suffix == ".parquet"
               else pd.read_csv(entities, dtype={"query_id": str, "item_id": str}))
        ent["event_timestamp"] = pd.to_datetime(ent["event_timestamp"], utc=True)
        return historical_features(cfg, ent, feature or None)

    df = _run(join, stage="features", setup=(cfg, None))
    write_parquet_atomic(df, out)
    typer.echo(f"{len(df)} rows -> {out}")


@app.command()
def label(
    pairs: Path = typer.Argument(..., help="CSV or Parquet: `query` (text) or `query_id`, and `item_id` or `title`."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the graded pairs (.csv or .parquet)."),
    profile: str = ProfileOpt,
    data_root: Optional[str] = DataRootOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Grade any pairs with this data root's trained teacher cascade (the same thresholds
    and caps as the union): grade, expected grade, p_grade_0..3, confidence, deciding
    stage and teacher version. Nothing is written unless every pair could be graded."""
    cfg, _, _ = _setup(profile, data_root, "label", config)
    from relgrade.grading.label import label_pairs, read_pairs

    if out.suffix.lower() not in (".csv", ".parquet"):
        typer.secho(f"relgrade label: --out must end in .csv or .parquet, got {out}", fg="red", err=True)
        raise typer.Exit(2)
    df = _run(lambda: label_pairs(cfg, read_pairs(pairs)), stage="label", setup=(cfg, None))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    tmp.replace(out)
    counts = df["grade"].value_counts().sort_index().to_dict()
    typer.echo(f"{len(df)} pairs graded -> {out}  (grades {counts})")


INIT_CONFIG = """# relgrade project: your data and your settings. This file holds only what differs from
# the defaults; `relgrade config --config {name}` prints every setting. Relative paths
# resolve against this folder. See README.md beside it and docs/own_data.md.
data_root: var                 # everything relgrade writes: contract tables, features, models, reports
dataset:
  adapter: contract
  catalog_path: data/catalog.csv          # item_id, title [, description, brand, category, attributes]
  judgments_path: data/judgments.csv      # query (or query_id), item_id, label (or grade 0..3)
  queries_path: null                      # optional: query_id, text [, split]
  encoding: utf-8
  label_cuts: {label_cuts}             # numeric labels -> grades 0..3 (or label_map for categories)
  label_range: {label_range}             # your labels' scale [low, high]: a label outside it is refused
engagement:
  source: log                             # your search log instead of the simulator
  log_path: data/events.csv.gz            # event_ts, search_id, query (or query_id), item_id, position, ...
mining:
  snapshot_ts: "{snapshot}"   # the instant your log ends: mining snapshot and training cut
attributes:
  gold_path: null                         # optional: your hand-tagged dev/test queries (docs/attributes.md)
"""

INIT_README = """# A relgrade project

`relgrade.yaml` is this project's configuration; `data/` holds its input files. They are
a small working example (150 Home Depot queries, their judgments, and a 10-day search
log): replace them with your own, in the same columns, and adjust `relgrade.yaml`.

| file | columns |
|---|---|
| `data/catalog.csv` | `item_id, title`, optionally `description, brand, category, attributes` (JSON) |
| `data/judgments.csv` | `query` (text) or `query_id`, `item_id`, and `label` (your scale: `dataset.label_cuts` or `dataset.label_map` map it to grades 0..3) or `grade` (0..3) |
| `data/events.csv.gz` | your search log: `event_ts` (UTC), `search_id`, `query` or `query_id`, `item_id`, `position` (1-based), `slot` (organic/ad), `impression`, `click`, `add_to_cart`, `order` |

Run everything (outputs under `var/`):

```bash
relgrade pipeline --config relgrade.yaml
```

Each stage alone: `relgrade ingest|simulate|materialize|mine|grade|assemble|train|evaluate --config relgrade.yaml`
(`simulate` reads your log when `engagement.source` is `log`). Grade any pairs with the
trained teachers: `relgrade label pairs.csv -o graded.csv --config relgrade.yaml`.
"""


@app.command()
def init(
    folder: Path = typer.Argument(..., help="A new (or empty) project folder."),
    example: bool = typer.Option(True, "--example/--no-example",
                                 help="Copy the small working example into data/ (default)."),
):
    """Start a project of your own outside the repository: `relgrade.yaml` (the settings to
    fill), a README of the files to provide, and data/ (a small working example)."""
    import shutil

    from relgrade.config import REPO_ROOT

    folder = folder.expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        typer.secho(f"relgrade init: {folder} exists and is not empty: give a new folder", fg="red", err=True)
        raise typer.Exit(2)
    src = REPO_ROOT / "examples" / "contract_small"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir()
    if example:
        for name in ("catalog.csv", "judgments.csv", "events.csv.gz"):
            shutil.copy2(src / name, folder / "data" / name)
    import yaml

    snapshot = (src / "SNAPSHOT").read_text().strip()
    scale = yaml.safe_load((src / "LABELS.yaml").read_text())  # the example's 1..3 scale and its cuts
    (folder / "relgrade.yaml").write_text(INIT_CONFIG.format(
        name="relgrade.yaml", snapshot=snapshot, label_cuts=json.dumps(scale["label_cuts"]),
        label_range=json.dumps(scale["label_range"])))
    (folder / "README.md").write_text(INIT_README)
    typer.echo(f"project created in {folder}:\n  {folder / 'relgrade.yaml'}\n  {folder / 'README.md'}\n"
               f"  {folder / 'data'}/\nrun: relgrade pipeline --config {folder / 'relgrade.yaml'}")


@app.command("config")
def show_config(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt,
                config: Optional[Path] = ConfigOpt):
    """Print the resolved configuration of a profile (defaults + profile + your file) as YAML."""
    import yaml

    from relgrade.config import ConfigError, load_config

    if config is not None:
        os.environ["RELGRADE_CONFIG"] = str(Path(config).expanduser().resolve())
    try:
        cfg = load_config(profile, overrides={"data_root": data_root} if data_root else None)
    except ConfigError as exc:
        _refuse(exc, "config")
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command()
def contract():
    """Print the canonical data contract (tables, columns, types)."""
    from relgrade.contract import describe_markdown

    typer.echo(describe_markdown())


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
