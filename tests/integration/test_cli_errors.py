"""Bad input reads as a few lines: the installed `relgrade` command, in its own process with
its own Prefect server, on a temporary data root, for a catalog that is not a zip, a
missing column, a bad config value and an unknown item id in judgments; `--debug` shows
the traceback. And a project of your own carries nothing of Home Depot: `relgrade init`
writes no Home Depot path, and the blind-rating audit reports "not available" there."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

RELGRADE = Path(sys.executable).with_name("relgrade")
MAX_LINES = 10
WRITTEN_ON_REFUSAL = {"logs", "prefect", "locks"}  # the run log, Prefect's own database, the stage lock


def _env(**extra: str) -> dict:
    """A user's shell: no Prefect server, no relgrade variables, no network for models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RELGRADE_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def _relgrade(*args: str, cwd: Path, **env: str) -> tuple[int, list[str], str]:
    r = subprocess.run([str(RELGRADE), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    return r.returncode, out.splitlines(), out


def _config(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"data_root": f"var-{name}", **doc}, sort_keys=False))
    return path


def _contract(tmp_path: Path, catalog: pd.DataFrame | None = None, judgments: pd.DataFrame | None = None) -> dict:
    cat = catalog if catalog is not None else pd.DataFrame({"item_id": ["1", "2", "3"],
                                                            "title": ["a cordless drill", "a hand saw", "a lamp"]})
    j = judgments if judgments is not None else pd.DataFrame({"query": ["drill", "saw", "lamp"],
                                                              "item_id": ["1", "2", "3"], "label": [3, 1, 2]})
    n = len(list(tmp_path.glob("catalog*.csv")))
    cp, jp = tmp_path / f"catalog{n}.csv", tmp_path / f"judgments{n}.csv"
    cat.to_csv(cp, index=False)
    j.to_csv(jp, index=False)
    return {"dataset": {"adapter": "contract", "catalog_path": cp.name, "judgments_path": jp.name,
                        "encoding": "utf-8", "label_cuts": [1.5, 2.0, 2.5], "label_range": [1, 3]}}


def _refused(tmp_path: Path, cfg: Path, code: int, lines: list[str], out: str, *expected: str) -> None:
    """Exit 2, at most MAX_LINES lines, no traceback, the expected words, nothing written."""
    assert code == 2, out
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n{out}"
    assert "Traceback" not in out and "Finished in state Failed" not in out, out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "relgrade --debug" in out, out  # says how to see the traceback
    root = tmp_path / yaml.safe_load(cfg.read_text())["data_root"]
    if root.exists():
        assert {p.name for p in root.iterdir()} <= WRITTEN_ON_REFUSAL, sorted(p.name for p in root.iterdir())
        assert not list(root.rglob("*.parquet")) and not (root / "contract").exists()


@pytest.mark.integration
def test_a_catalog_that_is_not_a_zip_is_a_few_lines_from_ingest_and_the_pipeline(tmp_path):
    (tmp_path / "train.csv.zip").write_text("id,product_uid,product_title,search_term,relevance\n")  # a CSV, named .zip
    cfg = _config(tmp_path, "notzip", {"dataset": {"adapter": "homedepot", "path": "train.csv.zip"}})
    for command in ("ingest", "pipeline"):
        code, lines, out = _relgrade(command, "--config", str(cfg), cwd=tmp_path)
        _refused(tmp_path, cfg, code, lines, out, f"relgrade {command}: input refused",
                 f"file   : {tmp_path / 'train.csv.zip'}", "setting dataset.path", "not a readable zip archive",
                 "hint")
    # the run log keeps the tracebacks the terminal was spared
    logs = sorted((tmp_path / "var-notzip" / "logs").glob("pipeline-*.log"))
    assert logs and "Traceback" in logs[-1].read_text() and "ContractError" in logs[-1].read_text()


