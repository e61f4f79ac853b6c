"""Train one bi-encoder (the student, a baseline or an ablation) from the base MiniLM.

Reads top to bottom like a sentence-transformers training script:

1. arguments: the config's ``training`` section + a :class:`training.args.TrainRun`;
2. data: the assembled training set, the run's target, the graded-pair fraction;
3. model: the base MiniLM with a short ``max_seq_length``;
4. curriculum: per stage, its examples, its loss, one bounded pass with the trainer;
5. save: the sentence-transformers folder and its model card;
6. index: encode the catalog with the trained model and save a FAISS index beside it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from training.args import HARDNEG, TrainRun, base_model_path
from training.curriculum import StagePlan, build_loss, describe, plan, stage_examples
from training.data import load_catalog_texts, load_trainset, subsample_graded
from relgrade.numerics import resolve_device, resolve_precision
from relgrade.util import Progress, peak_rss_mb, utc_now
from training.model_card import SUMMARY_FILE, read_summary, write_model_card  # noqa: F401 (read_summary: re-exported)
from training.index import build_index, encode, save_index

log = logging.getLogger("training.student")


def _progress_callback(stage_name: str, total_steps: int, batch_size: int, every_s: float):
    from transformers import TrainerCallback

    class _Cb(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.p = Progress(f"train {stage_name}", total_steps, every_s, log, unit="steps")

        def on_step_end(self, args, state, control, **kw):
            self.p(state.global_step)

        def on_train_end(self, args, state, control, **kw):
            self.p(state.global_step, force=True)
            log.info("train %s: %.1f examples/s", stage_name, state.global_step * batch_size / max(self.p.elapsed, 1e-9))

    return _Cb()


def index_catalog(cfg: RelgradeConfig, model, folder: Path) -> dict:
    """Encode every catalog item with ``model`` and save the FAISS index into ``folder``."""
    t = cfg.training
    ids, texts = load_catalog_texts(cfg)
    t0 = time.perf_counter()
    emb = encode(model, texts, t.encode_batch_size, t.max_seq_length, t.encode_precision, t.progress_every_s,
                 what=f"encode catalog ({folder.name})")
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = build_index(emb, t.threads)
    t_build = time.perf_counter() - t0
    save_index(folder, index, ids)
    return {"items": len(ids), "encode_s": round(t_enc, 2), "encode_items_per_s": round(len(ids) / max(t_enc, 1e-9), 1),
            "index_build_s": round(t_build, 3), "index": "IndexFlatIP"}


def train(cfg: RelgradeConfig, run: TrainRun, trainset: pd.DataFrame | None = None, build_catalog_index: bool = True,
          stage_runner: Callable | None = None) -> dict:
    """Train ``run`` and write its folder; returns the run summary (also saved as
    ``training_summary.json`` in the folder). ``trainset`` (already prepared for the
    run's target) skips reading the Parquet file; ``stage_runner(fit_stage, stage)``, when
    given, runs each curriculum stage (the Prefect flow makes each a visible task)."""
    # ---- 1. arguments --------------------------------------------------------------
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import SentenceTransformer

    t = cfg.training
    torch.set_num_threads(t.threads)
    rng = np.random.default_rng(t.seed)
    t_run = time.perf_counter()
    log.info("training %s (%s, target %s, curriculum %s, graded fraction %.2f) -> %s", run.name, run.recipe,
             run.target_column, run.use_curriculum, run.graded_fraction, run.output_dir)

    # ---- 2. model --------------------------------------------------------------------
    device = resolve_device(cfg.device)
    model = SentenceTransformer(base_model_path(cfg), device=device)
    model.max_seq_length = t.max_seq_length

    # ---- 3. data: the run's examples per stage ------------------------------------------
    if run.triplets is not None:  # the peer recipe or a ladder rung: mined with the base model, before training
        stages, examples_of, data_stats = _triplet_plan(cfg, run, model, trainset)
    else:
        stages, examples_of, data_stats = _curriculum_plan(cfg, run, trainset, rng)

    # ---- 4. one bounded pass per stage, in order, on the same model ----------------------
    def fit_stage(st) -> dict:
        return _fit_stage(cfg, run, model, st, examples_of(st), device)

    stage_stats = [stage_runner(fit_stage, st) if stage_runner else fit_stage(st) for st in stages]

    # ---- 5. save the model folder, 6. its catalog index ------------------------------------
    summary = {
        "run": run.name, "description": run.description, "recipe": run.recipe, "target_column": run.target_column,
        "use_curriculum": run.use_curriculum, "graded_fraction": run.graded_fraction,
        "budget_multiplier": run.budget_multiplier,
        "base_model": base_model_path(cfg), "dataset": cfg.dataset.adapter, "max_seq_length": t.max_seq_length,
        "batch_size": t.batch_size, "curriculum": describe(stages), "data": data_stats, "stages": stage_stats,
        "train_s": round(sum(s.get("train_s", 0.0) for s in stage_stats), 2),
    }
    return _save(cfg, run, model, summary, build_catalog_index, t_run)


def _curriculum_plan(cfg: RelgradeConfig, run: TrainRun, trainset: pd.DataFrame | None, rng: np.random.Generator):
    """The curriculum's stages, each stage's examples from the training set, its stats."""
    t = cfg.training
    df = trainset if trainset is not None else load_trainset(cfg.paths.trainset, run.target_column)
    df = subsample_graded(df, run.graded_fraction, t.seed)
    data_stats = {"rows": int(len(df)), "queries": int(df["query_id"].nunique()), "graded_rows": int(df["graded"].sum()),
                  "level_counts": {str(k): int(v) for k, v in df["level"].value_counts().sort_index().items()},
                  "target_mean": float(df["target"].mean())}
    return plan(t, run.use_curriculum, run.budget_multiplier), (lambda st: stage_examples(df, st, t, rng)), data_stats


def hardneg_budget(cfg: RelgradeConfig, run: TrainRun) -> int:
    """The peer recipe's positives: ``hardneg_baseline.positives``, else the curriculum's
    examples in all (the student's budget), times the run's budget multiplier."""
    t = cfg.training
    base = t.hardneg_baseline.positives or sum(st.max_examples for st in t.curriculum)
    return max(1, int(round(base * run.budget_multiplier)))


def _triplet_plan(cfg: RelgradeConfig, run: TrainRun, model, trainset: pd.DataFrame | None):
    """One stage on the recipe's triplets (training/hardneg.py), MNRL or MarginMSE."""
    from training.hardneg import recipe_triplets

    h = cfg.training.hardneg_baseline
    if trainset is not None and run.target_column != cfg.training.target_column:
        trainset = None  # prepared for another target: the recipe reads relgrade's target itself
    trip, stats = recipe_triplets(cfg, model, run.triplets, hardneg_budget(cfg, run), cfg.training.seed, trainset)
    trip = trip.iloc[np.random.default_rng(cfg.training.seed).permutation(len(trip))].reset_index(drop=True)
    st = StagePlan(1, run.recipe if run.recipe == HARDNEG else run.name, run.triplets.loss, (), (), len(trip),
                   h.learning_rate)
    return [st], (lambda _st: trip), stats


def _fit_stage(cfg: RelgradeConfig, run: TrainRun, model, st: StagePlan, ex: pd.DataFrame, device: str) -> dict:
    """One bounded pass of ``st`` over ``ex`` (whole batches) with the trainer."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    t = cfg.training
    n_steps = len(ex) // t.batch_size
    if n_steps == 0:
        log.warning("stage %d %s: %d examples, fewer than one batch; skipped", st.index, st.name, len(ex))
        return {"stage": st.index, "name": st.name, "loss": st.loss, "examples": int(len(ex)), "steps": 0}
    ex = ex.iloc[: n_steps * t.batch_size]
    with tempfile.TemporaryDirectory(prefix="relgrade-train-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=t.batch_size,
            learning_rate=st.learning_rate, warmup_steps=int(math.ceil(t.warmup_ratio * n_steps)),
            weight_decay=t.weight_decay, lr_scheduler_type="linear", seed=t.seed + st.index, data_seed=t.seed + st.index,
            batch_sampler=BatchSamplers.NO_DUPLICATES if st.loss in ("mnrl", "mnrl_hard", "mnrl_triplet") else BatchSamplers.BATCH_SAMPLER,
            save_strategy="no", logging_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_drop_last=True, use_cpu=device == "cpu", dataloader_num_workers=0,
            bf16=resolve_precision(t.train_precision, device) == "bf16")
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_pandas(ex, preserve_index=False),
            loss=build_loss(model, st, t),
            callbacks=[_progress_callback(f"{run.name} stage {st.index} {st.name}", n_steps, t.batch_size,
                                          t.progress_every_s)])
        t0 = time.perf_counter()
        out = trainer.train()
        el = time.perf_counter() - t0
    log.info("stage %d %s (%s, levels %s): %d examples, %d steps, %.1fs, %.1f ex/s, loss %.4f", st.index, st.name,
             st.loss, list(st.levels), len(ex), n_steps, el, len(ex) / max(el, 1e-9), out.training_loss)
    return {"stage": st.index, "name": st.name, "loss": st.loss, "levels": list(st.levels),
            "examples": int(len(ex)), "steps": int(n_steps), "train_s": round(el, 2),
            "examples_per_s": round(len(ex) / max(el, 1e-9), 1), "train_loss": float(out.training_loss)}


def _save(cfg: RelgradeConfig, run: TrainRun, model, summary: dict, build_catalog_index: bool, t_run: float) -> dict:
    """The sentence-transformers folder, its catalog index, summary and model card,
    written beside the folder and moved into place in one rename."""
    folder = Path(run.output_dir)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp_folder = folder.with_name(f".{folder.name}.tmp")
    if tmp_folder.exists():
        shutil.rmtree(tmp_folder)
    model.save(str(tmp_folder))
    summary["index"] = index_catalog(cfg, model, tmp_folder) if build_catalog_index else None
    summary.update(total_s=round(time.perf_counter() - t_run, 2), peak_rss_mb=round(peak_rss_mb(), 1),
                   trained_at=utc_now().isoformat(timespec="seconds"))
    (tmp_folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str))
    write_model_card(tmp_folder, summary)
    os.replace(tmp_folder, folder)
    log.info("%s saved to %s (%.0fs in all)", run.name, folder, summary["total_s"])
    return summary
