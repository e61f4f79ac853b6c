"""engine: ray against engine: local on the grading world (a 160-query slice of the quick
profile, tests/grading_world.py), on a real local Ray: the mined union, the grades, a
two-node cluster (ray.cluster_utils.Cluster) and a grading worker killed mid-run."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

try:
    import ray
except ImportError:  # pragma: no cover - scripts/test.sh installs it; a bare pytest without it fails clearly
    ray = None


pytestmark = pytest.mark.integration


def _ray_cfg(cfg, root, chunk_size: int | None = None, **ray_kw):
    r = cfg.ray.model_copy(update={"workers": 2, "cpus_per_worker": 1.0, **ray_kw})
    out = cfg.model_copy(update={"engine": "ray", "ray": r, "data_root": str(root)})
    return _chunked(out, chunk_size)


def _chunked(cfg, chunk_size: int | None):
    if chunk_size is None:
        return cfg
    return cfg.model_copy(update={"grading": cfg.grading.model_copy(update={"chunk_size": chunk_size})})


@pytest.fixture(autouse=True)
def _require_ray():
    if ray is None:  # pragma: no cover
        pytest.fail("engine: ray needs the distributed extra: RELGRADE_EXTRAS=test,spark,distributed bash "
                    "scripts/setup.sh", pytrace=False)


@pytest.fixture
def local_ray():
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["query_id", "item_id"]).reset_index(drop=True)


def _grade_local(grading_root, grading_fitted, tmp_path, chunk_size: int | None = None):
    """The local path's grades of the root's union (its own chunk folder)."""
    from relgrade.grading import stage as S

    f = grading_fitted
    cfg = _chunked(grading_root["cfg"].model_copy(update={"data_root": str(tmp_path / "local")}), chunk_size)
    cascade = S.build_cascade(cfg, f["cal"], f["fz"], f["inp"])
    grades, stats = S.grade_union(cfg, f["fz"], f["inp"], cascade, f["cal"])
    assert stats["engine"] == "local" and stats["graded_chunks"] == stats["chunks"] > 2
    return cascade, grades


def _assert_same_grades(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.drop(columns=["graded_at"]), b.drop(columns=["graded_at"])
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-6)
    assert (a["grade"].to_numpy() == b["grade"].to_numpy()).all()


def test_ray_mining_union_equals_local(grading_root, tmp_path, local_ray):
    """Encoding on a Ray Data actor pool (an empty embedding cache: every text is
    encoded there) and the lexical and dense channels sharded by query over Ray actors
    (query batches of 40, four shards) give the local path's union row for row."""
    from relgrade.io import read_parquet
    from relgrade.mining.stage import mine

    cfg = grading_root["cfg"]
    p = cfg.paths
    tables = [read_parquet(p.table(t)) for t in ("catalog", "queries", "events")]
    small = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"query_batch_size": 40})})
    local = mine(small, *tables)["union"]  # the local path with the same query batches
    rcfg = _ray_cfg(small, p.root, search_shard_queries=40)
    rcfg = rcfg.model_copy(update={"mining": rcfg.mining.model_copy(
        update={"dense_cache_dir": str(tmp_path / "emb")})})
    out = mine(rcfg, *tables)
    st = out["stats"]["channels"]
    assert st["dense"]["channel_items_cache_hit"] is False and st["dense"]["channel_items_encoded"] > 1000
    # the work ran in Ray workers: they reported their memory with their results
    assert st["dense"]["channel_encode_ray_worker_peak_rss_mb"] > 100
    assert st["dense"]["channel_search_ray_worker_peak_rss_mb"] > 100
    assert st["lexical"]["channel_search_ray_worker_peak_rss_mb"] > 100
    assert len(list((tmp_path / "emb").glob("*.npy"))) >= 2  # items and queries encoded on Ray, cached
    pd.testing.assert_frame_equal(_sorted(out["union"]), _sorted(local), check_exact=True)


