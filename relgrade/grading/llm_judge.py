"""The LLM judge: an OpenAI-compatible chat endpoint as the last stage of the cascade."""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES
from relgrade.grading.teachers import Teacher

log = logging.getLogger("relgrade.grading")


class LLMJudgeUnavailable(RuntimeError):
    """The configured LLM endpoint could not be reached or answered nonsense."""


class LLMJudgeTeacher(Teacher):
    """A final stage served by an OpenAI-compatible chat endpoint (``POST
    {base_url}/chat/completions``). The judge answers one digit 0..3; its distribution is
    ``judge_confidence`` on that grade and the rest spread evenly. Pairs it cannot grade
    come back as NaN rows: the cascade keeps the previous stage's grade for them."""

    kind = "llm_judge"
    PROMPT = ("You grade product-search relevance. Query: {query}\nProduct: {item}\n"
              "Answer with one digit: 0 irrelevant, 1 partially relevant, 2 relevant, 3 exact match.")

    def __init__(self, base_url: str, model: str, api_key_env: str = "RELGRADE_LLM_API_KEY", timeout_s: float = 20.0,
                 judge_confidence: float = 0.85):
        super().__init__("llm_judge", f"llm-{model}@{base_url}")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.timeout_s, self.judge_confidence = timeout_s, judge_confidence

    def check(self) -> None:
        """Raise :class:`LLMJudgeUnavailable` with the reason when the endpoint is down."""
        import httpx

        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise LLMJudgeUnavailable(f"LLM judge at {self.base_url} is unreachable ({type(exc).__name__}: {exc}); "
                                      "disable grading.llm_judge or start the endpoint") from exc
        if r.status_code >= 400:
            raise LLMJudgeUnavailable(f"LLM judge at {self.base_url}/models answered HTTP {r.status_code}")

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def grade_one(self, client, query: str, item: str) -> int:
        body = {"model": self.model, "temperature": 0, "max_tokens": 2,
                "messages": [{"role": "user", "content": self.PROMPT.format(query=query, item=item)}]}
        r = client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers(), timeout=self.timeout_s)
        r.raise_for_status()
        text = r.json()["choices"][0]["message"]["content"].strip()
        digit = next((c for c in text if c in "0123"), None)
        if digit is None:
            raise LLMJudgeUnavailable(f"LLM judge answered {text[:40]!r}, not a grade 0..3")
        return int(digit)

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        q, it = ctx.texts(pairs)
        return self.logits_texts(q, it)

    def logits_texts(self, queries: list[str], items: list[str]) -> np.ndarray:
        """log-probabilities; NaN rows for pairs the judge could not grade."""
        import httpx

        out = np.full((len(queries), N_GRADES), np.nan)
        rest = (1.0 - self.judge_confidence) / (N_GRADES - 1)
        errors = 0
        with httpx.Client() as client:
            for i, (a, b) in enumerate(zip(queries, items)):
                try:
                    g = self.grade_one(client, a, b)
                except (httpx.HTTPError, LLMJudgeUnavailable, KeyError, ValueError) as exc:
                    errors += 1
                    if errors == 1:
                        log.error("LLM judge failed on a pair (%s); such pairs keep the previous stage's grade", exc)
                    continue
                p = np.full(N_GRADES, rest)
                p[g] = self.judge_confidence
                out[i] = np.log(p)
        self.last_errors = errors
        return out
