"""Throughput of the three model uses on each device and precision this machine offers
(a benchmark, not a timed test). Writes benchmarks/results/device_<cpu|cuda>.json.

For every device in ``--devices`` that torch sees (``cpu`` always; ``cuda`` where a GPU
is lent) and every precision (fp32, bf16), median of ``--reps`` passes, each measured in
the same run as its fp32 CPU baseline:

* encoding: MiniLM over catalog titles at the student's max_seq_length (texts/s);
* the cross-encoder teacher: training steps/s and inference pairs/s (fp32 only: the
  teachers run fp32);
* the student: sentence-transformers training steps/s with MNRL at the student's batch.

The numerics block (relgrade/numerics.py) records the CPU's ISA flags, BLAS and threads.
``RELGRADE_PRECISION`` does not apply here: every precision is asked for explicitly.

    .venv/bin/python benchmarks/bench_device.py --reps 3            # CPU
    .venv/bin/python benchmarks/bench_device.py --devices cpu,cuda  # on a machine with a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_rate(fn, work: int, reps: int) -> dict:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_s": round(med, 4), "per_s": round(work / med, 2), "runs_s": [round(t, 4) for t in times]}


def _titles(n: int) -> list[str]:
    import pandas as pd

    df = pd.read_csv(ROOT / "data" / "homedepot" / "train.csv.zip", encoding="latin-1", usecols=["product_title"])
    return df["product_title"].drop_duplicates().head(n).tolist()


def bench_encode(device: str, texts: list[str], reps: int, max_seq_length: int, threads: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from relgrade.mining.channels.dense import default_model_path
    from training.index import encode

    torch.set_num_threads(threads)
    model = SentenceTransformer(default_model_path(), device=device)
    out = {}
    for prec in ("fp32", "bf16"):
        encode(model, texts[:64], 128, max_seq_length, prec, 1e9)  # warm-up
        out[prec] = _median_rate(lambda: encode(model, texts, 128, max_seq_length, prec, 1e9), len(texts), reps)
    a, b = encode(model, texts, 128, max_seq_length, "fp32", 1e9), encode(model, texts, 128, max_seq_length, "bf16", 1e9)
    out["bf16_min_cosine_to_fp32"] = round(float((a * b).sum(axis=1).min()), 6)
    out["bf16_speedup"] = round(out["bf16"]["per_s"] / out["fp32"]["per_s"], 3)
    return out


def bench_cross_encoder(device: str, texts: list[str], reps: int, steps: int, threads: int) -> dict:
    import numpy as np

    from relgrade.config import CrossEncoderStageConfig
    from relgrade.grading.teachers import CrossEncoderTeacher
    from relgrade.mining.channels.dense import default_model_path

    s = CrossEncoderStageConfig(name="ce_bench", layers=3, steps=steps, max_seq_length=32)
    q = [t.split()[0] for t in texts]
    n = len(texts)
    targets = np.tile(np.array([[0.25, 0.25, 0.25, 0.25]], dtype=np.float32), (n, 1))
    made = {}

    def train():
        made["t"] = CrossEncoderTeacher.train(q, texts, targets, np.ones(n), settings=s, version="bench",
                                              base_model=default_model_path(), seed=0, threads=threads,
                                              progress_every_s=1e9, device=device)

    tr = _median_rate(train, steps, reps)
    t = made["t"]
    t.logits_texts(q[:32], texts[:32])
    inf = _median_rate(lambda: t.logits_texts(q, texts), n, reps)
    return {"train_steps": tr, "inference_pairs": inf, "layers": 3, "batch_size": s.batch_size}


def bench_student(device: str, texts: list[str], reps: int, steps: int, batch: int, threads: int) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)

    from relgrade.mining.channels.dense import default_model_path

    torch.set_num_threads(threads)
    rows = [{"anchor": t.split()[0] + " " + t.split()[-1], "positive": t} for t in texts[: steps * batch]]
    out = {}
    for prec in ("fp32", "bf16"):
        def run():
            model = SentenceTransformer(default_model_path(), device=device)
            model.max_seq_length = 32
            with tempfile.TemporaryDirectory() as tmp:
                args = SentenceTransformerTrainingArguments(
                    output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=batch, save_strategy="no",
                    logging_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                    use_cpu=device == "cpu", bf16=prec == "bf16", dataloader_drop_last=True, seed=0)
                SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                           loss=losses.MultipleNegativesRankingLoss(model)).train()
        out[prec] = _median_rate(run, steps, reps)
    out["bf16_speedup"] = round(out["fp32"]["median_s"] / out["bf16"]["median_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from relgrade.config import load_config
    from relgrade.numerics import numerics

    texts = _titles(args.texts)
    res = {"settings": vars(args), "devices": {}}
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            res["devices"][device] = {"skipped": "torch sees no CUDA device"}
            continue
        cfg = load_config("default", overrides={"device": device})
        row = {"numerics": numerics(cfg)}
        row["encode"] = bench_encode(device, texts, args.reps, 32, args.threads)
        print(device, "encode", json.dumps(row["encode"]), flush=True)
        row["cross_encoder"] = bench_cross_encoder(device, texts[:512], args.reps, args.steps, args.threads)
        print(device, "cross-encoder", json.dumps(row["cross_encoder"]), flush=True)
        row["student"] = bench_student(device, texts, args.reps, args.steps, 32, args.threads)
        print(device, "student", json.dumps(row["student"]), flush=True)
        res["devices"][device] = row
    if "cuda" in res["devices"] and "encode" in res["devices"]["cuda"]:
        c, g = res["devices"]["cpu"], res["devices"]["cuda"]
        res["cuda_over_cpu"] = {"encode_fp32": round(g["encode"]["fp32"]["per_s"] / c["encode"]["fp32"]["per_s"], 2),
                                "cross_encoder_train": round(g["cross_encoder"]["train_steps"]["per_s"]
                                                             / c["cross_encoder"]["train_steps"]["per_s"], 2)}
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               f"device_{'cuda' if 'cuda' in res['devices'] and 'encode' in res['devices']['cuda'] else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
