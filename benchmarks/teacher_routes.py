"""Teacher routes: can a teacher trained on the same supervision rank the judged items
better than the base model it grades for? (issue 29, item 4)

On a data root whose stages up to ``attributes`` have run, this trains, on exactly the
pairs the grade stage's teachers train on (train-split judgments plus their random and
mined negatives, ``stage.teacher_pairs``):

* the shipped stages as the grade stage trained them (its teacher cache), each alone and
  stage 1 stacked with each cross-encoder;
* one cross-encoder (``--layers``, ``--steps`` AdamW steps of ``--batch`` pairs, the
  shipped loss: cross-entropy against the soft targets), scored at checkpoints along
  the run (``--checkpoints``; the learning rate schedule is the full run's);
* at each checkpoint the stack of the two, fitted on dev like the cascade's stack
  (temperatures, then a logistic regression over calibrated log-probabilities).

Every scorer ranks every judged test pair (no cap: the upper bound of what the cascade
could do if it escalated every judged pair), under the judged population's prior, and is
scored with the evaluation's own definitions (NDCG@10, NDCG@10 on queries with a grade 0,
embarrassing@3) and the grade stage's QWK. The base MiniLM cosine is the reference.

    .venv/bin/python benchmarks/teacher_routes.py --data-root var/default --layers 3 \
        --steps 2400 --checkpoints 600,1200,2400

Writes benchmarks/results/teacher_routes.json (one entry per ``--tag``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def judged_metrics(ed, scores: np.ndarray, cfg) -> dict:
    from training.metrics import Scored, query_metrics

    pq = query_metrics(ed, Scored(np.asarray(scores, dtype=float), None, {}), cfg)
    return {"ndcg@10": float(pq["ndcg"].mean()), "ndcg@10_g0": float(pq["ndcg_g0"].mean()),
            "emb@3": float(pq["emb"].mean()), "queries": int(pq["ndcg"].notna().sum()),
            "queries_g0": int(pq["ndcg_g0"].notna().sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.0e-4)
    ap.add_argument("--checkpoints", default="600,1200,2400")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "teacher_routes.json"))
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # training progress: rate, ETA

    from relgrade.config import load_config
    from relgrade.grading import stage
    from relgrade.grading.calibration import agreement_metrics
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.priorshift import adjust
    from relgrade.grading.teachers import CrossEncoderTeacher, StackedTeacher, pair_targets
    from relgrade.numerics import numerics
    from training.evaluate import load_eval_data

    cfg = load_config(a.profile, overrides={"data_root": str(Path(a.data_root).resolve())})
    g = cfg.grading
    t0 = time.perf_counter()
    inp = stage.load_inputs(cfg)
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    train = stage.teacher_pairs(cfg, fz, inp, "train")
    dev = stage.teacher_pairs(cfg, fz, inp, "dev")
    ed = load_eval_data(cfg)  # the test split, as the evaluation reads it
    test = ed.judged[["query_id", "item_id"]]
    y = ed.judged["grade"].to_numpy(dtype=np.int64)
    rule = stage.grade_rule(cfg, inp)
    pj = stage.judged_prior(inp)
    S, w = pair_targets(train), train["weight"].to_numpy(dtype=float)
    Sd, wd = stage.calibration_targets(dev), dev["weight"].to_numpy(dtype=float)
    prior_dev = (Sd * wd[:, None]).sum(axis=0) / wd.sum()
    print(f"inputs {time.perf_counter() - t0:.0f}s: train pairs {len(train)}, dev {len(dev)}, test judged {len(test)}",
          flush=True)

    def score(name: str, probs_test: np.ndarray, extra: dict | None = None) -> dict:
        p = adjust(probs_test, prior_dev, pj)  # the judged population's posteriors
        m = judged_metrics(ed, p @ np.arange(4), cfg)
        am = agreement_metrics(p, y, rule=rule)
        m.update(qwk=am["qwk"], binary=am["binary"], rmse_grade=am["rmse_grade"], **(extra or {}))
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()),
              flush=True)
        return m

    rows = {"base_minilm_cosine": judged_metrics(ed, fz.cosine(test), cfg)}
    print("base:", rows["base_minilm_cosine"], flush=True)

    def save() -> None:  # after every checkpoint, so a run stopped early keeps what it measured
        out = Path(a.out)
        doc = json.loads(out.read_text()) if out.exists() else {}
        tag = a.tag or f"ce{a.layers}_{a.steps}"
        doc[tag] = {"settings": {"layers": a.layers, "steps": a.steps, "batch": a.batch, "learning_rate": a.lr,
                                 "train_pairs": int(len(train)), "dev_pairs": int(len(dev)),
                                 "test_judged": int(len(test)), "data_root": str(a.data_root),
                                 "profile": a.profile},
                    "numerics": numerics(cfg), "rows": rows,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}", flush=True)

    # the shipped stages, exactly as the grade stage trained them (loaded from its cache)
    t1 = time.perf_counter()
    gbm, _ = stage.train_teacher(cfg, fz, train, 0)
    gbm_train_s = time.perf_counter() - t1
    z_gbm_dev = gbm.logits_from_features(fz.transform(dev))
    gbm.calibrate(z_gbm_dev, Sd, wd)
    z_gbm_test = gbm.logits_from_features(fz.transform(test))
    rows["stage1_gbm"] = score("stage1_gbm", gbm.proba_from_logits(z_gbm_test), {"load_or_train_s": round(gbm_train_s, 1)})
    q_dev, it_dev = fz.texts(dev)
    q_te, it_te = fz.texts(test)
    for k in range(1, len(g.stages)):
        ck, _ = stage.train_teacher(cfg, fz, train, k)
        zd, zt = ck.logits_texts(q_dev, it_dev), ck.logits_texts(q_te, it_te)
        ck.calibrate(zd, Sd, wd)
        rows[f"shipped_{ck.name}"] = score(f"shipped {ck.name}", ck.proba_from_logits(zt))
        st = StackedTeacher([gbm, ck], g.ensemble_c, g.seed)
        st.fit([z_gbm_dev, zd], Sd, wd)
        rows[f"shipped_stack_gbm_{ck.name}"] = score(f"shipped stack gbm+{ck.name}",
                                                     st.proba_from_logits(st.combine([z_gbm_test, zt])))

    if a.steps > 0:  # a new cross-encoder, the shipped training (CrossEncoderTeacher.train), longer
        from relgrade.config.grading import CrossEncoderStageConfig

        settings = CrossEncoderStageConfig(name=f"ce{a.layers}", layers=a.layers, steps=a.steps, batch_size=a.batch,
                                           learning_rate=a.lr, max_seq_length=32)
        base = stage.base_model_path(settings)  # the bundled MiniLM
        q_tr, it_tr = fz.texts(train)
        checkpoints = {int(c) for c in a.checkpoints.split(",")}
        clock = {"train_s": 0.0, "t": time.perf_counter()}

        def checkpoint(step: int, ce) -> None:
            if step not in checkpoints:
                return
            clock["train_s"] += time.perf_counter() - clock["t"]
            t = CrossEncoderTeacher(settings.name, "probe", ce, 32, g.infer_batch_size, g.threads)
            z_dev, z_te = t.logits_texts(q_dev, it_dev), t.logits_texts(q_te, it_te)
            t.calibrate(z_dev, Sd, wd)
            extra = {"step": step, "pairs_seen": step * a.batch, "train_s": round(clock["train_s"], 1)}
            rows[f"{settings.name}_step{step}"] = score(f"{settings.name} step {step}", t.proba_from_logits(z_te), extra)
            st = StackedTeacher([gbm, t], g.ensemble_c, g.seed)
            st.fit([z_gbm_dev, z_dev], Sd, wd)
            rows[f"stack_gbm_{settings.name}_step{step}"] = score(
                f"stack step {step}", st.proba_from_logits(st.combine([z_gbm_test, z_te])), extra)
            save()
            clock["t"] = time.perf_counter()

        CrossEncoderTeacher.train(q_tr, it_tr, S, w, settings=settings, version="probe", base_model=base,
                                  seed=g.seed, threads=g.threads, infer_batch_size=g.infer_batch_size,
                                  on_step=checkpoint)

    save()


if __name__ == "__main__":
    main()