@pytest.mark.integration
def test_a_missing_column_names_the_file_the_column_and_the_setting(tmp_path):
    doc = _contract(tmp_path, catalog=pd.DataFrame({"item_id": ["1", "2", "3"], "name": ["a", "b", "c"]}))
    cfg = _config(tmp_path, "column", doc)
    code, lines, out = _relgrade("ingest", "--config", str(cfg), cwd=tmp_path)
    _refused(tmp_path, cfg, code, lines, out, "relgrade ingest: input refused", "catalog0.csv",
             "setting dataset.catalog_path", "missing column(s) ['title']; found ['item_id', 'name']")


@pytest.mark.integration
def test_an_unknown_item_id_in_judgments_names_it(tmp_path):
    doc = _contract(tmp_path, judgments=pd.DataFrame({"query": ["drill", "saw"], "item_id": ["1", "404"],
                                                      "label": [3, 1]}))
    cfg = _config(tmp_path, "unknown", doc)
    code, lines, out = _relgrade("ingest", "--config", str(cfg), cwd=tmp_path)
    _refused(tmp_path, cfg, code, lines, out, "judgments0.csv", "setting dataset.judgments_path",
             "1 judgment(s) name an item_id missing from", "'404'")


def test_a_bad_config_value_names_file_key_and_value(tmp_path):
    cfg = _config(tmp_path, "value", {**_contract(tmp_path), "simulation": {"days": 0}})
    code, lines, out = _relgrade("ingest", "--config", str(cfg), cwd=tmp_path)
    _refused(tmp_path, cfg, code, lines, out, "relgrade ingest: bad configuration", f"{cfg}: simulation.days = 0",
             "greater than or equal to 1", "hint")
    assert not (tmp_path / "var-value").exists()  # refused before anything ran
    # and a bad label scale, from the command that prints the config
    cfg = _config(tmp_path, "scale", {"dataset": {"adapter": "contract", "label_range": [3, 1]}})
    code, lines, out = _relgrade("config", "--config", str(cfg), cwd=tmp_path)
    _refused(tmp_path, cfg, code, lines, out, "dataset.label_range", "low < high")


@pytest.mark.integration
def test_a_label_outside_the_scale_is_refused_with_its_line(tmp_path):
    doc = _contract(tmp_path, judgments=pd.DataFrame({"query": ["drill", "saw"], "item_id": ["1", "2"],
                                                      "label": [3, 7.5]}))
    cfg = _config(tmp_path, "scale", doc)
    code, lines, out = _relgrade("ingest", "--config", str(cfg), cwd=tmp_path)
    _refused(tmp_path, cfg, code, lines, out, "outside dataset.label_range [1, 3], first on line 3: '7.5'")


@pytest.mark.integration
def test_a_batch_the_validation_gate_refuses_is_one_short_refusal(tmp_path):
    doc = _contract(tmp_path, judgments=pd.DataFrame({"query": ["drill", "saw"], "item_id": ["1", "2"],
                                                      "label": [3, 3]}))  # one grade only: a broken label set
    cfg = _config(tmp_path, "gate", doc)
    code, lines, out = _relgrade("ingest", "--config", str(cfg), cwd=tmp_path)
    assert code == 2, out
    start = next(i for i, ln in enumerate(lines) if ln.startswith("relgrade ingest: input refused by validation"))
    refusal = lines[start:]
    assert len(refusal) <= MAX_LINES, "\n".join(refusal)
    assert "suite judgments" in refusal[0] and "Traceback" not in out and "Finished in state Failed" not in out, out
    assert any("expect_column_stdev_to_be_between(grade)" in ln for ln in refusal), out
    assert any(ln.strip().startswith("validation page:") for ln in refusal) and "relgrade --debug" in out
    assert out.count("expect_column_stdev_to_be_between(grade)") == 1, out  # the report once, not twice
    root = tmp_path / "var-gate"
    assert not (root / "contract").exists() and not list(root.rglob("*.parquet"))  # nothing landed


