"""Teachers: models that map (query, item) pairs to a distribution over grades 0..3.

Interface (:class:`Teacher`): ``logits(pairs, ctx)`` returns raw (n, 4) scores;
``predict_proba`` applies the teacher's temperature (fitted on dev,
:mod:`relgrade.grading.calibration`). ``ctx`` is the fitted
:class:`~relgrade.grading.features.PairFeaturizer` (features and texts of the pairs).
Every teacher has a ``version`` string (kind + digest of its settings and training
data) and is saved under ``<data_root>/models/teachers/stage<k>/<version>/``.

Stages shipped here:

1. :class:`GBMTeacher` - histogram gradient boosting on the cheap pair features;
2. :class:`CrossEncoderTeacher` - the base MiniLM fine-tuned as a mean-pooled 4-way
   cross-encoder on (query, item title) for a bounded number of steps, against soft
   targets from the numeric label where the source has one;
3. :class:`EnsembleTeacher` - mean of the calibrated log-probabilities of stage 1,
   stage 2 and a second cross-encoder trained longer on longer inputs.

:class:`LLMJudgeTeacher` is the pluggable final stage: an OpenAI-compatible chat
endpoint asked for a 0..3 grade (configured, not required).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import pandas as pd

from relgrade.grading.calibration import N_GRADES, softmax

log = logging.getLogger("relgrade.grading")


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() if not isinstance(p, (bytes, str)) else
                 (p if isinstance(p, bytes) else p.encode()))
        h.update(b"\x1f")
    return h.hexdigest()[:12]


def _log_progress(what: str, done: int, total: int, t0: float, state: dict, every_s: float) -> None:
    now = time.perf_counter()
    if now - state.get("last", -1e9) >= every_s or done >= total:
        state["last"] = now
        rate = done / max(now - t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        log.info("%s: %d/%d (%.1f/s, ETA %.0fs)", what, done, total, rate, eta)


class Teacher(ABC):
    """One stage of the cascade."""

    kind: str = "teacher"

    def __init__(self, stage: int, version: str):
        self.stage, self.version = stage, version
        self.temperature = 1.0
        self.train_s: float | None = None

    @abstractmethod
    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        """Raw (n, 4) scores for ``pairs`` (query_id, item_id [, union columns])."""

    def proba_from_logits(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature)

    def predict_proba(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        return self.proba_from_logits(self.logits(pairs, ctx))

    # persistence -----------------------------------------------------------
    def meta(self) -> dict:
        return {"kind": self.kind, "stage": self.stage, "version": self.version, "train_s": self.train_s}


def save_dir_atomic(final: Path, write) -> Path:
    """Write a model folder to a temp folder beside ``final`` and rename it into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------- stage 1
