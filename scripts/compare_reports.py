"""Compare the metrics of two runs' reports: ``python scripts/compare_reports.py A B``,
A and B data roots. Prints every JSON leaf under ``reports/*/report.json`` (and the
evaluation's per-query table) that differs; prints nothing and exits 0 when the two runs
measured the same. Ignored: wall-clock figures (keys naming seconds, rates, timings,
memory, dates) and where the data root and checkout live (absolute paths compare by name)."""
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


def main(a: str, b: str) -> int:
    ra, rb = Path(a), Path(b)
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
            if la.get(k) != lb.get(k):
                print(f"{rel}: {k}: {la.get(k)!r} != {lb.get(k)!r}")
                diffs += 1
    pq = Path("reports/evaluation/per_query.parquet")
    if (ra / pq).exists() and (rb / pq).exists():
        import pandas as pd

        if not pd.read_parquet(ra / pq).equals(pd.read_parquet(rb / pq)):
            print(f"{pq}: tables differ")
            diffs += 1
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
