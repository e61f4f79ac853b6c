"""Record what a pipeline run took: ``python benchmarks/pipeline_times.py --profile default``
copies ``<data_root>/pipeline_run.json`` (written by ``relgrade pipeline``: seconds per
stage, total, peak RSS) with the machine it ran on to
``benchmarks/results/pipeline_<profile>[_<path>].json``. A cached stage's seconds are
those of its skip, so record a run from an empty data root and say so with ``--fresh``.
The run's own numerics block (device, resolved precisions, the CPU's ISA flags, BLAS,
threads) is kept; ``--path fp32`` names the record by its numeric path, so the records of
two CPU kinds (or of a forced fp32 run beside the default) sit side by side."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relgrade.config import load_config  # noqa: E402
from relgrade.util import cpu_flags, write_json_atomic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--fresh", action="store_true", help="the run started from an empty data root")
    ap.add_argument("--note", default="", help="anything a reader should know about the run")
    ap.add_argument("--path", default="", help="a suffix naming the numeric path, e.g. fp32 or bf16")
    args = ap.parse_args()
    cfg = load_config(args.profile, overrides={"data_root": args.data_root} if args.data_root else None)
    run = json.loads(cfg.paths.pipeline_run.read_text())
    flags = cpu_flags()
    doc = {**run, "fresh_data_root": args.fresh, "note": args.note,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "amx_bf16": "amx_bf16" in flags, "avx512f": "avx512f" in flags,
                       "avx512_bf16": "avx512_bf16" in flags, "load_average": os.getloadavg()}}
    out = ROOT / "benchmarks" / "results" / f"pipeline_{args.profile}{'_' + args.path if args.path else ''}.json"
    write_json_atomic(out, doc)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