class GBMTeacher(Teacher):
    kind = "gbm"

    def __init__(self, version: str, stage: int = 1, model=None, threads: int = 1):
        super().__init__(stage, version)
        self.model, self.threads = model, threads

    @classmethod
    def train(cls, X: np.ndarray, y: np.ndarray, version: str, max_iter: int, learning_rate: float,
              max_leaf_nodes: int, l2: float, seed: int, stage: int = 1, threads: int = 1,
              raw: np.ndarray | None = None) -> "GBMTeacher":
        """Multinomial gradient boosting. With ``raw`` (the source's numeric label) it
        learns the same soft targets as the cross-encoders (:func:`soft_grade_targets`):
        each pair enters once per grade its target touches, weighted by that share."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        t0 = time.perf_counter()
        S = soft_grade_targets(y, raw)
        rows, grades = np.nonzero(S > 0)  # row-major: each pair's grades in order
        m = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
                                           l2_regularization=l2, random_state=seed, early_stopping=False)
        with threadpool_limits(threads):  # OpenMP spin-waits badly on a shared 2-core box
            m.fit(X[rows], grades, sample_weight=S[rows, grades])
        if list(m.classes_) != list(range(N_GRADES)):
            raise ValueError(f"stage-1 training labels must cover grades 0..3; got {list(m.classes_)}")
        t = cls(version, stage, m, threads)
        t.train_s = time.perf_counter() - t0
        log.info("stage %d GBM trained on %d pairs in %.1fs", stage, len(y), t.train_s)
        return t

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        return self.logits_from_features(ctx.transform(pairs))

    def logits_from_features(self, X: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):
            return np.log(np.clip(self.model.predict_proba(X), 1e-9, 1.0))

    def save(self, path: Path) -> Path:
        def w(d: Path):
            (d / "model.pkl").write_bytes(pickle.dumps(self.model))
            (d / "meta.json").write_text(json.dumps(self.meta(), indent=1))
        return save_dir_atomic(path, w)

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> "GBMTeacher":
        meta = json.loads((Path(path) / "meta.json").read_text())
        t = cls(meta["version"], meta["stage"], pickle.loads((Path(path) / "model.pkl").read_bytes()), threads)
        t.train_s = meta.get("train_s")
        return t


# --------------------------------------------------------------------------- stage 2/3
def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def build_cross_encoder(base_model: str, max_seq_length: int, layers: int | None = None):
    """A sentence-transformers ``CrossEncoder`` over (query, item text): the base
    transformer, **mean pooling** over the pair's tokens, and a linear 4-way head.

    Mean pooling, not the usual [CLS] pooler + classifier: the base MiniLM was trained
    as a mean-pooled bi-encoder, its [CLS] state carries little, and a [CLS] head
    fine-tuned from it learned nothing here (dev Spearman 0.05-0.09 after 400-600 steps
    at lr 3e-5 and 1e-4) while the mean-pooled head reached 0.34 in 400 steps
    (docs/grading.md). ``layers`` keeps only the first N transformer layers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    tr = Transformer(str(base_model), transformer_task="feature-extraction", max_seq_length=max_seq_length)
    enc_layers = tr.auto_model.encoder.layer
    if layers is not None:
        if not 1 <= layers <= len(enc_layers):
            raise ValueError(f"layers must be in 1..{len(enc_layers)}, got {layers}")
        tr.auto_model.encoder.layer = enc_layers[:layers]
        tr.auto_model.config.num_hidden_layers = layers
    dim = tr.auto_model.config.hidden_size
    head = Dense(dim, N_GRADES, activation_function=torch.nn.Identity(), module_input_name="sentence_embedding",
                 module_output_name="scores")
    return CrossEncoder(modules=[tr, Pooling(dim, "mean"), head], device="cpu")


def soft_grade_targets(grade: np.ndarray, raw: np.ndarray | None) -> np.ndarray:
    """(n, 4) training targets. Where the source has a numeric label (Home Depot: the
    mean of about three ratings) the target spreads over the two grades around the
    label's position, found by interpolating between the mean raw score of each grade on
    the same training pairs: a 2.33 sits between grade 2 and 3 and says so, which the
    hard grade (2) hides. Rows without a numeric label get the one-hot grade."""
    grade = np.asarray(grade, dtype=np.int64)
    out = np.zeros((len(grade), N_GRADES), dtype=np.float32)
    out[np.arange(len(grade)), grade] = 1.0
    if raw is None:
        return out
    raw = np.asarray(raw, dtype=float)
    ok = ~np.isnan(raw)
    centers = np.array([np.nanmean(raw[ok & (grade == g)]) if (ok & (grade == g)).any() else np.nan
                        for g in range(N_GRADES)])
    if np.isnan(centers).any() or not np.all(np.diff(centers) > 0):
        return out  # numeric labels not monotone in the grade: keep hard targets
    pos = np.interp(raw[ok], centers, np.arange(N_GRADES, dtype=float))
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, N_GRADES - 1)
    w = (pos - lo).astype(np.float32)
    soft = np.zeros((int(ok.sum()), N_GRADES), dtype=np.float32)
    r = np.arange(len(lo))
    soft[r, lo] += 1.0 - w
    soft[r, hi] += w
    out[ok] = soft
    return out


