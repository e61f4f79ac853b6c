"""Regenerate examples/contract_small/: the smallest working example of your own data in
the contract format (docs/own_data.md), which `relgrade init DIR` copies into a new
project and the tests run end to end.

It is a deterministic slice of the bundled Home Depot data (the 150 queries with the
smallest query ids, the judged items, the ratings as a numeric label on the 1..3 scale)
and a search log of 10 days x 200 searches written by the simulator and exported in the
log format (`relgrade.eventlog.export_log`), so the pipeline reads it as a real log.

    .venv/bin/python scripts/make_example.py
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "examples" / "contract_small"
QUERIES, DAYS, SEARCHES = 150, 10, 200
# the labels' scale (Home Depot's mean rating, 1..3) and its rule to grades 0..3
LABEL_RANGE, LABEL_CUTS = [1, 3], [1.5, 2.0, 2.5]
LABELS_YAML = """# The example's label scale: Home Depot's mean rating of about three raters on 1..3
# (scripts/make_example.py writes this file; `relgrade init` copies it into dataset).
label_range: {range}
label_cuts: {cuts}
"""


def main() -> None:
    import pandas as pd

    from relgrade.adapters import limit_queries
    from relgrade.adapters.homedepot import load
    from relgrade.config import load_config
    from relgrade.eventlog import export_log
    from relgrade.simulate import query_segments, simulate

    cfg = load_config("default", overrides={"simulation": {"days": DAYS, "searches_per_day": SEARCHES}})
    t = limit_queries(load(REPO / "data" / "homedepot" / "train.csv.zip", judged_at=cfg.dataset.judged_at), QUERIES)
    q = t["queries"].copy()
    q["segment"] = query_segments(q["query_id"], cfg.simulation).values
    j = t["judgments"]
    text = dict(zip(q["query_id"], q["text"]))
    OUT.mkdir(parents=True, exist_ok=True)
    t["catalog"][["item_id", "title"]].to_csv(OUT / "catalog.csv", index=False)
    pd.DataFrame({"query": j["query_id"].map(text), "item_id": j["item_id"], "label": j["raw_score"].round(4)}
                 ).to_csv(OUT / "judgments.csv", index=False)
    events = simulate(t["catalog"], q, j, cfg.simulation)
    export_log(events, q, OUT / "events.csv.gz")
    end = pd.Timestamp(cfg.simulation.start_date) + pd.Timedelta(days=DAYS)
    (OUT / "SNAPSHOT").write_text(end.isoformat() + "\n")
    labels = j["raw_score"].round(4)
    assert labels.between(*LABEL_RANGE).all(), "a rating outside the declared scale"
    (OUT / "LABELS.yaml").write_text(LABELS_YAML.format(range=LABEL_RANGE, cuts=LABEL_CUTS))
    print(f"{len(t['catalog'])} items, {len(q)} queries, {len(j)} judgments, {len(events)} log rows -> {OUT}")


if __name__ == "__main__":
    main()
