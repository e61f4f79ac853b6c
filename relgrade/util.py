"""Small helpers every stage shares: progress lines with rate and ETA, UTC time, atomic
JSON writes, peak memory."""
from __future__ import annotations

import json
import logging
import os
import resource
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd


class Progress:
    """Logs ``what: done/total unit (pct), rate unit/s, elapsed, ETA`` at most every
    ``every_s`` seconds and always at the end. Thread-safe; ``callback(done, total,
    rate, eta)`` (optional) sees every update."""

    def __init__(self, what: str, total: int, every_s: float = 10.0, logger: logging.Logger | None = None,
                 unit: str = "", callback: Callable[[int, int, float, float], None] | None = None):
        self.what, self.total, self.every_s, self.unit = what, int(total), every_s, unit
        self.log = logger or logging.getLogger("relgrade")
        self.callback = callback
        self.t0 = time.perf_counter()
        self.last = -1e18
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None = None, extra: str = "", force: bool = False) -> None:
        with self._lock:
            if total is not None:
                self.total = int(total)
            now = time.perf_counter()
            el = max(now - self.t0, 1e-9)
            rate = done / el
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            if force or now - self.last >= self.every_s or done >= self.total:
                self.last = now
                unit = f" {self.unit}" if self.unit else ""
                self.log.info("%s: %d/%d%s (%.0f%%), %.1f%s/s, elapsed %.0fs, ETA %.0fs%s", self.what, done, self.total,
                              unit, 100.0 * done / max(self.total, 1), rate, unit, el, eta,
                              f" ({extra})" if extra else "")
            if self.callback is not None:
                self.callback(done, self.total, rate, eta)

    __call__ = update

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class Stopwatch:
    """Seconds per named step: ``with clock("train"): ...``; ``clock.laps`` maps each step
    to its seconds (a step entered twice adds up), ``clock.total`` is the time since the
    stopwatch started."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.laps: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.laps[step] = self.laps.get(step, 0.0) + time.perf_counter() - t

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(ts) -> pd.Timestamp:
    """``ts`` as a UTC ``pd.Timestamp`` (naive means UTC), precision untouched."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def utc_timestamp(ts) -> pd.Timestamp:
    """UTC, microsecond precision (the contract's timestamp convention)."""
    return to_utc(ts).floor("us")


def write_json_atomic(path: Path, doc, indent: int = 2, sort_keys: bool = True) -> Path:
    """JSON to a temp file beside ``path``, then renamed: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=indent, sort_keys=sort_keys, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# ---------------------------------------------------------------- sampled shares
def normal_quantile(confidence: float) -> float:
    """One-sided standard normal quantile z with P(Z <= z) = ``confidence``."""
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(confidence))


def wilson_interval(successes: int, n: int, confidence: float = 0.99) -> tuple[float, float]:
    """Two-sided Wilson score interval of a sampled share (each side at ``confidence``)."""
    import math

    if n <= 0:
        return 0.0, 1.0
    z = normal_quantile(confidence)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def share_floor(required: float, n: int, confidence: float = 0.99) -> float:
    """The least sampled share p-hat, out of ``n`` draws, whose Wilson upper bound at
    ``confidence`` still reaches ``required``: a gate that refuses p-hat below it refuses
    only when the sample shows, at that confidence, a true share under ``required``.
    Exact, since the Wilson interval inverts the score test:
    upper(p-hat) >= p0  <=>  p-hat >= p0 - z sqrt(p0 (1 - p0) / n)."""
    import math

    if n <= 0:
        return 0.0
    z = normal_quantile(confidence)
    return max(0.0, required - z * math.sqrt(required * (1 - required) / n))
