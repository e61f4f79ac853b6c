"""Training and retrieval throughput of the student on this machine (a benchmark, not a
timed test). Writes benchmarks/results/training.json.

On a real slice of the bundled data (the quick profile's queries and catalog, with the
training-set fixture of tests/training_fixtures.py unless a real training set exists):

* training throughput (examples/s) per curriculum stage / loss, fp32 (the baseline) and
  bf16 autocast, measured in the same run, median of --reps short passes;
* encode throughput (texts/s): fp32 at max_seq_length 128 (the baseline: the mining
  channel's settings without autocast), bf16 at 128, bf16 at the student's 32;
* FAISS IndexFlatIP build and search (top 100) time on the catalog embeddings;
* peak RSS.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per timed training pass")
    ap.add_argument("--encode-texts", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training.json"))
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from relgrade.config import load_config
    from training.args import base_model_path
    from training.curriculum import build_loss, plan, stage_examples
    from training.data import load_trainset
    from training.index import build_index, encode, search
    from training_fixtures import write_contract, write_trainset

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    cfg = load_config("quick", overrides={"data_root": str(tmp)})
    t = cfg.training
    torch.set_num_threads(t.threads)
    tables = write_contract(cfg)
    write_trainset(cfg, tables)
    frame = load_trainset(cfg.paths.trainset, "target")
    rng = np.random.default_rng(0)
    res: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                             "threads": t.threads, "load_avg_start": os.getloadavg()},
                 "settings": {"batch_size": t.batch_size, "max_seq_length": t.max_seq_length, "reps": args.reps,
                              "steps_per_pass": args.steps}}

    # ---- training throughput per stage, fp32 vs bf16 ---------------------------------------
    model = SentenceTransformer(base_model_path(cfg), device="cpu")
    model.max_seq_length = t.max_seq_length
    train_res = {}
    for st in plan(t):
        ex = stage_examples(frame, dataclasses.replace(st, max_examples=args.steps * t.batch_size), t, rng)
        ex = ex.iloc[: (len(ex) // t.batch_size) * t.batch_size]
        row = {"loss": st.loss, "levels": list(st.levels), "examples_per_pass": len(ex)}
        for prec in ("fp32", "bf16"):
            times = []
            for r in range(args.reps):
                with tempfile.TemporaryDirectory() as out:
                    a = SentenceTransformerTrainingArguments(
                        output_dir=out, num_train_epochs=1, per_device_train_batch_size=t.batch_size, learning_rate=1e-5,
                        save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                        bf16=prec == "bf16", dataloader_drop_last=True, seed=r,
                        batch_sampler=BatchSamplers.NO_DUPLICATES if st.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER)
                    tr = SentenceTransformerTrainer(model=model, args=a, train_dataset=Dataset.from_pandas(ex, preserve_index=False),
                                                    loss=build_loss(model, st, t))
                    t0 = time.perf_counter()
                    tr.train()
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            row[prec] = {"median_s": round(med, 3), "examples_per_s": round(len(ex) / med, 2), "runs_s": [round(x, 3) for x in times]}
        row["bf16_speedup_vs_fp32"] = round(row["fp32"]["median_s"] / row["bf16"]["median_s"], 3)
        train_res[f"stage{st.index}_{st.name}"] = row
        print(st.name, json.dumps(row), flush=True)
    res["training"] = train_res

    # ---- encoding -------------------------------------------------------------------------
    from relgrade.mining.channels import item_texts

    texts = item_texts(tables["catalog"]).tolist()
    sample = texts[: args.encode_texts]
    base = SentenceTransformer(base_model_path(cfg), device="cpu")
    enc = {}
    for name, prec, L in (("fp32_len128", "fp32", 128), ("bf16_len128", "bf16", 128), ("bf16_len32", "bf16", 32)):
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            encode(base, sample, t.encode_batch_size, L, prec, progress_every_s=1e9)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        enc[name] = {"median_s": round(med, 3), "texts_per_s": round(len(sample) / med, 1)}
        print(name, enc[name], flush=True)
    for k in ("bf16_len128", "bf16_len32"):
        enc[k]["speedup_vs_fp32_len128"] = round(enc["fp32_len128"]["median_s"] / enc[k]["median_s"], 3)
    res["encode"] = {"texts": len(sample), **enc}

    # ---- FAISS ----------------------------------------------------------------------------
    emb = encode(base, texts, t.encode_batch_size, t.max_seq_length, "bf16", progress_every_s=1e9)
    big = np.vstack([emb] * max(1, 54_667 // len(emb) + 1))[:54_667]  # a catalog the size of the full one
    q = emb[rng.choice(len(emb), 1000, replace=len(emb) < 1000)]
    fa = {}
    for name, E in (("catalog_slice", emb), ("full_size_54667", big)):
        bt, st_ = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            index = build_index(E, t.threads)
            bt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            search(index, q, 100)
            st_.append(time.perf_counter() - t0)
        fa[name] = {"items": len(E), "build_median_s": round(statistics.median(bt), 4),
                    "search_1000q_top100_median_s": round(statistics.median(st_), 4)}
    res["faiss"] = fa
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["machine"]["load_avg_end"] = os.getloadavg()
    res["note"] = ("medians of --reps passes; the machine is shared (see load averages), so absolute rates vary "
                   "between runs; ratios within one run compare like with like")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
