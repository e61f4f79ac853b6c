"""Test session setup: Prefect, Great Expectations and Hugging Face point at a private
temporary home before any of them is imported, and nothing may touch the network."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="relgrade-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_HOME / "prefect"))
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(_HOME / "prefect" / "storage"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# every `auto` precision resolves to fp32, so the suite tests what a CPU without AMX runs
# whatever CPU it lands on (relgrade/numerics.py; scripts/test.sh exports it too)
os.environ.setdefault("RELGRADE_PRECISION", "fp32")
os.environ.pop("RELGRADE_PROFILE", None)
os.environ.pop("RELGRADE_DATA_ROOT", None)



@pytest.fixture
def quick_cfg(tmp_path):
    """The quick profile with its data root in a fresh temporary folder."""
    from relgrade.config import load_config

    return load_config("quick", overrides={"data_root": str(tmp_path / "data")})


# ----------------------------------------------------------------- the grade stage's world (tests/grading_world.py)
@pytest.fixture(scope="session")
def grading_root(tmp_path_factory):
    """A tiny real data root, mined (shared by the teacher, grade-flow and behaviour tests)."""
    from grading_world import build_root

    return build_root(tmp_path_factory.mktemp("grading"))


@pytest.fixture(scope="session")
def grading_fitted(grading_root):
    """Its teachers and calibration, trained in-process (cached under the root's models/teachers)."""
    from grading_world import fit

    return fit(grading_root)


@pytest.fixture(scope="session")
def grading_run(grading_root):
    """The grade flow on that root, run once for the tests that read its outputs."""
    from flows.grade import grade_flow

    return grade_flow("quick", grading_root["overrides"])


def pytest_unconfigure(config):
    """Prefect stops its temporary API server from an atexit hook and logs that to a
    console bound to pytest's capture stream, closed by then: without this, a harmless
    "--- Logging error ---" traceback follows the test summary."""
    import logging

    logging.raiseExceptions = False
