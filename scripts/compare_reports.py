"""Compare the metrics of two runs' reports: ``python scripts/compare_reports.py A B``,
A and B data roots. Prints every JSON leaf under ``reports/*/report.json`` (and the
evaluation's per-query table) that differs; prints nothing and exits 0 when the two runs
measured the same. Ignored: wall-clock figures (keys naming seconds, rates, timings,
memory, dates) and where the data root and checkout live (absolute paths compare by name).

Across machines (another CPU, fp32 against bf16: docs/architecture.md#numerics), exact
equality is the wrong question: ``--atol X`` and/or ``--rtol Y`` count two numbers as equal
when ``|a - b| <= atol + rtol * |b|``, the runs' numeric paths (the ``numerics`` blocks)
are printed as a note instead of counted, and the exit status says whether any metric
moved beyond the tolerance::

    python scripts/compare_reports.py var/amx var/fp32 --atol 0.01
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

VOLATILE = re.compile(r"(^|_)(s|seconds|secs|elapsed|timings?|rate|per_s|per_second|qps|rss|rss_mb|mb|at|"
                      r"generated|trained_at|finished_at|started|wall|duration|load_avg|load_average)($|_)|"
                      r"_s$|_ms$|_per_s$|timings|peak_rss|generated_at|per_second|throughput", re.I)


def leaves(doc, prefix=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            if VOLATILE.search(str(k)):
                continue
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from leaves(v, f"{prefix}[{i}]")
    elif isinstance(doc, str) and doc.startswith("/"):
        yield prefix, Path(doc).name  # a file of the run or the checkout: where it lives may differ
    else:
        yield prefix, doc


def normalized(path: Path, root: Path) -> dict:
    text = path.read_text().replace(str(root.resolve()), "<root>").replace(str(root), "<root>")
    return dict(leaves(json.loads(text)))


def _close(x, y, atol: float, rtol: float) -> bool:
    if x == y:
        return True
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return False
    return abs(x - y) <= atol + rtol * abs(y)


def main(a: str, b: str, atol: float = 0.0, rtol: float = 0.0) -> int:
    ra, rb = Path(a), Path(b)
    tolerant = atol > 0 or rtol > 0
    files = sorted({p.relative_to(ra) for p in ra.glob("reports/*/report.json")}
                   | {p.relative_to(rb) for p in rb.glob("reports/*/report.json")})
    diffs = 0
    for rel in files:
        if not (ra / rel).exists() or not (rb / rel).exists():
            print(f"{rel}: only in {'B' if not (ra / rel).exists() else 'A'}")
            diffs += 1
            continue
        la, lb = normalized(ra / rel, ra), normalized(rb / rel, rb)
        for k in sorted(set(la) | set(lb)):
            if tolerant and (k == "numerics" or k.startswith("numerics.")):
                if la.get(k) != lb.get(k):
                    print(f"note: {rel}: {k}: {la.get(k)!r} vs {lb.get(k)!r}")
                continue
            if not _close(la.get(k), lb.get(k), atol, rtol):
                print(f"{rel}: {k}: {la.get(k)!r} != {lb.get(k)!r}")
                diffs += 1
    pq = Path("reports/evaluation/per_query.parquet")
    if (ra / pq).exists() and (rb / pq).exists():
        import pandas as pd

        ta, tb = pd.read_parquet(ra / pq), pd.read_parquet(rb / pq)
        if tolerant and list(ta.columns) == list(tb.columns) and len(ta) == len(tb):
            import numpy as np

            num = ta.select_dtypes("number").columns
            same_keys = ta.drop(columns=num).reset_index(drop=True).equals(tb.drop(columns=num).reset_index(drop=True))
            close = np.allclose(ta[num].to_numpy(float), tb[num].to_numpy(float), atol=atol, rtol=rtol, equal_nan=True)
            if not (same_keys and close):
                print(f"{pq}: tables differ beyond the tolerance")
                diffs += 1
        elif not ta.equals(tb):
            print(f"{pq}: tables differ")
            diffs += 1
    return 1 if diffs else 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--atol", type=float, default=0.0, help="absolute tolerance on numbers (0: exact)")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance on numbers (0: exact)")
    args = ap.parse_args()
    sys.exit(main(args.a, args.b, args.atol, args.rtol))
