"""Every location under one data root: no module invents its own."""
from __future__ import annotations

from pathlib import Path


class Paths:
    """Every location under one data root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # stage outputs (the data contract between stages)
    @property
    def contract(self) -> Path:
        return self.root / "contract"

    def table(self, name: str) -> Path:
        return self.contract / f"{name}.parquet"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def feature_source(self, view: str) -> Path:
        return self.features / f"{view}.parquet"

    def staging(self, view: str) -> Path:
        """A validated-at-publish feature batch waiting for the materialize flow."""
        return self.features / "staging" / f"{view}.parquet"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def validation_pages(self) -> Path:
        return self.reports / "validation"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    # attributes
    @property
    def attributes(self) -> Path:
        return self.root / "attributes"

    @property
    def query_attributes(self) -> Path:
        """One row per query: its tagged spans and structured attributes."""
        return self.attributes / "query_attributes.parquet"

    @property
    def tagger(self) -> Path:
        return self.attributes / "tagger"

    # mining
    @property
    def mining(self) -> Path:
        return self.root / "mining"

    def union(self, snapshot_ts) -> Path:
        """The union table of one mining snapshot."""
        return self.mining / f"union_{_tag(snapshot_ts)}.parquet"

    def channel(self, snapshot_ts, channel: str) -> Path:
        """One retrieval channel's top-K frame of one mining snapshot."""
        return self.mining / "channels" / _tag(snapshot_ts) / f"{channel}.parquet"

    def mining_manifest(self, snapshot_ts) -> Path:
        return self.mining / f"manifest_{_tag(snapshot_ts)}.json"

    @property
    def cache(self) -> Path:
        """Content-addressed caches (embeddings, LLM-judge answers): safe to delete."""
        return self.root / "cache"

    @property
    def pipeline_run(self) -> Path:
        """What the last ``relgrade pipeline`` took: seconds per stage, peak memory."""
        return self.root / "pipeline_run.json"

    def lock(self, stage: str) -> Path:
        return self.root / "locks" / f"{stage}.lock"

    # grading
    @property
    def grading(self) -> Path:
        return self.root / "grading"

    @property
    def grades(self) -> Path:
        return self.grading / "grades.parquet"

    @property
    def test_scores(self) -> Path:
        """The teachers' expected grade for every human-judged pair of the report split
        (the evaluation ranks judged items by it as the distillation reference)."""
        return self.grading / "test_scores.parquet"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def teachers(self) -> Path:
        return self.models / "teachers"

    def report(self, stage: str) -> Path:
        """reports/<stage>/ (report.html, report.json)."""
        return self.reports / stage

    # assemble -> train
    @property
    def training(self) -> Path:
        return self.root / "training"

    @property
    def trainset(self) -> Path:
        """The point-in-time training set (one row per query-item pair, blended target)."""
        return self.training / "trainset.parquet"

    @property
    def trainset_lists(self) -> Path:
        return self.training / "trainset_lists.parquet"

    @property
    def trainset_manifest(self) -> Path:
        return self.training / "manifest.json"

    def model(self, name: str) -> Path:
        """A trained bi-encoder: the pipeline's runs (``student``, ``click_trained``, ``hardneg_human``)
        at models/<name>, every other run under models/experiments/<name>."""
        return self.models / name if name in ("student", "click_trained", "hardneg_human") else self.models / "experiments" / name


def _tag(ts) -> str:
    import pandas as pd

    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y%m%dT%H%M%SZ")
