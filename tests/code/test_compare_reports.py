"""scripts/compare_reports.py: exact by default, a tolerance mode for runs on other
machines (another CPU, fp32 against bf16) that notes the numeric paths apart."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _root(path: Path, ndcg: float, isa: bool) -> Path:
    d = path / "reports" / "evaluation"
    d.mkdir(parents=True)
    doc = {"metrics": {"student": {"ndcg@10": ndcg, "n": 80}}, "generated_at": str(path),
           "numerics": {"precision": {"student_encoding": "bf16" if isa else "fp32"}}}
    (d / "report.json").write_text(json.dumps(doc))
    return path


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "compare_reports.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_exact_by_default_and_within_a_tolerance_across_numeric_paths(tmp_path):
    a = _root(tmp_path / "a", 0.9051, True)
    b = _root(tmp_path / "b", 0.9054, False)
    same = _run(a, a)
    assert same.returncode == 0 and same.stdout == ""
    exact = _run(a, b)
    assert exact.returncode == 1 and "ndcg@10" in exact.stdout and "numerics" in exact.stdout
    tol = _run(a, b, "--atol", "0.001")
    assert tol.returncode == 0, tol.stdout
    assert "note:" in tol.stdout and "numerics" in tol.stdout and "ndcg@10" not in tol.stdout
    tight = _run(a, b, "--atol", "0.0001")
    assert tight.returncode == 1 and "ndcg@10" in tight.stdout
    assert _run(a, b, "--rtol", "0.001").returncode == 0
