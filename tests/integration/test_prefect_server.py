"""Prefect as its users drive it: a real `prefect server` on loopback, the quick pipeline
run against it by the CLI, then the flow runs and the stages' artifacts listed through
Prefect's CLI and client (fastapi is pinned below 0.151 for exactly this: docs/stack.md),
and the pipeline registered as a deployment with a schedule."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loopback import free_port, wait_healthy

import pytest
import yaml

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api}
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"{api}/health", proc, 120)
    except RuntimeError as exc:
        pytest.fail(f"prefect server did not start: {exc}")
    yield {"api": api, "env": env, "port": port}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ran(server, tmp_path_factory):
    """The quick pipeline (FAST settings) by the CLI against the server."""
    from test_own_data import FAST

    d = tmp_path_factory.mktemp("pipeline")
    cfg = d / "fast.yaml"
    cfg.write_text(yaml.safe_dump({"data_root": str(d / "var"), **FAST, "dataset": {"max_queries": 120}}))
    env = {**server["env"], "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([str(BIN / "relgrade"), "pipeline", "--profile", "quick", "--config", str(cfg)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": d / "var", "env": env, "config": cfg}


def test_the_cli_lists_flow_runs_and_artifacts(server, ran):
    for args, expect in ((["flow-run", "ls"], "pipeline"), (["flow", "ls"], "grade"),
                         (["artifact", "ls"], "grade-metrics"), (["deployment", "ls"], "")):
        r = subprocess.run([str(BIN / "prefect"), *args], env=ran["env"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout[-1000:], r.stderr[-1000:])
        assert expect in r.stdout, (args, r.stdout[-1500:])


def test_the_client_reads_every_stage_run_and_its_artifacts(server, ran):
    code = """
import asyncio, json
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as c:
        runs = await c.read_flow_runs(limit=200)
        arts = await c.read_artifacts(limit=200)
        tasks, page = [], None
        while page is None or len(page) == 200:  # the server serves at most 200 per request
            page = await c.read_task_runs(limit=200, offset=len(tasks))
            tasks += page
        print(json.dumps({"runs": sorted({r.name for r in runs}), "states": sorted({r.state_type.value for r in runs}),
                          "flows": sorted({(await c.read_flow(r.flow_id)).name for r in runs}),
                          "artifacts": sorted({a.key for a in arts if a.key}),
                          "tasks": sorted({t.name for t in tasks})}))
asyncio.run(main())
"""
    r = subprocess.run([sys.executable, "-c", code], env=ran["env"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"pipeline", "ingest", "simulate-engagement", "materialize", "mine", "grade", "assemble", "train",
            "evaluate"} <= set(doc["flows"])
    assert doc["states"] == ["COMPLETED"]
    for stage in ("mine", "grade", "assemble", "train", "evaluate"):
        assert f"{stage}-metrics" in doc["artifacts"] and f"{stage}-report" in doc["artifacts"], doc["artifacts"]
    # grade and train as visible tasks: teachers, calibration, chunks; every curriculum stage of every model
    tasks = doc["tasks"]
    for name in ("train-gbm", "train-ce2", "calibrate-and-fit-thresholds", "grade-union-chunks"):
        assert any(t == name or t.startswith(name + "-") for t in tasks), (name, tasks)  # Prefect adds "-<hash>"
    from relgrade.config import load_config

    stages = load_config("quick", config_file=ran["config"]).training.curriculum  # the run's own curriculum
    for model in ("student", "click_trained"):
        assert [t for t in tasks if t.startswith(f"{model}-")] == [f"{model}-{i}-{st.name}"
                                                                  for i, st in enumerate(stages, start=1)], tasks


def test_relgrade_serve_registers_a_scheduled_deployment(server, ran):
    r = subprocess.run([str(BIN / "relgrade"), "serve", "--profile", "quick", "--config", str(ran["config"]),
                        "--cron", "0 3 * * *", "--register-only"], env=ran["env"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=ran["env"], capture_output=True, text=True,
                       timeout=120)
    assert "pipeline/relgrade-quick" in r.stdout, r.stdout
    r = subprocess.run([str(BIN / "prefect"), "deployment", "inspect", "pipeline/relgrade-quick"], env=ran["env"],
                       capture_output=True, text=True, timeout=120)
    assert "0 3 * * *" in r.stdout and "quick" in r.stdout, r.stdout[-2000:]