@pytest.mark.integration
def test_debug_shows_the_traceback(tmp_path):
    doc = _contract(tmp_path, judgments=pd.DataFrame({"query": ["drill"], "item_id": ["404"], "label": [3]}))
    cfg = _config(tmp_path, "debug", doc)
    code, lines, out = _relgrade("--debug", "ingest", "--config", str(cfg), cwd=tmp_path)
    assert code == 2, out
    assert "Traceback (most recent call last)" in out and "relgrade.contract.ContractError" in out, out
    assert "relgrade/adapters/contract.py" in out  # where it was raised
    assert "Task run failed with exception" in out  # Prefect's own report, kept with --debug
    code, _, out = _relgrade("config", "--config", str(_config(tmp_path, "debug2", {"mining": {"k": 0}})),
                             cwd=tmp_path, RELGRADE_DEBUG="1")
    assert code == 2 and "Traceback (most recent call last)" in out and "ConfigError" in out, out


# --------------------------------------------------------------------------- a project of your own
def test_init_writes_a_config_with_no_home_depot_path(tmp_path):
    code, _, out = _relgrade("init", str(tmp_path / "proj"), cwd=tmp_path)
    assert code == 0, out
    written = (tmp_path / "proj" / "relgrade.yaml").read_text()
    doc = yaml.safe_load(written)
    assert doc["dataset"]["label_range"] == [1, 3] and doc["dataset"]["label_cuts"] == [1.5, 2.0, 2.5]
    ex = pd.read_csv(tmp_path / "proj" / "data" / "judgments.csv")
    assert ex["label"].between(*doc["dataset"]["label_range"]).all()  # the example fits its declared scale
    code, _, full = _relgrade("config", "--config", str(tmp_path / "proj" / "relgrade.yaml"), cwd=tmp_path)
    assert code == 0, full
    resolved = yaml.safe_load(full)
    assert "homedepot" not in written.lower() and "homedepot" not in full.lower(), [
        ln for ln in full.splitlines() if "homedepot" in ln]
    assert resolved["dataset"]["blind_ratings_path"] is None and resolved["dataset"]["path"] is None
    assert resolved["dataset"]["label_range"] == [1.0, 3.0]


def test_the_blind_audit_is_not_available_without_blind_ratings_and_reads_the_bundled_file_by_default(tmp_path):
    from relgrade.config import load_config
    from relgrade.grading.probes import blind_agreement

    blind = pd.read_csv(Path(__file__).resolve().parents[2] / "data" / "homedepot" / "blind_ratings.csv",
                        dtype={"query_id": str, "item_id": str})
    grades = blind[["query_id", "item_id"]].assign(grade=blind["r1"].clip(1, 3) - 1, expected_grade=1.0)
    default = blind_agreement(load_config("default"), grades)  # the bundled profile: the bundled file
    assert default["file"].endswith("data/homedepot/blind_ratings.csv") and default["unjudged"]["pairs"] > 0
    assert "available" not in default  # its summary keeps the keys it had
    own = _config(tmp_path, "own", _contract(tmp_path))
    res = blind_agreement(load_config("default", config_file=own), grades)
    assert res == {"available": False, "reason": "no blind ratings configured (dataset.blind_ratings_path)"}
    # a configured file that is missing, or that shares no pair with the grades: not available either
    gone = load_config("default", config_file=own, overrides={"dataset": {"blind_ratings_path": str(tmp_path / "x.csv")}})
    assert blind_agreement(gone, grades)["available"] is False
    assert blind_agreement(load_config("default"), grades.assign(item_id="none"))["available"] is False


def test_the_grading_report_says_not_available(tmp_path):
    from relgrade.config import load_config
    from relgrade.grading.probes import blind_agreement
    from relgrade.grading.report import blind_section

    own = load_config("default", config_file=_config(tmp_path, "own", _contract(tmp_path)))
    grades = pd.DataFrame({"query_id": ["q1"], "item_id": ["1"], "grade": [2], "expected_grade": [2.0]})
    html = blind_section(blind_agreement(own, grades))
    assert "Not available: no blind ratings configured (dataset.blind_ratings_path)." in html
    assert "<table" not in html
    blind = pd.read_csv(Path(__file__).resolve().parents[2] / "data" / "homedepot" / "blind_ratings.csv",
                        dtype={"query_id": str, "item_id": str})
    bundled = blind_section(blind_agreement(load_config("default"), blind.assign(grade=1, expected_grade=1.0)))
    assert "Published grades against them" in bundled and "Not available" not in bundled
