"""Hostile input and rough operation (docs/reliability.md): every failure clear, nothing
silently wrong, nothing lost. Each test names the probe it reproduces."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
HD = REPO / "data" / "homedepot" / "train.csv.zip"
COLUMNS = "id,product_uid,product_title,search_term,relevance\n"


def _hd_rows(n: int = 400) -> str:
    raw = zipfile.ZipFile(HD).read("train.csv").decode("latin-1")
    lines = raw.splitlines()
    return "\n".join(lines[: n + 1]) + "\n"


def _ingest(tmp_path, path: Path, **dataset):
    from flows.ingest import ingest_flow

    ov = {"data_root": str(tmp_path / "var"), "dataset": {"path": str(path), "max_queries": None, **dataset}}
    return ingest_flow("quick", ov), ov


# --------------------------------------------------------------------------- 1. not a zip
@pytest.mark.parametrize("make", ["not a zip", "truncated zip"])
def test_a_bad_zip_is_bad_input_named_and_not_retried(tmp_path, make, caplog):
    from relgrade.contract import ContractError

    path = tmp_path / "train.csv.zip"
    if make == "not a zip":
        path.write_text("id,product_uid\n1,2\n")
    else:
        path.write_bytes(HD.read_bytes()[:50_000])
    caplog.set_level("INFO")
    with pytest.raises(ContractError) as exc:
        _ingest(tmp_path, path)
    assert str(path) in str(exc.value) and "zip" in str(exc.value)
    assert "Retry" not in caplog.text  # bad input is never retried
    assert not (tmp_path / "var" / "contract" / "catalog.parquet").exists()


# --------------------------------------------------------------------------- 2. duplicate ids
def test_a_row_id_twice_with_conflicting_relevance_is_refused(tmp_path):
    from relgrade.contract import ContractError

    rows = _hd_rows(50).splitlines()
    first = rows[1].rsplit(",", 1)[0]
    p = tmp_path / "train.csv"
    p.write_text("\n".join(rows + [first + ",1"]) + "\n", encoding="latin-1")
    with pytest.raises(ContractError, match="appear more than once with different content"):
        _ingest(tmp_path, p, encoding="latin-1")


def test_an_exact_duplicate_row_is_kept_once_with_a_warning(tmp_path, caplog):
    rows = _hd_rows(50).splitlines()
    p = tmp_path / "train.csv"
    p.write_text("\n".join(rows + [rows[1]]) + "\n", encoding="latin-1")
    caplog.set_level("WARNING")
    out, _ = _ingest(tmp_path, p, encoding="latin-1")
    assert "1 exact duplicate row(s)" in caplog.text
    assert out["rows"]["judgments"] == len(rows) - 1  # the duplicate is one judgment


# --------------------------------------------------------------------------- 3. UTF-8 read as Latin-1
def test_a_utf8_file_read_as_latin1_is_decoded_as_utf8_with_a_warning(tmp_path, caplog):
    from relgrade.io import read_parquet

    text = _hd_rows(30).replace("Simpson Strong-Tie", "Simpson Strong-Tie Crème")
    p = tmp_path / "train.csv"
    p.write_bytes(text.encode("utf-8"))
    caplog.set_level("WARNING")
    _ingest(tmp_path, p, encoding="latin-1")
    assert "valid UTF-8" in caplog.text
    titles = read_parquet(tmp_path / "var" / "contract" / "catalog.parquet")["title"]
    assert titles.str.contains("Crème").any() and not titles.str.contains("Ã").any()


# --------------------------------------------------------------------------- 4. empty search terms
def test_empty_search_terms_are_an_error_with_a_count(tmp_path):
    from relgrade.contract import ContractError

    import csv

    recs = list(csv.reader(io.StringIO(_hd_rows(40))))
    for r in recs[1:4]:
        r[3] = "  "
    out = io.StringIO()
    csv.writer(out).writerows(recs)
    p = tmp_path / "train.csv"
    p.write_text(out.getvalue(), encoding="latin-1")
    with pytest.raises(ContractError, match="3 row\\(s\\) have an empty search_term"):
        _ingest(tmp_path, p, encoding="latin-1")


# --------------------------------------------------------------------------- 5. negative learning rates
@pytest.mark.parametrize("override", [
    {"grading": {"stages": [{"kind": "gbm", "learning_rate": -0.06}]}},
    {"grading": {"stages": [{"kind": "gbm"}, {"kind": "cross_encoder", "name": "ce2", "learning_rate": -1e-4}]}},
    {"training": {"curriculum": [{"name": "x", "levels": [1], "loss": "cosent", "learning_rate": -1}]}},
])
def test_negative_learning_rates_are_refused(override):
    from relgrade.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="learning_rate = -"):
        load_config("default", overrides=override)


# --------------------------------------------------------------------------- 6. reruns never go backwards
@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The quick pipeline on a small slice, end to end."""
    from flows.pipeline import pipeline_flow

    root = tmp_path_factory.mktemp("full")
    ov = _small(root / "a")
    pipeline_flow("quick", ov)
    return {"root": root, "overrides": ov}