def test_shards_are_whole_query_batches(local_ray, grading_root):
    """A shard holds a whole number of the channel's query batches, so the workers score
    the local path's batches; the frames come back in query order."""
    from relgrade import engine
    from relgrade.io import read_parquet
    from relgrade.mining.stage import make_channel

    cfg = grading_root["cfg"]
    p = cfg.paths
    ch = make_channel("lexical", cfg)
    ch.batch_size = 30
    ch.fit(read_parquet(p.table("catalog")))
    q = read_parquet(p.table("queries"))
    rcfg = _ray_cfg(cfg, p.root, search_shard_queries=45)  # rounded up to 60: two batches of 30
    res, info = engine.search_sharded(rcfg, ch, q, 10)
    pd.testing.assert_frame_equal(res, ch.search_local(q, 10), check_exact=True)
    assert info["peak_rss_mb"] > 100 and 0 < info["start_s"] <= info["seconds"]
    empty, _ = engine.search_sharded(rcfg, ch, q.iloc[:0], 10)
    assert len(empty) == 0 and list(empty.columns) == ["query_id", "item_id", "rank", "score"]


def test_ray_grades_equal_local_and_resume_across_engines(grading_root, grading_fitted, tmp_path, local_ray):
    from relgrade.grading import stage as S

    f = grading_fitted
    cascade, local = _grade_local(grading_root, grading_fitted, tmp_path)
    rcfg = _ray_cfg(grading_root["cfg"], tmp_path / "ray")
    grades, stats = S.grade_union(rcfg, f["fz"], f["inp"], cascade, f["cal"])
    assert stats["engine"] == "ray" and stats["graded_chunks"] == stats["chunks"]
    assert sum(len(p) for p in stats["workers"].values()) == 2  # two actors shared the chunks
    _assert_same_grades(grades, local)
    assert (grades["deciding_stage"] > 1).any()  # the cross-encoders ran on the actors too
    # a Ray run stopped after two chunks, resumed by the local engine: the same grades
    mixed = _ray_cfg(grading_root["cfg"], tmp_path / "mixed")
    with pytest.raises(S.StopAfter):
        S.grade_union(mixed, f["fz"], f["inp"], cascade, f["cal"], stop_after=2)
    resumed, st2 = S.grade_union(mixed.model_copy(update={"engine": "local"}), f["fz"], f["inp"], cascade, f["cal"])
    assert st2["resumed_chunks"] == 2 and st2["graded_chunks"] == st2["chunks"] - 2
    _assert_same_grades(resumed, local)


def test_two_node_cluster_grades_match(grading_root, grading_fitted, tmp_path):
    """Two Ray nodes of one CPU each: the two grading actors land on different nodes
    and the grades equal the local path's."""
    from ray.cluster_utils import Cluster

    from relgrade.grading import stage as S

    f = grading_fitted
    cascade, local = _grade_local(grading_root, grading_fitted, tmp_path)
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        rcfg = _ray_cfg(grading_root["cfg"], tmp_path / "cluster", address=cluster.address)
        grades, stats = S.grade_union(rcfg, f["fz"], f["inp"], cascade, f["cal"])
        assert len(stats["workers"]) == 2, stats["workers"]  # chunks graded on both nodes
        _assert_same_grades(grades, local)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_killed_grading_worker_is_retried(grading_root, grading_fitted, tmp_path, local_ray):
    """SIGKILL one grading actor's process once the first chunk has landed: Ray restarts
    it, its chunks are retried, and the grades equal an uninterrupted run's."""
    from relgrade.grading import stage as S

    f = grading_fitted
    # small chunks: a dozen, so both actors still hold queued work when the first lands
    cascade, local = _grade_local(grading_root, grading_fitted, tmp_path, chunk_size=250)
    rcfg = _ray_cfg(grading_root["cfg"], tmp_path / "killed", chunk_size=250)
    chunks = S.chunk_dir(rcfg, f["inp"], cascade, f["cal"])
    started, killed = [], threading.Event()

    def killer():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(chunks.glob("chunk_*.parquet")):
            time.sleep(0.02)
        try:
            os.kill(started[0][0], signal.SIGKILL)
            killed.set()
        except ProcessLookupError:  # pragma: no cover - the run ended first: the assertion below says so
            pass

    th = threading.Thread(target=killer, daemon=True)

    def on_actors(pids):
        started.append(pids)
        th.start()

    grades, stats = S.grade_union(rcfg, f["fz"], f["inp"], cascade, f["cal"], on_actors=on_actors)
    th.join(5)
    assert killed.is_set()
    pids = {p for ps in stats["workers"].values() for p in ps}
    assert pids - set(started[0]), "no restarted worker graded a chunk"  # a new process took over
    assert stats["graded_chunks"] == stats["chunks"]
    _assert_same_grades(grades, local)


