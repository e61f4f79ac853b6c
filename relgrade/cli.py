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
    typer.echo(f"  reports       : {p.reports}")
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
def pipeline(profile: str = ProfileOpt, data_root: Optional[str] = DataRootOpt):
    """Run every stage in order (ingest, simulate, materialize, ...); finished stages
    are cached and skipped on rerun."""
    cfg, ov, log_path = _setup(profile, data_root, "pipeline")
    from flows.pipeline import pipeline_flow

    result = _run(pipeline_flow, profile, ov)
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
