"""The grade flow end to end through Prefect, Great Expectations and Feast on the tiny
real data root of ``tests/grading_world.py``: grades, views and report; grades falling
with rank and the random-pair probe; the reported cascade is the published one; a
skipped rerun; a shifted teacher refused at the gate; resume after a kill; `relgrade
label`; the LLM judge on loopback (unreachable, throttled, live); a bad union."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from grading_world import GRADING_OVERRIDES
from loopback import free_port

# --------------------------------------------------------------------------- tiny real data root


@pytest.mark.integration
def test_grade_flow_publishes_grades_views_and_report(grading_run, grading_root):
    from relgrade.featurestore import historical_features, read_offline
    from relgrade.grading.stage import GRADE_COLUMNS
    from relgrade.io import read_parquet

    cfg, out = grading_root["cfg"], grading_run
    snap = pd.Timestamp(cfg.snapshot_ts)
    union = read_parquet(cfg.paths.union(cfg.snapshot_ts))
    g = read_parquet(cfg.paths.grades)
    assert list(g.columns) == GRADE_COLUMNS and len(g) == len(union) == out["union"]["pairs"]
    assert (g["event_timestamp"] == snap).all() and (g["graded_at"] > snap).all()
    probs = g[[f"p_grade_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(g["expected_grade"], probs @ np.arange(4), atol=1e-6)
    assert set(g["deciding_stage"]) <= {0, 1, 2, 3} and (g["deciding_stage"] >= 2).any()
    assert g["difficulty_level"].between(1, 5).all()
    # the human anchor: judged pairs of train queries carry their judgment, no other pair does
    human = g["deciding_stage"] == 0
    assert human.any() and (g.loc[human, "teacher_version"] == "human").all()
    q = read_parquet(cfg.paths.table("queries"))
    split = dict(zip(q["query_id"], q["split"]))
    assert set(g.loc[human, "query_id"].map(split)) == {"train"}
    off = read_offline(cfg, "relevance_grade_fv")
    assert len(off) == len(g)
    prior = read_offline(cfg, "retrieval_prior_fv")
    m = prior.merge(g[["query_id", "item_id", "difficulty_level"]], on=["query_id", "item_id"], suffixes=("", "_g"))
    assert len(m) == len(g) and (m["difficulty_level"].astype(int) == m["difficulty_level_g"]).all()
    ent = g[["query_id", "item_id"]].head(5).assign(event_timestamp=snap + pd.Timedelta(hours=1))
    feats = historical_features(cfg, ent, ["relevance_grade_fv:grade"])
    assert feats["grade"].astype(int).tolist() == g["grade"].head(5).tolist()
    html_text = (cfg.paths.report("grading") / "report.html").read_text()
    for key in ("data:image/png;base64,", "Random-pair probe", "quality against compute", "best channel rank"):
        assert key in html_text


@pytest.mark.integration
def test_published_grades_fall_with_rank_and_the_probe_is_graded_zero(grading_run):
    pr = grading_run["probes"]
    bands = {b["group"]: b for b in pr["by_best_rank_band"]}
    assert bands[pr["top_band"]]["mean_expected_grade"] > bands[pr["deep_band"]]["mean_expected_grade"]
    probe = grading_run["probe"]  # judged as the gate judges it: by the Wilson bound at the probe's size
    assert probe["pairs"] == 300 and probe["gate_passed"] and probe["grade_0_share"] >= probe["gate_min_sampled_share"]
    # a cross-encoder judges a real share of the union, the share the thresholds were chosen
    # for: the modelled reach was read off a sample of the union (budget_sample_pairs), so
    # the measured share must lie in that estimate's Wilson interval, whichever numeric
    # path (fp32, bf16) produced the confidences; no caps are set in this world
    from relgrade.util import wilson_interval

    n_sample = min(GRADING_OVERRIDES["budget_sample_pairs"], grading_run["union"]["pairs"])
    modelled = grading_run["budget_curve"]["chosen"]["union_reach"][1]
    assert grading_run["thresholds"][0] > 0 and modelled > 0
    lo, hi = wilson_interval(round(modelled * n_sample), n_sample, 0.999)
    measured = grading_run["union"]["reach_share"]["2"]
    assert lo <= measured <= hi, (measured, modelled, lo, hi)
    assert measured * grading_run["union"]["pairs"] >= 10


@pytest.mark.integration
def test_reported_cascade_is_the_published_cascade(grading_run, grading_root):
    """The report's cascade row grades the test pairs through the union's code path:
    its expected grades are those the union would get for the same pairs."""
    from relgrade.io import read_parquet

    cfg = grading_root["cfg"]
    ts = read_parquet(cfg.paths.test_scores)
    g = read_parquet(cfg.paths.grades)
    both = ts.merge(g[["query_id", "item_id", "expected_grade"]], on=["query_id", "item_id"])
    assert len(both) > 0
    np.testing.assert_allclose(both["expected_grade_cascade"], both["expected_grade"], atol=1e-6)
    assert grading_run["metrics"]["cascade"]["thresholds"] == grading_run["thresholds"]


@pytest.mark.integration
def test_rerun_of_the_grade_flow_is_skipped(grading_run, grading_root):
    from flows.grade import grade_flow

    cfg = grading_root["cfg"]
    mtime = cfg.paths.grades.stat().st_mtime_ns
    again = grade_flow("quick", grading_root["overrides"])
    assert again["stage_key"] == grading_run["stage_key"] and again["thresholds"] == grading_run["thresholds"]
    assert cfg.paths.grades.stat().st_mtime_ns == mtime


def _copy_inputs(src, dst, teachers: bool = True):
    for sub in ("contract", "mining", "cache") + (("models",) if teachers else ()):
        shutil.copytree(src / sub, dst / sub)


@pytest.mark.integration
def test_a_shifted_teacher_fails_the_random_pair_probe_and_nothing_lands(grading_root, tmp_path):
    """Teachers fitted to the human judgments alone (no negatives: the supervision this
    stage had before) call random items relevant: the relevance_grade_fv suite refuses
    the batch and no view, grade file or report lands."""
    from flows.grade import grade_flow
    from validation.gate import ValidationFailed

    dst = tmp_path / "shifted"
    _copy_inputs(grading_root["path"], dst, teachers=False)
    ov = {**grading_root["overrides"], "data_root": str(dst),
          "grading": {**GRADING_OVERRIDES, "negatives": {"random_per_query": 0, "mined_per_query": 0}}}
    from relgrade.config import load_config

    cfg = load_config("quick", overrides=ov)
    with pytest.raises(ValidationFailed) as exc:
        grade_flow("quick", ov)
    assert "chk_grade0" in str(exc.value)
    assert not cfg.paths.feature_source("relevance_grade_fv").exists()
    assert not cfg.paths.feature_source("retrieval_prior_fv").exists()
    assert not cfg.paths.grades.exists() and not cfg.paths.test_scores.exists()
    assert not (cfg.paths.grading / "manifest.json").exists()


@pytest.mark.integration
def test_killed_run_resumes_without_regrading_and_matches_uninterrupted(grading_root, tmp_path):
    from flows.grade import grade_flow
    from relgrade.config import load_config
    from relgrade.grading.stage import StopAfter

    dst = tmp_path / "resume"
    _copy_inputs(grading_root["path"], dst)
    ov = {**grading_root["overrides"], "data_root": str(dst)}
    cfg = load_config("quick", overrides=ov)
    with pytest.raises(StopAfter):
        grade_flow("quick", ov, stop_after=2)  # killed after two chunks
    assert not cfg.paths.grades.exists()
    chunk_dirs = list((cfg.paths.grading / "chunks").iterdir())
    assert len(chunk_dirs) == 1
    written = sorted(chunk_dirs[0].glob("chunk_*.parquet"))
    assert len(written) == 2
    mtimes = [p.stat().st_mtime_ns for p in written]
    resumed = grade_flow("quick", ov)
    assert resumed["union"]["resumed_chunks"] == 2
    assert resumed["union"]["graded_chunks"] == resumed["union"]["chunks"] - 2 > 0
    assert [p.stat().st_mtime_ns for p in written] == mtimes  # never regraded
    a = pd.read_parquet(cfg.paths.grades).drop(columns=["graded_at"])
    shutil.rmtree(cfg.paths.grading)  # an uninterrupted run from scratch (same teachers)
    fresh = grade_flow("quick", ov)
    assert fresh["union"]["resumed_chunks"] == 0
    pd.testing.assert_frame_equal(a, pd.read_parquet(cfg.paths.grades).drop(columns=["graded_at"]))


@pytest.mark.integration
def test_label_round_trips_union_pairs_and_grades_new_text(grading_run, grading_root, tmp_path):
    from typer.testing import CliRunner

    from relgrade.cli import app
    from relgrade.io import read_parquet

    cfg = grading_root["cfg"]
    g = read_parquet(cfg.paths.grades)
    g = g[g["deciding_stage"] > 0].sample(60, random_state=0)  # teacher-graded (anchored pairs carry a judgment)
    q = read_parquet(cfg.paths.table("queries"))
    text = dict(zip(q["query_id"], q["text"]))
    src = tmp_path / "pairs.csv"
    pd.DataFrame({"query": g["query_id"].map(text), "item_id": g["item_id"]}).to_csv(src, index=False)
    out = tmp_path / "graded.parquet"
    res = CliRunner().invoke(app, ["label", str(src), "-o", str(out), "--profile", "quick",
                                   "--data-root", str(cfg.paths.root)])
    assert res.exit_code == 0, res.output
    lab = pd.read_parquet(out)
    assert list(lab["query_id"]) == list(g["query_id"]) and list(lab["item_id"]) == list(g["item_id"])
    np.testing.assert_allclose(lab["expected_grade"], g["expected_grade"], atol=1e-6)
    assert (lab["grade"].to_numpy() == g["grade"].to_numpy()).all()
    assert (lab["deciding_stage"].to_numpy() == g["deciding_stage"].to_numpy()).all()
    for col in ("p_grade_0", "p_grade_3", "confidence", "teacher_version", "cascade"):
        assert col in lab.columns
    # new text: a query nobody typed before and a title outside the catalog
    src2 = tmp_path / "new.csv"
    pd.DataFrame({"query": ["cordless drill", "cordless drill"],
                  "title": ["DEWALT 20-Volt MAX Cordless Drill/Driver Kit", "Glacier Bay Toilet Seat in White"]}
                 ).to_csv(src2, index=False)
    res = CliRunner().invoke(app, ["label", str(src2), "-o", str(tmp_path / "new.csv.out.csv"), "--profile", "quick",
                                   "--data-root", str(cfg.paths.root)])
    assert res.exit_code == 0, res.output
    new = pd.read_csv(tmp_path / "new.csv.out.csv")
    assert new["expected_grade"].iloc[0] > new["expected_grade"].iloc[1]


@pytest.mark.integration
@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("query,sku\ndrill,1\n", "item_id"),
    ("item_id\n100001\n", "query"),
    ("query_id,item_id\nq-unknown,100001\n", "query_id this data root does not hold"),
    ("query,item_id\ndrill,no-such-item\n", "item_id the catalog does not hold"),
])
def test_label_refuses_bad_input_and_writes_nothing(grading_run, grading_root, tmp_path, content, message):
    from typer.testing import CliRunner

    from relgrade.cli import app

    src = tmp_path / "bad.csv"
    src.write_text(content)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["label", str(src), "-o", str(out), "--profile", "quick",
                                   "--data-root", str(grading_root["cfg"].paths.root)])
    assert res.exit_code != 0 and message in res.output, res.output
    assert not out.exists()


def _judge_settings(grading_root, url: str, **kw):
    return grading_root["cfg"].grading.llm_judge.model_copy(update={"enabled": True, "base_url": url, "timeout_s": 5,
                                                            "backoff_s": 0.01, **kw})


def _ce_grader(grading_fitted):
    """The trained stage-2 cross-encoder as the model behind the endpoint."""
    from relgrade.grading.calibration import decide_grade

    t = grading_fitted["teachers"][1]
    return lambda q, p: int(decide_grade(t.proba_from_logits(t.logits_texts([q], [p])), "quadratic")[0])


def test_llm_judge_unreachable_gives_clear_error_and_keeps_previous_grades(grading_fitted, grading_root, tmp_path):
    from relgrade.grading import stage as S
    from relgrade.grading.cascade import TeacherCascade
    from relgrade.grading.llm_judge import LLMJudgeTeacher, LLMJudgeUnavailable

    url = f"http://127.0.0.1:{free_port()}/v1"
    g = grading_root["cfg"].grading
    cfg = grading_root["cfg"].model_copy(update={"grading": g.model_copy(update={"llm_judge": _judge_settings(grading_root, url)})})
    cal = grading_fitted["cal"]
    with pytest.raises(LLMJudgeUnavailable, match="unreachable"):
        S.build_cascade(cfg, cal)
    # graded anyway (e.g. the endpoint died mid-run): failed pairs keep their earlier grade
    llm = LLMJudgeTeacher(_judge_settings(grading_root, url, max_retries=1), tmp_path / "c.sqlite")
    cas = TeacherCascade(cal.stacks, cal.thresholds, llm, llm_threshold=1.0)
    base = TeacherCascade(cal.stacks, cal.thresholds)
    pairs = grading_fitted["inp"].union.head(40)
    res = cas.grade(pairs, grading_fitted["fz"], None, llm_share=0.1)
    ref = base.grade(pairs, grading_fitted["fz"])
    assert res.llm_failed == 4 and res.stage.max() <= 3
    np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6)
    assert llm.summary()["failed"] == 4 and llm.summary()["retries"] == 4


def test_llm_judge_retries_throttling_and_caches_answers(grading_fitted, grading_root, tmp_path):
    from relgrade.grading.llm_judge import LLMJudgeTeacher

    from openai_server import serve

    q, it = grading_fitted["fz"].texts(grading_fitted["inp"].sets["test"].head(6))
    with serve(_ce_grader(grading_fitted), fail_first=3, fail_status=429) as srv:
        llm = LLMJudgeTeacher(_judge_settings(grading_root, srv.url, concurrency=2), tmp_path / "cache.sqlite")
        first = llm.grade_texts(q, it)
        assert (first >= 0).all() and llm.stats["retries"] == 3 and llm.stats["failed"] == 0
        assert srv.completions == 6 and llm.stats["prompt_tokens"] > 0
        again = LLMJudgeTeacher(_judge_settings(grading_root, srv.url), tmp_path / "cache.sqlite").grade_texts(q, it)
        assert (again == first).all() and srv.completions == 6  # a rerun never pays twice
    with serve(_ce_grader(grading_fitted), fail_first=100, fail_status=400) as srv:  # not retryable
        llm = LLMJudgeTeacher(_judge_settings(grading_root, srv.url, cache=False), None)
        assert (llm.grade_texts(q[:2], it[:2]) == -1).all() and llm.stats["retries"] == 0 and srv.requests == 2


@pytest.mark.integration
def test_grade_flow_with_a_live_llm_judge_on_loopback(grading_fitted, grading_root, tmp_path):
    """The whole stage with the judge as its last stage, against an OpenAI-compatible
    server on loopback answering from the trained stage-2 cross-encoder: escalated union
    pairs are judged, the judge's agreement with the human grades is measured through the
    same HTTP path, and tokens and latency reach the report."""
    from flows.grade import grade_flow
    from relgrade.io import read_parquet

    from openai_server import serve

    dst = tmp_path / "llm"
    _copy_inputs(grading_root["path"], dst)
    with serve(_ce_grader(grading_fitted)) as srv:
        ov = {**grading_root["overrides"], "data_root": str(dst),
              "grading": {**GRADING_OVERRIDES, "llm_judge": {"enabled": True, "base_url": srv.url, "max_share": 0.05,
                                                             "min_confidence": 1.0, "eval_pairs": 40, "few_shot": 4},
                          # the tiny model behind the endpoint judges some random probe pairs relevant
                          "probe": {"random_pairs": 300, "min_random_grade0_share": 0.9}}}
        out = grade_flow("quick", ov)
        served = srv.completions
    j = out["llm_judge"]
    assert j["requests"] >= served > 0 and j["prompt_tokens"] > 0 and j["latency_median_s"] is not None
    assert j["union_pairs_judged"] > 0 and j["few_shot"] == 4
    g = read_parquet(dst / "grading" / "grades.parquet")
    assert (g["deciding_stage"] == 4).sum() > 0 and g["teacher_version"].str.startswith("llm-judge@").any()
    m = out["metrics"]["llm_judge_alone"]
    assert m["n"] == 40 - m["pairs_failed"] and 0 <= m["binary"] <= 1


def test_bad_union_is_rejected_and_nothing_is_written(grading_root, tmp_path):
    from relgrade.config import load_config
    from relgrade.contract import ContractError
    from relgrade.grading.stage import load_inputs
    from relgrade.io import read_parquet, write_parquet_atomic

    cfg = load_config("quick", overrides={**grading_root["overrides"], "data_root": str(tmp_path / "bad")})
    shutil.copytree(grading_root["path"] / "contract", cfg.paths.contract)
    u = read_parquet(grading_root["cfg"].paths.union(grading_root["cfg"].snapshot_ts))
    write_parquet_atomic(u.drop(columns=["rank_dense"]), cfg.paths.union(cfg.snapshot_ts))
    with pytest.raises(ContractError, match="rank_dense"):
        load_inputs(cfg)
    write_parquet_atomic(pd.concat([u, u.head(3)]), cfg.paths.union(cfg.snapshot_ts))
    with pytest.raises(ContractError, match="duplicated"):
        load_inputs(cfg)
    assert not cfg.paths.grades.exists()
