"""Feast as its users drive it: the repository applies from a fresh clone, every online
write records its materialization interval (so `feast materialize-incremental` continues
where relgrade left off), `feast serve` answers the online views over HTTP, and windowed
engagement never comes back stale."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from loopback import free_port, wait_healthy
from relgrade.config import REPO_ROOT, load_config

pytestmark = pytest.mark.integration
VIEW = "gated_engagement_fv"
FEAST = str(Path(sys.executable).with_name("feast"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from flows.ingest import ingest_flow
    from flows.materialize import materialize_flow
    from flows.simulate import simulate_flow

    root = tmp_path_factory.mktemp("feastops")
    # only engagement online (the default profile's choice): the mined and graded views'
    # sources do not exist in this store, and materialize-incremental reads every online view
    ov = {"data_root": str(root), "dataset": {"max_queries": 100}, "simulation": {"days": 10, "searches_per_day": 200},
          "feast": {"online_views": ["gated_engagement_fv"]}}
    ingest_flow("quick", ov)
    simulate_flow("quick", ov)
    materialize_flow("quick", ov)
    return load_config("quick", overrides=ov)


def test_the_repository_applies_and_plans_on_a_fresh_clone(tmp_path):
    """What `git clone` gives: feature_repo/ and the empty var/default/feast/ it points at."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO_ROOT / "feature_repo", clone / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    tracked = subprocess.run(["git", "ls-files", "var"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    assert tracked == ["var/default/feast/.gitkeep"]
    (clone / "var" / "default" / "feast").mkdir(parents=True)
    for cmd in (["plan"], ["apply"], ["feature-views", "list"], ["feature-services", "list"]):
        r = subprocess.run([FEAST, "-c", str(clone / "feature_repo"), *cmd], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, (cmd, r.stdout[-1500:], r.stderr[-1500:])
    assert "training_v1" in r.stdout and "training_v2" in r.stdout and "serving_v1" in r.stdout


def test_online_writes_record_their_materialization_interval(store):
    from relgrade import featurestore as fs

    fv = fs.get_store(store).get_feature_view(VIEW)
    assert fv.materialization_intervals, "the online write left no interval for materialize-incremental"
    feats = pd.read_parquet(store.paths.feature_source(VIEW))
    end = max(e for _, e in fv.materialization_intervals)
    assert abs((pd.Timestamp(end) - feats["event_timestamp"].max()).total_seconds()) <= 1.0
    # materialize-incremental continues from the recorded end: nothing before it is reloaded
    r = subprocess.run([FEAST, "-c", str(REPO_ROOT / "feature_repo"), "-f", str(store.paths.feast / "feature_store.yaml"),
                        "materialize-incremental", (pd.Timestamp(end) + pd.Timedelta(hours=1)).isoformat()],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout + r.stderr
    assert pd.Timestamp(end).strftime("%Y-%m-%d") in text  # "from <end> to <end + 1h>"


def test_feast_serve_answers_the_online_views_over_http(store):
    port = free_port()
    proc = subprocess.Popen([FEAST, "-c", str(REPO_ROOT / "feature_repo"), "-f", str(store.paths.feast / "feature_store.yaml"),
                             "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/health", proc, 90)
        feats = pd.read_parquet(store.paths.feature_source(VIEW))
        last = feats.sort_values("event_timestamp").groupby(["query_id", "item_id"]).tail(1).head(5)
        body = json.dumps({"feature_service": "serving_v1",
                           "entities": {"query_id": last["query_id"].tolist(), "item_id": last["item_id"].tolist()}})
        req = urllib.request.Request(f"{base}/get-online-features", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = json.loads(r.read())
        names = doc["metadata"]["feature_names"]
        col = names.index("impressions_28d")
        got = [float(v) for v in doc["results"][col]["values"]]
        assert got == last["impressions_28d"].astype(float).tolist()
        assert set(doc["results"][col]["statuses"]) == {"PRESENT"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_feast_ui_serves_the_registry(store):
    """`feast ui` starts on the store relgrade wrote and its API lists the three views
    and both feature services (the web app itself is Feast's, bundled in the wheel)."""
    port = free_port()
    proc = subprocess.Popen([FEAST, "-c", str(REPO_ROOT / "feature_repo"), "-f", str(store.paths.feast / "feature_store.yaml"),
                             "ui", "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> str:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            assert r.status == 200, path
            return r.read().decode()

    try:
        wait_healthy(base + "/", proc, 120)
        assert "<html" in get("/").lower()
        assert "relgrade" in get("/projects-list.json")
        views = get("/api/v1/feature_views?project=relgrade")
        assert all(v in views for v in ("retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv",
                                        "query_attributes_fv")), views[:500]
        services = get("/api/v1/feature_services?project=relgrade")
        assert "training_v1" in services and "serving_v1" in services
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_engagement_is_never_returned_stale(store):
    """A daily engagement snapshot answers for the day it describes; a lookup weeks later
    gets nulls (unknown), not that day's 7-day count as if it were current."""
    from relgrade import featurestore as fs

    feats = pd.read_parquet(store.paths.feature_source(VIEW))
    last = feats.sort_values("event_timestamp").groupby(["query_id", "item_id"]).tail(1).head(40)
    ent = last[["query_id", "item_id"]]
    fresh = fs.historical_features(store, ent.assign(event_timestamp=last["event_timestamp"] + pd.Timedelta(hours=1)),
                                   [f"{VIEW}:impressions_7d"])
    assert fresh["impressions_7d"].astype(float).tolist() == last["impressions_7d"].astype(float).tolist()
    later = fs.historical_features(store, ent.assign(event_timestamp=last["event_timestamp"] + pd.Timedelta(days=21)),
                                   [f"{VIEW}:impressions_7d"])
    assert later["impressions_7d"].isna().all()


def test_the_view_names_code_imports_are_the_ones_the_feature_repo_declares():
    from relgrade import featurestore as fs
    from relgrade import views

    d = fs.definitions()
    assert tuple(d.VIEW_SCHEMAS) == views.FEATURE_VIEWS
    assert all(getattr(d, v).name == v for v in views.FEATURE_VIEWS)
    assert (d.training_v2.name, d.serving_v1.name) == (views.TRAINING_SERVICE, views.SERVING_SERVICE)
    # each training service version names its views; the newest holds them all
    assert d.TRAINING_SERVICES[views.TRAINING_SERVICE] == views.FEATURE_VIEWS
    for name, fvs in d.TRAINING_SERVICES.items():
        assert [p.name for p in getattr(d, name).feature_view_projections] == list(fvs)
    # the query view is keyed by the query alone, every other by (query, item)
    assert [e for e in d.query_attributes_fv.entities] == ["query"]
    assert fs.view_keys(views.QUERY_ATTRIBUTES_FV) == ("query_id",)
    assert all(fs.view_keys(v) == ("query_id", "item_id") for v in views.FEATURE_VIEWS if v != views.QUERY_ATTRIBUTES_FV)