def _small(root: Path) -> dict:
    from test_own_data import FAST

    return {"data_root": str(root), **FAST, "dataset": {"max_queries": 120}}


def _views(ov) -> dict:
    from flows.runtime import view_digests
    from relgrade.config import load_config

    return view_digests(load_config("quick", overrides=ov), ["retrieval_prior_fv", "relevance_grade_fv",
                                                             "gated_engagement_fv"])


@pytest.mark.integration
def test_rerunning_any_stage_after_the_pipeline_changes_no_view(full):
    """`relgrade materialize` rerun on its own after assemble used to reset the gated
    preferences assemble had written at the cut; now every stage, rerun in any order,
    leaves every view as its last writer meant it."""
    from flows.assemble import assemble_flow
    from flows.evaluate import evaluate_flow
    from flows.grade import grade_flow
    from flows.ingest import ingest_flow
    from flows.materialize import materialize_flow
    from flows.mine import mine_flow
    from flows.simulate import simulate_flow
    from flows.train import train_flow
    from relgrade.config import load_config
    from relgrade.featurestore import read_offline

    ov = full["overrides"]
    before = _views(ov)
    cfg = load_config("quick", overrides=ov)
    gated = read_offline(cfg, "gated_engagement_fv")["gated_preference"].notna().sum()
    assert gated > 0
    for flow in (materialize_flow, mine_flow, ingest_flow, simulate_flow, materialize_flow, grade_flow,
                 assemble_flow, train_flow, evaluate_flow, materialize_flow):
        flow("quick", ov)
        assert _views(ov) == before, flow.name
    assert read_offline(cfg, "gated_engagement_fv")["gated_preference"].notna().sum() == gated


@pytest.mark.integration
def test_two_fresh_data_roots_give_identical_trainsets_and_metrics(full, tmp_path):
    from flows.pipeline import pipeline_flow

    ov = _small(tmp_path / "b")
    pipeline_flow("quick", ov)
    a, b = Path(full["overrides"]["data_root"]), Path(ov["data_root"])
    ma = json.loads((a / "training" / "manifest.json").read_text())
    mb = json.loads((b / "training" / "manifest.json").read_text())
    assert ma["content_hash"] == mb["content_hash"]
    ea = json.loads((a / "reports" / "evaluation" / "report.json").read_text())
    eb = json.loads((b / "reports" / "evaluation" / "report.json").read_text())
    assert ea["models"] == eb["models"]


