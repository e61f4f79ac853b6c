"""The LLM judge: an OpenAI-compatible chat-completions endpoint as the cascade's last
stage (``grading.llm_judge``).

* **Prompt** (version ``PROMPT_VERSION``): the grading guideline (0 irrelevant .. 3 exact
  match, the same scale as the human judgments), ``few_shot`` examples drawn from the
  train-split judgments (two per grade, seeded), then the pair. The judge answers one
  digit.
* **Concurrency**: at most ``concurrency`` requests in flight (a thread pool over one
  HTTP client).
* **Retries**: HTTP 429, 5xx, timeouts and connection errors are retried up to
  ``max_retries`` times with exponential backoff (``backoff_s`` x 2^attempt, or the
  server's ``Retry-After``); other 4xx answers and unparseable replies are not.
* **Cache**: every answer is stored in SQLite under ``<data_root>/cache/llm_judge.sqlite``
  keyed by (model, prompt version, query text, item text): a rerun, a resumed run or
  another stage asking about the same pair never pays twice.
* **Accounting**: requests, cache hits, retries, failures, prompt and completion tokens
  (from the response's ``usage``) and request latency, in the grading report.

A pair the judge cannot grade comes back as a NaN row: the cascade keeps the grade of
the stage below for it and counts it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES
from relgrade.grading.teachers import Teacher

log = logging.getLogger("relgrade.grading")

PROMPT_VERSION = "relgrade-judge-v2"
GUIDELINE = (
    "You are a relevance rater for a home-improvement store's product search. Given a shopper's query and one "
    "product title, rate how relevant the product is to the query, judging from the title alone:\n"
    "3 = exact match: the product is what the shopper asked for (right product type; brand, size, colour, "
    "material, count or model as named, where named).\n"
    "2 = relevant: the right product type with a wrong or unstated attribute, or a close substitute.\n"
    "1 = partially relevant: an accessory or part of the requested product, or a related product a shopper "
    "might still consider.\n"
    "0 = irrelevant: a different kind of product, even if some words overlap.\n"
    "Misspellings in the query mean what the shopper meant. Answer with one digit: 0, 1, 2 or 3."
)
_RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMJudgeUnavailable(RuntimeError):
    """The configured LLM endpoint could not be reached or answered nonsense."""


class _Fatal(Exception):
    """A request that retrying cannot fix (4xx other than the retryable ones)."""


def few_shot_examples(judged: pd.DataFrame, texts, k: int, seed: int) -> list[tuple[str, str, int]]:
    """``k`` (query, title, grade) examples from train-split judgments: an equal number
    per grade, seeded. ``texts(pairs) -> (queries, titles)``."""
    if k <= 0 or len(judged) == 0:
        return []
    rng = np.random.default_rng(seed)
    per = max(1, k // N_GRADES)
    rows = []
    for g in range(N_GRADES):
        part = judged[judged["grade"] == g]
        if len(part):
            rows.append(part.iloc[rng.choice(len(part), min(per, len(part)), replace=False)])
    if not rows:
        return []
    pick = pd.concat(rows).iloc[:k]
    q, it = texts(pick)
    return [(a, b, int(g)) for a, b, g in zip(q, it, pick["grade"])]


class JudgeCache:
    """Answers by (model, prompt version, query, item), in SQLite (thread-safe)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._db = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, prompt TEXT, "
                             "grade INTEGER, reply TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, at REAL)")
            self._db.commit()

    @staticmethod
    def key(model: str, query: str, item: str) -> str:
        return hashlib.sha256("\x1f".join([model, PROMPT_VERSION, query, item]).encode()).hexdigest()

    def get(self, key: str) -> int | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT grade FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def put(self, key: str, model: str, grade: int, reply: str, usage: dict) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (key, model, PROMPT_VERSION, grade, reply[:200], usage.get("prompt_tokens"),
                              usage.get("completion_tokens"), time.time()))
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # a grading worker on Ray opens its own connection to the same file (SQLite locks it)
    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class LLMJudgeTeacher(Teacher):
    """The judge as a teacher: its answer becomes a distribution with
    ``judge_confidence`` on the answered grade and the rest spread evenly."""

    kind = "llm_judge"

    def __init__(self, settings, cache_path: Path | None = None, examples: list[tuple[str, str, int]] | None = None):
        super().__init__("llm_judge", f"llm-{settings.model}@{settings.base_url.rstrip('/')}:{PROMPT_VERSION}")
        self.s = settings
        self.base_url = settings.base_url.rstrip("/")
        self.examples = examples or []
        self.cache = JudgeCache(cache_path if settings.cache else None)
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failed": 0, "prompt_tokens": 0,
                      "completion_tokens": 0, "latency_s": []}
        self._stats_lock = threading.Lock()

    STAT_KEYS = ("requests", "cache_hits", "retries", "failed", "prompt_tokens", "completion_tokens")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_stats_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stats_lock = threading.Lock()

    def take_stats(self) -> dict:
        """The counters since the last call, reset (a Ray grading worker returns them with
        each chunk, and the driver's judge adds them up: :meth:`add_stats`)."""
        with self._stats_lock:
            out = {k: self.stats[k] for k in self.STAT_KEYS} | {"latency_s": list(self.stats["latency_s"])}
            self.stats.update({k: 0 for k in self.STAT_KEYS}, latency_s=[])
        return out

    def add_stats(self, other: dict) -> None:
        with self._stats_lock:
            for k in self.STAT_KEYS:
                self.stats[k] += int(other.get(k, 0))
            self.stats["latency_s"].extend(other.get("latency_s", []))

    # ------------------------------------------------------------------ protocol
    def _headers(self) -> dict:
        key = os.environ.get(self.s.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check(self) -> None:
        """Raise :class:`LLMJudgeUnavailable` with the reason when the endpoint is down."""
        import httpx

        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=self.s.timeout_s)
        except httpx.HTTPError as exc:
            raise LLMJudgeUnavailable(f"LLM judge at {self.base_url} is unreachable ({type(exc).__name__}: {exc}); "
                                      "disable grading.llm_judge or start the endpoint") from exc
        if r.status_code >= 400:
            raise LLMJudgeUnavailable(f"LLM judge at {self.base_url}/models answered HTTP {r.status_code}")

    def messages(self, query: str, item: str) -> list[dict]:
        msgs = [{"role": "system", "content": GUIDELINE}]
        for q, it, g in self.examples:
            msgs.append({"role": "user", "content": f"Query: {q}\nProduct: {it}"})
            msgs.append({"role": "assistant", "content": str(g)})
        msgs.append({"role": "user", "content": f"Query: {query}\nProduct: {item}"})
        return msgs

    @staticmethod
    def parse(reply: str) -> int:
        m = re.search(r"[0-3]", reply or "")
        if m is None:
            raise LLMJudgeUnavailable(f"LLM judge answered {reply[:40]!r}, not a grade 0..3")
        return int(m.group(0))

    def _request(self, client, query: str, item: str) -> tuple[int, str, dict]:
        import httpx

        body = {"model": self.s.model, "temperature": 0, "max_tokens": self.s.max_tokens,
                "messages": self.messages(query, item)}
        for attempt in range(self.s.max_retries + 1):
            t0 = time.perf_counter()
            try:
                r = client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers(),
                                timeout=self.s.timeout_s)
                status = r.status_code
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                status, r = None, exc
            with self._stats_lock:
                self.stats["requests"] += 1
                self.stats["latency_s"].append(time.perf_counter() - t0)
            if status is not None and status < 400:
                doc = r.json()
                reply = doc["choices"][0]["message"]["content"]
                usage = doc.get("usage") or {}
                with self._stats_lock:
                    self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                    self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
                return self.parse(reply), reply, usage
            if status is not None and status not in _RETRYABLE:
                raise _Fatal(f"HTTP {status}: {r.text[:200]}")
            if attempt == self.s.max_retries:
                raise LLMJudgeUnavailable(f"gave up after {attempt + 1} attempts: "
                                          + (f"HTTP {status}" if status is not None else f"{type(r).__name__}: {r}"))
            wait = self.s.backoff_s * (2 ** attempt)
            if status is not None and r.headers.get("retry-after"):
                try:
                    wait = max(wait, float(r.headers["retry-after"]))
                except ValueError:
                    pass
            with self._stats_lock:
                self.stats["retries"] += 1
            time.sleep(min(wait, 30.0))
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ grading
    def grade_texts(self, queries: list[str], items: list[str]) -> np.ndarray:
        """Grade per pair (-1 where the judge failed), cached answers first."""
        import httpx

        n = len(queries)
        out = np.full(n, -1, dtype=np.int64)
        keys = [JudgeCache.key(self.s.model, q, it) for q, it in zip(queries, items)]
        todo = []
        for i, k in enumerate(keys):
            g = self.cache.get(k)
            if g is None:
                todo.append(i)
            else:
                out[i] = g
        self.stats["cache_hits"] += n - len(todo)
        if not todo:
            return out
        errors: list[str] = []
        with httpx.Client() as client:
            def one(i: int) -> None:
                try:
                    g, reply, usage = self._request(client, queries[i], items[i])
                except (LLMJudgeUnavailable, _Fatal, KeyError, ValueError, json.JSONDecodeError) as exc:
                    with self._stats_lock:
                        self.stats["failed"] += 1
                        if len(errors) < 3:
                            errors.append(str(exc))
                    return
                out[i] = g
                self.cache.put(keys[i], self.s.model, g, reply, usage)

            with ThreadPoolExecutor(max_workers=max(1, self.s.concurrency)) as pool:
                list(pool.map(one, todo))
        if errors:
            log.error("LLM judge failed on %d of %d pairs (e.g. %s): they keep the grade of the stage below",
                      self.stats["failed"], len(todo), errors[0])
        return out

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        q, it = ctx.texts(pairs)
        return self.logits_texts(q, it)

    def logits_texts(self, queries: list[str], items: list[str]) -> np.ndarray:
        """log-probabilities; NaN rows for pairs the judge could not grade."""
        g = self.grade_texts(queries, items)
        out = np.full((len(g), N_GRADES), np.nan)
        rest = (1.0 - self.s.judge_confidence) / (N_GRADES - 1)
        ok = g >= 0
        p = np.full((int(ok.sum()), N_GRADES), rest)
        p[np.arange(int(ok.sum())), g[ok]] = self.s.judge_confidence
        out[ok] = np.log(p)
        self.last_errors = int((~ok).sum())
        return out

    def proba_from_logits(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z)

    def summary(self) -> dict:
        lat = np.asarray(self.stats["latency_s"]) if self.stats["latency_s"] else np.zeros(0)
        return {k: v for k, v in self.stats.items() if k != "latency_s"} | {
            "prompt_version": PROMPT_VERSION, "model": self.s.model, "few_shot": len(self.examples),
            "latency_median_s": float(np.median(lat)) if len(lat) else None,
            "latency_p95_s": float(np.quantile(lat, 0.95)) if len(lat) else None}