class CrossEncoderTeacher(Teacher):
    """A sentence-transformers CrossEncoder (:func:`build_cross_encoder`) with a 4-way
    head on (query, item text)."""

    kind = "cross_encoder"

    def __init__(self, version: str, stage: int, model, max_seq_length: int, batch_size: int = 128, threads: int = 2,
                 int8: bool = False):
        super().__init__(stage, version)
        self.ce = model  # sentence_transformers.CrossEncoder
        self.max_seq_length, self.batch_size, self.threads = max_seq_length, batch_size, threads
        self.int8 = int8  # inference through an int8 dynamic-quantized copy of the Linear layers
        self._qmodel = None

    @property
    def layers(self) -> int:
        return int(self.ce[0].auto_model.config.num_hidden_layers)

    def inference_model(self):
        """The network :meth:`logits_texts` runs: fp32 (the CrossEncoder's module stack),
        or its int8 dynamic-quantized copy."""
        if not self.int8:
            return self.ce
        if self._qmodel is None:
            import warnings

            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao deprecation notices
                self._qmodel = torch.ao.quantization.quantize_dynamic(self.ce, {torch.nn.Linear}, dtype=torch.qint8)
        return self._qmodel

    @classmethod
    def train(cls, queries: list[str], items: list[str], y: np.ndarray, version: str, base_model: str, stage: int,
              steps: int, batch_size: int, lr: float, warmup_share: float, max_seq_length: int, seed: int,
              threads: int = 2, progress_every_s: float = 10.0, infer_batch_size: int = 128,
              layers: int | None = None, raw: np.ndarray | None = None) -> "CrossEncoderTeacher":
        """Fine-tune ``base_model`` for exactly ``steps`` AdamW steps (linear warm-up
        and decay, cross-entropy against :func:`soft_grade_targets`), batches drawn
        from seeded epochs. ``layers`` keeps only the first N transformer layers (a
        cheaper student of the same base model; None keeps all)."""
        import torch
        import torch.nn.functional as F

        _set_threads(threads)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        ce = build_cross_encoder(base_model, max_seq_length, layers)
        tok = ce.tokenizer
        ce.train()
        opt = torch.optim.AdamW(ce.parameters(), lr=lr, weight_decay=0.01)
        warm = max(1, int(steps * warmup_share))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
        rng = np.random.default_rng(seed)
        n = len(y)
        targets = torch.as_tensor(soft_grade_targets(y, raw))
        order, pos = rng.permutation(n), 0
        state: dict = {}
        losses = []
        for step in range(steps):
            if pos + batch_size > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            enc = tok([queries[i] for i in idx], [items[i] for i in idx], padding=True, truncation=True,
                      max_length=max_seq_length, return_tensors="pt")
            z = ce(dict(enc))["scores"]
            loss = -(targets[idx] * F.log_softmax(z, dim=-1)).sum(-1).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ce.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            _log_progress(f"stage {stage} cross-encoder training steps (loss {np.mean(losses[-50:]):.3f})",
                          step + 1, steps, t0, state, progress_every_s)
        ce.eval()
        t = cls(version, stage, ce, max_seq_length, infer_batch_size, threads)
        t.train_s = time.perf_counter() - t0
        t.final_loss = float(np.mean(losses[-50:])) if losses else None
        return t

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        q, it = ctx.texts(pairs)
        return self.logits_texts(q, it)

    def logits_texts(self, queries: list[str], items: list[str], progress: bool = False, model=None) -> np.ndarray:
        """Fast path: tokenize once, sort by length, pad per batch, inference mode.
        ``model`` replaces the teacher's network (benchmark: an int8 copy)."""
        import torch

        _set_threads(self.threads)
        n = len(queries)
        out = np.zeros((n, N_GRADES), dtype=np.float32)
        if n == 0:
            return out
        tok, model = self.ce.tokenizer, model if model is not None else self.inference_model()
        model.eval()
        enc = tok(list(queries), list(items), truncation=True, max_length=self.max_seq_length)
        ids = enc["input_ids"]
        tti = enc.get("token_type_ids")
        lens = np.fromiter((len(a) for a in ids), dtype=np.int64, count=n)
        order = np.argsort(-lens, kind="stable")
        pad = tok.pad_token_id or 0
        t0, state = time.perf_counter(), {}
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                b = order[s:s + self.batch_size]
                L = int(lens[b].max())
                x = np.full((len(b), L), pad, dtype=np.int64)
                tt = np.zeros((len(b), L), dtype=np.int64)
                am = np.zeros((len(b), L), dtype=np.int64)
                for r, i in enumerate(b):
                    k = lens[i]
                    x[r, :k] = ids[i]
                    am[r, :k] = 1
                    if tti is not None:
                        tt[r, :k] = tti[i]
                kw = {"input_ids": torch.from_numpy(x), "attention_mask": torch.from_numpy(am)}
                if tti is not None:
                    kw["token_type_ids"] = torch.from_numpy(tt)
                out[b] = model(kw)["scores"].float().numpy()
                if progress:
                    _log_progress(f"stage {self.stage} cross-encoder", min(s + self.batch_size, n), n, t0, state, 10.0)
        return out

    def logits_plain(self, queries: list[str], items: list[str]) -> np.ndarray:
        """The stock ``CrossEncoder.predict`` (benchmark baseline)."""
        _set_threads(self.threads)
        return np.asarray(self.ce.predict(list(zip(queries, items)), batch_size=32, show_progress_bar=False))

    def save(self, path: Path) -> Path:
        def w(d: Path):
            self.ce.save(str(d / "model"))
            (d / "meta.json").write_text(json.dumps({**self.meta(), "max_seq_length": self.max_seq_length,
                                                      "final_loss": getattr(self, "final_loss", None)}, indent=1))
        return save_dir_atomic(path, w)

    @classmethod
    def load(cls, path: Path, batch_size: int = 128, threads: int = 2, int8: bool = False) -> "CrossEncoderTeacher":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        meta = json.loads((Path(path) / "meta.json").read_text())
        ce = CrossEncoder(str(Path(path) / "model"), device="cpu")
        ce.eval()
        t = cls(meta["version"], meta["stage"], ce, meta["max_seq_length"], batch_size, threads, int8)
        t.train_s = meta.get("train_s")
        t.final_loss = meta.get("final_loss")
        return t


