"""How far the evaluation moves with the numeric path, on one machine: the pipeline on
fresh data roots, twice on the fp32 path (``RELGRADE_PRECISION=fp32``) and once on the
bf16 path (``bf16``, only where the CPU multiplies bf16: relgrade/numerics.py), every
model's four metrics compared: fp32 against fp32 (what a rerun moves) and bf16 against
fp32 (what a machine with AMX or AVX-512 BF16 moves against one without).

    .venv/bin/python benchmarks/numerics_drift.py [--profile quick] [--root var/numerics]

Writes benchmarks/results/numerics_drift_<profile>.json: per model and metric, each
run's mean and the differences, with the largest absolute difference per comparison.
Each run is the README's pipeline command on its own data root (minutes on the quick
profile, about half an hour each on the default one).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_pipeline(profile: str, root: Path, precision: str) -> float:
    env = {**os.environ, "RELGRADE_PRECISION": precision, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("relgrade")), "pipeline", "--profile", profile,
                    "--data-root", str(root)], env=env, check=True, cwd=REPO)
    return time.perf_counter() - t0


def metrics(root: Path) -> dict:
    rep = json.loads((root / "reports" / "evaluation" / "report.json").read_text())
    return {m: {k: v["all"]["mean"] for k, v in d.items()} for m, d in rep["models"].items()}


def diff(a: dict, b: dict) -> dict:
    out = {m: {k: (a[m][k] - b[m][k]) if a[m].get(k) is not None and b[m].get(k) is not None else None
               for k in a[m]} for m in a if m in b}
    flat = [abs(v) for d in out.values() for v in d.values() if v is not None]
    return {"by_model": out, "max_abs": max(flat) if flat else None}


def main() -> None:
    from relgrade.numerics import cpu_has_bf16, numerics
    from relgrade.config import load_config
    from relgrade.util import write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--root", default="var/numerics")
    args = ap.parse_args()
    base = (REPO / args.root).resolve()
    paths = ["fp32", "fp32"] + (["bf16"] if cpu_has_bf16() else [])
    runs = {}
    for i, prec in enumerate(paths):
        name = f"{prec}_{i}"
        root = base / f"{args.profile}_{name}"
        s = run_pipeline(args.profile, root, prec)
        runs[name] = {"precision": prec, "data_root": str(root), "pipeline_s": round(s, 1), "metrics": metrics(root)}
    out = {"profile": args.profile, "runs": runs,
           "fp32_vs_fp32": diff(runs["fp32_1"]["metrics"], runs["fp32_0"]["metrics"]),
           "numerics": numerics(load_config(args.profile))}
    if "bf16_2" in runs:
        out["bf16_vs_fp32"] = diff(runs["bf16_2"]["metrics"], runs["fp32_0"]["metrics"])
    else:
        out["bf16_vs_fp32"] = None
        out["note"] = "this CPU does not multiply bf16: the bf16 path was not run"
    dest = REPO / "benchmarks" / "results" / f"numerics_drift_{args.profile}.json"
    write_json_atomic(dest, out)
    print(json.dumps({k: out[k] for k in ("fp32_vs_fp32", "bf16_vs_fp32")}, indent=1, default=str)[:4000])
    print(f"written to {dest}")


if __name__ == "__main__":
    main()
