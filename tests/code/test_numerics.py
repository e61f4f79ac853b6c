"""The numeric path (relgrade/numerics.py): the suite runs fp32 whatever the CPU, the one
bf16 test runs where the CPU has bf16 hardware, the device setting falls back to the CPU, and the
device and precisions are part of every stage's cache key and run record."""
from __future__ import annotations

import pytest

from relgrade.config import load_config
from relgrade.numerics import DeviceError, cpu_has_bf16, numerics, numerics_key, resolve_device, resolve_precision


def test_the_suite_runs_the_fp32_path():
    # conftest / scripts/test.sh force it, so no assertion depends on the CPU's bf16 support
    assert resolve_precision("auto") == "fp32"


def test_forcing_and_explicit_settings(monkeypatch):
    monkeypatch.setenv("RELGRADE_PRECISION", "bf16")
    assert resolve_precision("auto") == "bf16"
    assert resolve_precision("fp32") == "fp32"  # an explicit setting is kept
    monkeypatch.setenv("RELGRADE_PRECISION", "auto")
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    monkeypatch.setenv("RELGRADE_PRECISION", "fp16")
    with pytest.raises(ValueError, match="RELGRADE_PRECISION"):
        resolve_precision("auto")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("int4")


def test_device_falls_back_to_the_cpu_and_cuda_without_one_is_an_error(tmp_path):
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")
        cfg = load_config("quick", overrides={"data_root": str(tmp_path), "device": "cuda"})
        with pytest.raises(DeviceError):
            numerics(cfg)
    with pytest.raises(ValueError):
        load_config("quick", overrides={"data_root": str(tmp_path), "device": "tpu"})


def test_the_numeric_path_is_in_every_stage_key_and_recorded(tmp_path, monkeypatch):
    from flows.runtime import stage_key

    cfg = load_config("quick", overrides={"data_root": str(tmp_path)})
    fp32 = stage_key("mine", cfg, ["mining"], [])
    assert stage_key("mine", cfg, ["mining"], []) == fp32  # deterministic
    monkeypatch.setenv("RELGRADE_PRECISION", "bf16")
    assert stage_key("mine", cfg, ["mining"], []) != fp32
    assert '"dense_channel_encoding": "bf16"' in numerics_key(cfg)
    monkeypatch.setenv("RELGRADE_PRECISION", "fp32")
    n = numerics(cfg)
    assert n["device"] == resolve_device("auto") and n["precision_forced"] == "fp32"
    assert set(n["precision"]) == {"dense_channel_encoding", "student_encoding", "student_training", "teachers"}
    assert set(n["cpu"]["isa"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} and n["torch"]["threads"] >= 1
    assert n["precision"]["student_training"] == "fp32"  # auto, forced
    assert n["blas"] and all("error" not in b for b in n["blas"])


@pytest.mark.skipif(not cpu_has_bf16(), reason="the bf16 path is what `auto` runs only where the CPU multiplies "
                    "bf16 in hardware (AMX or AVX-512 BF16); this CPU does neither, and bf16 would be emulated")
def test_the_bf16_path_encodes_like_fp32():
    """Where `auto` would take bf16 (outside the suite), its embeddings agree with fp32's
    (cosine >= 0.999)."""
    import numpy as np

    from relgrade.mining.channels.dense import load_model
    from training.index import encode

    model = load_model()
    texts = ["cordless drill 18v", "white interior paint 1 gal", "pvc pipe 3/4 in", "led bulb 60w soft white"] * 8
    a = encode(model, texts, 16, 32, "fp32", 1e9)
    b = encode(model, texts, 16, 32, "bf16", 1e9)
    assert float(np.min((a * b).sum(axis=1))) >= 0.999