class EnsembleTeacher(Teacher):
    """Combination of the members' calibrated log-probabilities: their mean, or (after
    :meth:`fit_stacker`, on dev) a multinomial logistic regression over them, which
    learns how much to trust each member (members keep their own temperatures; the
    ensemble gets one more, fitted on dev)."""

    kind = "ensemble"

    def __init__(self, stage: int, members: list[Teacher]):
        super().__init__(stage, "ens[" + ",".join(m.version for m in members) + "]")
        self.members = members
        self.stacker = None

    def _logp(self, member_logits: list[np.ndarray]) -> list[np.ndarray]:
        return [np.log(np.clip(m.proba_from_logits(z), 1e-12, 1.0)) for m, z in zip(self.members, member_logits)]

    def fit_stacker(self, member_logits: list[np.ndarray], y: np.ndarray, c: float = 1.0, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression

        if sorted(set(np.asarray(y).tolist())) != list(range(N_GRADES)):
            log.warning("stage-3 stacking needs dev labels covering grades 0..3 (got %s): using the mean",
                        sorted(set(np.asarray(y).tolist())))
            self.stacker = None
            return
        X = np.hstack(self._logp(member_logits))
        self.stacker = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(X, y)

    def stacker_digest(self) -> str:
        if self.stacker is None:
            return "mean"
        return digest(self.stacker.coef_.round(10).tobytes(), self.stacker.intercept_.round(10).tobytes())

    def combine(self, member_logits: list[np.ndarray]) -> np.ndarray:
        logp = self._logp(member_logits)
        if self.stacker is not None:
            X = np.hstack(logp)
            return self.stacker.decision_function(X) if len(X) else np.zeros((0, N_GRADES))
        return np.mean(logp, axis=0)

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        return self.combine([m.logits(pairs, ctx) for m in self.members])


# --------------------------------------------------------------------------- LLM judge
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
                 judge_confidence: float = 0.85, stage: int = 4):
        super().__init__(stage, f"llm-{model}@{base_url}")
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