def test_grade_flow_on_ray_publishes_the_local_grades(grading_root, grading_run, tmp_path):
    """Prefect orchestrates, Ray grades: the grade flow with ``engine: ray`` on a copy of
    the root (its finished chunks removed) publishes the local flow's grades."""
    import shutil

    from flows.grade import grade_flow
    from relgrade.config import load_config
    from relgrade.io import read_parquet

    ray.shutdown()
    copy = tmp_path / "root"
    shutil.copytree(grading_root["path"], copy, ignore=shutil.ignore_patterns("chunks"))
    ov = {**grading_root["overrides"], "data_root": str(copy), "engine": "ray",
          "ray": {"num_cpus": 2, "workers": 2}}
    (load_config("quick", overrides=ov).paths.grading / "manifest.json").unlink()  # else the stage is done
    try:
        summary = grade_flow("quick", ov)
    finally:
        ray.shutdown()
    assert summary["union"]["engine"] == "ray" and summary["union"]["graded_chunks"] == summary["union"]["chunks"]
    local = read_parquet(load_config("quick", overrides=grading_root["overrides"]).paths.grades)
    ours = read_parquet(load_config("quick", overrides=ov).paths.grades)
    _assert_same_grades(ours, local)


def test_ray_grading_with_a_live_llm_judge_on_loopback(grading_root, grading_fitted, tmp_path, local_ray):
    """The LLM judge as the last stage on Ray: each worker calls the OpenAI-compatible
    server on loopback for its chunks, the grades equal the local engine's, and the
    driver's judge counts every request the workers made."""
    from openai_server import serve

    from relgrade.grading import stage as S
    from relgrade.grading.cascade import TeacherCascade
    from relgrade.grading.calibration import decide_grade
    from relgrade.grading.llm_judge import LLMJudgeTeacher

    f = grading_fitted
    cal, t = f["cal"], f["teachers"][1]
    judge = lambda q, p: int(decide_grade(t.proba_from_logits(t.logits_texts([q], [p])), "quadratic")[0])  # noqa: E731
    with serve(judge) as srv:
        settings = grading_root["cfg"].grading.llm_judge.model_copy(update={
            "enabled": True, "base_url": srv.url, "timeout_s": 10, "backoff_s": 0.01, "max_share": 0.03})

        def run(engine: str, name: str):
            cfg = grading_root["cfg"]
            cfg = cfg.model_copy(update={"data_root": str(tmp_path / name), "grading": cfg.grading.model_copy(
                update={"llm_judge": settings})})
            if engine == "ray":
                cfg = _ray_cfg(cfg, tmp_path / name)
            llm = LLMJudgeTeacher(settings, tmp_path / f"{name}.sqlite")  # a cache each: both pay the requests
            cas = TeacherCascade(cal.stacks, cal.thresholds, llm, llm_threshold=1.0, rule=cal.rule)
            grades, stats = S.grade_union(cfg, f["fz"], f["inp"], cas, cal)
            return grades, stats, llm.summary()

        local, st_l, j_l = run("local", "llm_local")
        before = srv.completions
        ray_grades, st_r, j_r = run("ray", "llm_ray")
        served_ray = srv.completions - before
    assert st_r["engine"] == "ray" and (ray_grades["deciding_stage"] == 4).sum() > 0
    assert st_r["counts"]["4"] == st_l["counts"]["4"] > 0
    assert j_r["requests"] == served_ray == j_l["requests"] > 0 and j_r["failed"] == 0
    assert j_r["prompt_tokens"] == j_l["prompt_tokens"] and j_r["latency_median_s"] is not None
    _assert_same_grades(ray_grades, local)
