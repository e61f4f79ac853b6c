"""The numeric path a run takes: which device the models run on, which precision each
model use resolves to, and what the machine offers (ISA flags, BLAS, threads).

Two settings decide it, both in the typed config:

- ``device: auto | cpu | cuda`` (top level): where the teachers, the student's training
  and every encoding run. ``auto`` takes a CUDA device when torch sees one, else the CPU;
  ``cuda`` without one is a configuration error, never a silent fallback.
- the ``*_precision`` settings of mining and training: ``auto`` resolves to bf16 where
  the CPU multiplies bf16 matrices in hardware (Intel AMX, AVX-512 BF16) or on a CUDA
  device with bf16, else fp32.

``RELGRADE_PRECISION=fp32`` (the test command sets it) makes every ``auto`` resolve to
fp32, so a machine with AMX runs what a machine without it runs; an explicit ``bf16``
setting is left as it is (the one bf16 test asks for it).

:func:`numerics` is the block every run records (``pipeline_run.json``, the stage
manifests, the reports); :func:`numerics_key` is its part that changes results, and it is
in every stage's cache key, so a cached stage is never reused across numeric paths.
"""
from __future__ import annotations

import json
import os
import platform

from relgrade.util import cpu_flags

PRECISION_ENV = "RELGRADE_PRECISION"
# the flags that decide a numeric path (and its speed) on x86 CPUs
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


class DeviceError(ValueError):
    """``device: cuda`` on a machine where torch sees no CUDA device."""


def forced_precision() -> str | None:
    v = os.environ.get(PRECISION_ENV, "").strip().lower()
    if v in ("", "auto"):
        return None
    if v not in ("fp32", "bf16"):
        raise ValueError(f"{PRECISION_ENV} must be fp32, bf16 or auto, got {v!r}")
    return v


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> ``RELGRADE_PRECISION`` when set, else ``bf16`` where the hardware
    multiplies bf16 (:func:`cpu_has_bf16`, or a bf16-capable CUDA device), else ``fp32``.
    Without bf16 hardware, bf16 autocast on CPU was 1.4x *slower* than fp32 (MiniLM
    encoding: 196 vs 277 texts/s on 2 cores), so auto keeps fp32 there; with AMX it was
    1.7x faster, with AVX-512 BF16 1.99x."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    forced = forced_precision()
    if forced:
        return forced
    if str(device).startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """The CPU multiplies bf16 matrices in hardware: Intel AMX, or AVX-512 BF16 (AMD Zen 4
    and later, Intel Cooper Lake). Measured on a 2-core AMD EPYC with AVX-512 BF16 and no
    AMX (benchmarks/results/device_cpu.json): bf16 encoding 1.99x fp32's texts/s (min cosine
    to fp32 0.99997), bf16 student training 1.62x fp32's steps/s."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str) -> str:
    """``cpu`` / ``cuda`` / ``auto`` -> the torch device string the models use."""
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise DeviceError("device is cuda, but torch sees no CUDA device (this torch is "
                          f"{torch.__version__}); set device: auto or cpu")
    return "cuda" if has_cuda else "cpu"


def autocast(device: str, precision: str):
    """The autocast context of one model call: bf16 when ``precision`` says so, on the
    device's own autocast; a no-op otherwise."""
    import torch

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def _blas() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info

        return [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                for d in threadpool_info()]
    except Exception as e:  # noqa: BLE001 - the record says why it is missing
        return [{"error": str(e)}]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numerics(cfg) -> dict:
    """The run's numeric path: per model use its device and precision, the CPU's ISA
    flags, the BLAS libraries and thread counts."""
    import torch

    device = resolve_device(cfg.device)
    flags = cpu_flags()
    m, t = cfg.mining, cfg.training
    return {
        "device": device,
        "device_setting": cfg.device,
        "precision_forced": forced_precision(),
        "precision": precisions(cfg, device),
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                "isa": {f: f in flags for f in ISA_FLAGS}},
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads(),
                  "mkldnn": bool(torch.backends.mkldnn.is_available()),
                  "cuda": torch.version.cuda, "cuda_device": torch.cuda.get_device_name(0) if device == "cuda" else None},
        "blas": _blas(),
        "threads": {"mining.dense_threads": m.dense_threads, "grading.threads": cfg.grading.threads,
                    "training.threads": t.threads},
    }


def precisions(cfg, device: str) -> dict:
    """Each model use's resolved precision."""
    m, t = cfg.mining, cfg.training
    return {"dense_channel_encoding": resolve_precision(m.dense_precision, device),
            "student_encoding": resolve_precision(t.encode_precision, device),
            "student_training": resolve_precision(t.train_precision, device), "teachers": "fp32"}


def numerics_key(cfg) -> str:
    """What of :func:`numerics` changes results: the device and every resolved precision."""
    device = resolve_device(cfg.device)
    return json.dumps({"device": device, "precision": precisions(cfg, device)}, sort_keys=True)