# --------------------------------------------------------------------------- 7. kill -9
def test_kill_9_of_relgrade_takes_its_prefect_server_with_it(tmp_path):
    root = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HF_HUB_OFFLINE"] = "1"
    cli = Path(sys.executable).with_name("relgrade")
    proc = subprocess.Popen([str(cli), "ingest", "--profile", "quick", "--data-root", str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    info = root / "prefect" / "server.json"
    try:
        t0 = time.monotonic()
        while not info.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert info.exists(), "the CLI never started its server"
        server = json.loads(info.read_text())["pid"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        t0 = time.monotonic()
        alive = True
        while time.monotonic() - t0 < 30:
            try:
                os.kill(server, 0)
                if Path(f"/proc/{server}/stat").read_text().split()[2] == "Z":
                    alive = False
                    break
            except (ProcessLookupError, FileNotFoundError):
                alive = False
                break
            time.sleep(0.3)
        assert not alive, f"the Prefect server (pid {server}) outlived the CLI"
    finally:
        if proc.poll() is None:
            proc.kill()


# --------------------------------------------------------------------------- weak messages
def test_a_second_run_of_a_stage_waits_and_says_who_holds_it(tmp_path, caplog):
    import threading

    from flows.runtime import StageLocked, stage_lock
    from relgrade.config import load_config

    cfg = load_config("quick", overrides={"data_root": str(tmp_path)})
    with stage_lock(cfg, "grade"):
        with pytest.raises(StageLocked, match=f"stage grade on {tmp_path} is running in pid {os.getpid()}"):
            with stage_lock(cfg, "grade", wait_s=0):
                pass
        caplog.set_level("WARNING")
        got = []
        t = threading.Thread(target=lambda: got.append(stage_lock(cfg, "grade", wait_s=30).__enter__()))
        t.start()
        time.sleep(1.5)
        assert not got  # still waiting
    t.join(timeout=10)
    assert got and "waiting for it to finish" in caplog.text
    got[0].__exit__(None, None, None)


@pytest.mark.parametrize("make, message", [
    (lambda q, i: pd.DataFrame({"query_id": q[:3], "item_id": ["nope"] * 3, "rank": [1, 2, 3], "score": [3.0, 2, 1]}),
     "names an item of the catalog"),
    (lambda q, i: pd.DataFrame({"query_id": ["q-unknown"] * 3, "item_id": i[:3], "rank": [1, 2, 3], "score": [3.0, 2, 1]}),
     "none of its queries"),
    (lambda q, i: pd.DataFrame({"query_id": q[:3], "item_id": i[:3], "rank": [1, 2, 3], "score": [float("inf"), 2, 1]}),
     "infinite score"),
])
def test_the_external_channel_refuses_an_empty_or_infinite_channel(tmp_path, make, message):
    from relgrade.contract import ContractError
    from relgrade.mining.channels import ExternalChannel

    cat = pd.DataFrame({"item_id": [f"i{k}" for k in range(5)], "title": ["a", "b", "c", "d", "e"]})
    qs = pd.DataFrame({"query_id": ["q1", "q2", "q3"], "text": ["x", "y", "z"]})
    path = tmp_path / "ext.parquet"
    make(list(qs["query_id"]), list(cat["item_id"])).to_parquet(path)
    with pytest.raises(ContractError, match=message):
        ExternalChannel(path).fit(cat).search(qs, 10)


@pytest.mark.integration
def test_the_external_channel_through_the_cli_lands_whole_and_counts_what_it_drops(full, tmp_path, monkeypatch):
    """`relgrade mine --external` with a file that names an unknown item and an unknown
    query: the known pairs land with their external rank, nothing else, and the drops
    are counted in the mining manifest."""
    import shutil

    from typer.testing import CliRunner

    from relgrade.cli import app
    from relgrade.io import read_parquet

    src = Path(full["overrides"]["data_root"])
    dst = tmp_path / "ext_root"
    for sub in ("contract", "cache"):
        shutil.copytree(src / sub, dst / sub)
    u = read_parquet(next((src / "mining").glob("union_*.parquet")))
    ext = u[["query_id", "item_id"]].head(40).assign(rank=range(1, 41), score=1.0)
    ext = pd.concat([ext, pd.DataFrame({"query_id": [ext["query_id"].iloc[0], "q-nobody"], "item_id": ["nope", ext["item_id"].iloc[0]],
                                        "rank": [99, 1], "score": [1.0, 1.0]})], ignore_index=True)
    path = tmp_path / "ext.parquet"
    ext.to_parquet(path)
    monkeypatch.setenv("RELGRADE_CONFIG", str(REPO / "configs" / "relgrade.yaml"))
    r = CliRunner().invoke(app, ["mine", "--profile", "quick", "--data-root", str(dst), "--external", str(path)])
    assert r.exit_code == 0, r.output[-2000:]
    union = read_parquet(next((dst / "mining").glob("union_*.parquet")))
    got = union[union["rank_external"].notna()]
    assert len(got) == 40 and set(zip(got["query_id"], got["item_id"])) == set(zip(ext["query_id"][:40], ext["item_id"][:40]))
    man = json.loads(next((dst / "mining").glob("manifest_*.json")).read_text())
    stats = man["run_stats"]["channels"]["external"]
    assert stats["channel_rows_unknown_item"] == 1 and stats["channel_rows_unknown_query"] == 1
