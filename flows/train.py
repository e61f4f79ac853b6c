"""Train flow: the assembled training set -> the student bi-encoder (three-stage
curriculum) and the click-trained baseline, each a sentence-transformers folder under
<data_root>/models/ with a model card and a FAISS index of the catalog."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.runtime import cached, get_config, stage_key, stage_lock, write_stage_manifest
from relgrade.config import RelgradeConfig
from training.args import pipeline_runs
from training.index import INDEX_FILE
from training.student import train


def _key(context, parameters) -> str | None:
    cfg: RelgradeConfig = parameters["cfg"]
    inputs = [cfg.paths.trainset, cfg.paths.table("catalog")]
    return stage_key("train", cfg, ["training"], inputs)


def _curriculum_tasks(model: str):
    """Each curriculum stage of ``model`` as its own task run (``<model>-<k>-<stage>``),
    run in order in this thread on the same model."""
    def run_stage(fit_stage, st) -> dict:
        return task(name="curriculum-stage", task_run_name=f"{model}-{st.index}-{st.name}",
                    cache_policy=NO_CACHE)(fit_stage)(st)
    return run_stage


@task(name="train", cache_key_fn=_key, persist_result=True)
def train_stage(cfg: RelgradeConfig) -> dict[str, Any]:
    logger = get_run_logger()
    result: dict[str, Any] = {"stage": "train", "models": {}}
    for run in pipeline_runs(cfg):
        s = train(cfg, run, stage_runner=_curriculum_tasks(run.name))
        result["models"][run.name] = {
            "path": str(run.output_dir), "index": str(run.output_dir / INDEX_FILE), "train_s": s["train_s"],
            "total_s": s["total_s"], "stages": [{k: st.get(k) for k in ("name", "loss", "examples", "steps", "examples_per_s")}
                                                for st in s["stages"]]}
        logger.info("%s: trained in %.0fs (%.0fs with the catalog index) -> %s", run.name, s["train_s"], s["total_s"],
                    run.output_dir)
    write_stage_manifest(cfg.paths.models / "train_manifest.json", result, cfg)
    return result


@flow(name="train", log_prints=False)  # the trainer's dataset hashing prints bytecode; relgrade logs its own progress
def train_flow(profile: str = "default", overrides: dict | None = None) -> dict[str, Any]:
    """Train the student (curriculum) and the click-trained baseline on the training set."""
    cfg = get_config(profile, overrides)
    outputs = [r.output_dir / f for r in pipeline_runs(cfg) for f in (INDEX_FILE, "model.safetensors", "README.md")]
    with stage_lock(cfg, "train"):
        result = cached(train_stage, outputs)(cfg)
    _artifacts(result)
    return result


def _artifacts(result: dict[str, Any]) -> None:
    """``train-metrics`` (per model and curriculum stage: examples, steps, rate) and
    ``train-report`` (where each model folder is)."""
    from flows.runtime import stage_artifacts

    table = [{"model": name, "stage": st["name"], "loss": st["loss"], "examples": st["examples"], "steps": st["steps"],
              "examples_per_s": st["examples_per_s"]} for name, m in result["models"].items() for st in m["stages"]]
    table += [{"model": name, "stage": "total", "train_s": m["train_s"], "total_s": m["total_s"]}
              for name, m in result["models"].items()]
    md = "\n".join(f"- `{name}`: `{m['path']}` (FAISS index `{m['index']}`)" for name, m in result["models"].items())
    stage_artifacts("train", table, None, md)
