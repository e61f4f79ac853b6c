"""Teachers: models that map (query, item) pairs to a distribution over grades 0..3.

Interface (:class:`Teacher`): ``logits(pairs, ctx)`` returns the raw outputs ``(n, d)``;
``calibrate`` fits the map from them to calibrated probabilities on dev
(:mod:`relgrade.grading.calibration`), and ``proba_from_logits`` applies it. ``ctx`` is
the fitted :class:`~relgrade.grading.features.PairFeaturizer` (features and texts of
the pairs). Every teacher has a ``version`` string (kind + digest of its settings and
training data) and is saved under ``<data_root>/models/teachers/<name>/<version>/``.

The teachers shipped here, cheapest first (one per entry of ``grading.stages``):

* :class:`GBMTeacher` - histogram gradient boosting on the cheap pair features; four
  classes, soft targets, per-pair weights (the negatives weigh less than the judgments);
  calibrated by a temperature.
* :class:`CrossEncoderTeacher` - a sentence-transformers ``CrossEncoder`` on (query,
  item text): the base MiniLM fine-tuned as a mean-pooled 4-way cross-encoder for a
  bounded number of steps on the same weighted soft targets, calibrated by a
  temperature; or (``pretrained``) a team's own CrossEncoder folder used as is, whose
  outputs (a single relevance score, or several logits) are mapped to the four grades by
  a multinomial logistic regression fitted on dev.
* :class:`StackedTeacher` - stage k of the cascade: a multinomial logistic regression
  over the calibrated log-probabilities of stages 1..k, fitted on dev. It learns how far
  to trust each member, and since it sees stage 1 too, escalating a pair never throws
  away what stage 1 knew.
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

from relgrade.grading.calibration import N_GRADES, expand_soft, fit_temperature, softmax
from relgrade.util import Progress

log = logging.getLogger("relgrade.grading")


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() if not isinstance(p, (bytes, str)) else
                 (p if isinstance(p, bytes) else p.encode()))
        h.update(b"\x1f")
    return h.hexdigest()[:12]


def full_classes(classes, values: np.ndarray, fill: float) -> np.ndarray:
    """(n, k) outputs over the classes an estimator saw -> (n, 4) over grades 0..3 (a
    source whose labels never use a grade, WANDS has no grade 2, leaves it at ``fill``)."""
    classes = [int(c) for c in classes]
    if classes == list(range(N_GRADES)):
        return values
    out = np.full((len(values), N_GRADES), fill, dtype=float)
    out[:, classes] = values
    return out


class Teacher(ABC):
    """One stage of the cascade."""

    kind: str = "teacher"

    def __init__(self, name: str, version: str):
        self.name, self.version = name, version
        self.temperature = 1.0
        self.train_s: float | None = None

    @abstractmethod
    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        """Raw ``(n, d)`` outputs for ``pairs`` (query_id, item_id)."""

    def calibrate(self, z: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Fit the temperature on dev outputs ``z`` against ``targets`` (grades or soft)."""
        self.temperature = fit_temperature(z, targets, weights)

    def calibration_state(self) -> dict:
        return {"temperature": self.temperature}

    def proba_from_logits(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature)

    def meta(self) -> dict:
        return {"kind": self.kind, "name": self.name, "version": self.version, "train_s": self.train_s}


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


# --------------------------------------------------------------------------- targets
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


def pair_targets(pairs: pd.DataFrame) -> np.ndarray:
    """(n, 4) targets of teacher pairs (:func:`relgrade.grading.negatives.with_negatives`):
    soft targets from the human label on judged rows, the negatives' own ``t_0..t_3``."""
    raw = pairs["raw_score"].to_numpy(dtype=float) if "raw_score" in pairs else None
    judged = (pairs["origin"] == "judged").to_numpy() if "origin" in pairs else np.ones(len(pairs), dtype=bool)
    S = np.zeros((len(pairs), N_GRADES), dtype=np.float32)
    if judged.any():
        S[judged] = soft_grade_targets(pairs["grade"].to_numpy(dtype=np.int64)[judged],
                                       None if raw is None else raw[judged])
    if (~judged).any():
        S[~judged] = pairs.loc[~judged, [f"t_{g}" for g in range(N_GRADES)]].to_numpy(dtype=np.float32)
    return S


# --------------------------------------------------------------------------- stage 1
class GBMTeacher(Teacher):
    kind = "gbm"

    def __init__(self, name: str, version: str, model=None, threads: int = 1):
        super().__init__(name, version)
        self.model, self.threads = model, threads

    @classmethod
    def train(cls, X: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, settings, version: str, seed: int,
              threads: int = 1) -> "GBMTeacher":
        """Multinomial gradient boosting on soft targets: each pair enters once per grade
        its target touches, weighted by that share times the pair's weight.
        ``settings`` is a :class:`relgrade.config.GBMStageConfig`."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        t0 = time.perf_counter()
        rows, grades, w = expand_soft(targets, weights)
        m = HistGradientBoostingClassifier(max_iter=settings.max_iter, learning_rate=settings.learning_rate,
                                           max_leaf_nodes=settings.max_leaf_nodes, l2_regularization=settings.l2,
                                           random_state=seed, early_stopping=False)
        Xf = X[rows]
        # a feature missing on every training pair (no query names a voltage, say) carries
        # nothing, and scikit-learn's binning cannot bin an all-NaN column: fit it as 0
        # (no tree splits on a constant; at inference its NaN takes the default branch)
        empty = np.isnan(Xf).all(axis=0)
        if empty.any():
            Xf[:, empty] = 0.0
        with threadpool_limits(threads):  # OpenMP spin-waits badly on a shared 2-core box
            m.fit(Xf, grades, sample_weight=w)
        if len(m.classes_) < 2:
            raise ValueError(f"stage-1 training labels need at least two grades; got {list(m.classes_)}")
        t = cls(settings.name, version, m, threads)
        t.train_s = time.perf_counter() - t0
        log.info("%s: GBM trained on %d pairs in %.1fs", settings.name, len(X), t.train_s)
        return t

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        return self.logits_from_features(ctx.transform(pairs))

    def logits_from_features(self, X: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        if len(X) == 0:
            return np.zeros((0, N_GRADES))
        with threadpool_limits(self.threads):
            p = full_classes(self.model.classes_, self.model.predict_proba(X), 0.0)
        return np.log(np.clip(p, 1e-9, 1.0))

    def save(self, path: Path) -> Path:
        def w(d: Path):
            (d / "model.pkl").write_bytes(pickle.dumps(self.model))
            (d / "meta.json").write_text(json.dumps(self.meta(), indent=1))
        return save_dir_atomic(path, w)

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> "GBMTeacher":
        meta = json.loads((Path(path) / "meta.json").read_text())
        t = cls(meta["name"], meta["version"], pickle.loads((Path(path) / "model.pkl").read_bytes()), threads)
        t.train_s = meta.get("train_s")
        return t


# --------------------------------------------------------------------------- cross-encoders
def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def build_cross_encoder(base_model: str, max_seq_length: int, layers: int | None = None, device: str = "cpu"):
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
    return CrossEncoder(modules=[tr, Pooling(dim, "mean"), head], device=device)


def weighted_batches(weights: np.ndarray, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of row indices drawn without replacement within an epoch, each
    row appearing in proportion to its weight (systematic sampling of a seeded shuffle:
    a row of weight 2 appears twice as often as a row of weight 1)."""
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, dtype=float)
    if len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("teacher training needs non-negative, finite weights with a positive sum")
    need = steps * batch_size
    out = np.empty(0, dtype=np.int64)
    while len(out) < need:
        order = rng.permutation(len(w))
        c = np.cumsum(w[order]) / w.sum() * len(w)  # the epoch: len(w) draws in all
        ticks = np.arange(len(w)) + rng.random()
        idx = order[np.searchsorted(c, ticks, side="right").clip(0, len(w) - 1)]
        out = np.concatenate([out, idx[rng.permutation(len(idx))]])
    out = out[:need]
    return [out[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


class CrossEncoderTeacher(Teacher):
    """A sentence-transformers CrossEncoder on (query, item text)."""

    kind = "cross_encoder"

    def __init__(self, name: str, version: str, model, max_seq_length: int, batch_size: int = 128, threads: int = 2,
                 int8: bool = False, pretrained: bool = False):
        super().__init__(name, version)
        self.ce = model  # sentence_transformers.CrossEncoder
        self.max_seq_length, self.batch_size, self.threads = max_seq_length, batch_size, threads
        self.int8 = int8  # inference through an int8 dynamic-quantized copy of the Linear layers
        self.pretrained = pretrained  # outputs mapped to grades by a logistic regression on dev
        self.calibrator = None
        self._qmodel = None
        self.final_loss: float | None = None

    @property
    def device(self):
        return next(self.ce.parameters()).device

    @property
    def layers(self) -> int:
        return int(self.ce[0].auto_model.config.num_hidden_layers)

    def inference_model(self):
        """The network :meth:`logits_texts` runs: fp32 (the CrossEncoder's module stack),
        or its int8 dynamic-quantized copy."""
        if not self.int8 or self.device.type != "cpu":  # int8 dynamic quantization is a CPU kernel
            return self.ce
        if self._qmodel is None:
            import warnings

            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao deprecation notices
                self._qmodel = torch.ao.quantization.quantize_dynamic(self.ce, {torch.nn.Linear}, dtype=torch.qint8)
        return self._qmodel

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, queries: list[str], items: list[str], targets: np.ndarray, weights: np.ndarray, *, settings,
              version: str, base_model: str, seed: int, threads: int = 2, progress_every_s: float = 10.0,
              infer_batch_size: int = 128, device: str = "cpu", on_step=None) -> "CrossEncoderTeacher":
        """Fine-tune ``base_model`` for exactly ``settings.steps`` AdamW steps (linear
        warm-up and decay, cross-entropy against the soft ``targets``), batches drawn in
        proportion to ``weights`` (:func:`weighted_batches`). ``settings`` is a
        :class:`relgrade.config.CrossEncoderStageConfig`. ``on_step(step, model)``, where
        given, runs after every step (benchmarks score checkpoints with it); the model is
        put back in training mode after it."""
        import torch
        import torch.nn.functional as F

        s = settings
        _set_threads(threads)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        ce = build_cross_encoder(base_model, s.max_seq_length, s.layers, device)
        tok = ce.tokenizer
        ce.train()
        opt = torch.optim.AdamW(ce.parameters(), lr=s.learning_rate, weight_decay=0.01)
        warm = max(1, int(s.steps * s.warmup_share))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: min((k + 1) / warm, max(0.0, (s.steps - k) / max(1, s.steps - warm))))
        T = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=device)
        progress = Progress(f"{s.name} cross-encoder training steps", s.steps, progress_every_s, log)
        losses = []
        for step, idx in enumerate(weighted_batches(weights, s.batch_size, s.steps, seed)):
            enc = tok([queries[i] for i in idx], [items[i] for i in idx], padding=True, truncation=True,
                      max_length=s.max_seq_length, return_tensors="pt").to(device)
            z = ce(dict(enc))["scores"]
            loss = -(T[idx] * F.log_softmax(z, dim=-1)).sum(-1).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ce.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            progress.update(step + 1, extra=f"loss {np.mean(losses[-50:]):.3f}")
            if on_step is not None:
                on_step(step + 1, ce)
                ce.train()
        ce.eval()
        t = cls(s.name, version, ce, s.max_seq_length, infer_batch_size, threads, s.int8)
        t.train_s = time.perf_counter() - t0
        t.final_loss = float(np.mean(losses[-50:])) if losses else None
        return t

    @classmethod
    def from_pretrained(cls, path: str, settings, batch_size: int = 128, threads: int = 2,
                        device: str = "cpu") -> "CrossEncoderTeacher":
        """A team's own CrossEncoder folder (any number of output logits) as a stage."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        if not Path(path, "config.json").exists() and not Path(path, "modules.json").exists():
            raise FileNotFoundError(f"grading stage {settings.name!r}: {path} is not a sentence-transformers "
                                    "CrossEncoder folder (no config.json or modules.json)")
        ce = CrossEncoder(str(path), device=device, max_length=settings.max_seq_length)
        ce.eval()
        from relgrade.io import folder_digest

        version = f"{settings.name}-pretrained-" + digest(folder_digest(Path(path)), settings.max_seq_length)
        return cls(settings.name, version, ce, settings.max_seq_length, batch_size, threads, settings.int8,
                   pretrained=True)

    # ------------------------------------------------------------------ calibration
    def calibrate(self, z: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> None:
        if not self.pretrained:
            return super().calibrate(z, targets, weights)
        from sklearn.linear_model import LogisticRegression

        rows, grades, w = expand_soft(targets, weights)
        self.calibrator = LogisticRegression(C=1.0, max_iter=2000).fit(np.asarray(z)[rows], grades, sample_weight=w)
        if len(self.calibrator.classes_) < 2:
            raise ValueError(f"stage {self.name}: dev targets need at least two grades to calibrate a pretrained "
                             f"cross-encoder; got {list(self.calibrator.classes_)}")

    def calibration_state(self) -> dict:
        if not self.pretrained:
            return super().calibration_state()
        c = self.calibrator
        return {"coef": c.coef_.tolist(), "intercept": c.intercept_.tolist()} if c is not None else {}

    def proba_from_logits(self, z: np.ndarray) -> np.ndarray:
        if not self.pretrained:
            return super().proba_from_logits(z)
        if self.calibrator is None:
            raise RuntimeError(f"stage {self.name}: calibrate() on dev before use")
        if not len(z):
            return np.zeros((0, N_GRADES))
        return full_classes(self.calibrator.classes_, self.calibrator.predict_proba(np.asarray(z)), 0.0)

    # ------------------------------------------------------------------ inference
    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        q, it = ctx.texts(pairs)
        return self.logits_texts(q, it)

    def _n_outputs(self) -> int:
        n = getattr(self.ce, "num_labels", None)
        return int(n) if n else N_GRADES

    def logits_texts(self, queries: list[str], items: list[str], model=None) -> np.ndarray:
        """Fast path: tokenize once, sort by length, pad per batch, inference mode.
        ``model`` replaces the teacher's network (benchmark: an int8 copy)."""
        import torch

        _set_threads(self.threads)
        n = len(queries)
        d = self._n_outputs()
        out = np.zeros((n, d), dtype=np.float32)
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
                dev = next(model.parameters()).device if any(True for _ in model.parameters()) else None
                if dev is not None and dev.type != "cpu":
                    kw = {k: v.to(dev) for k, v in kw.items()}
                res = model(kw)
                scores = res["scores"] if isinstance(res, dict) and "scores" in res else getattr(res, "logits", res)
                out[b] = scores.float().reshape(len(b), d).cpu().numpy()
        return out

    def logits_plain(self, queries: list[str], items: list[str]) -> np.ndarray:
        """The stock ``CrossEncoder.predict`` (benchmark baseline)."""
        _set_threads(self.threads)
        return np.asarray(self.ce.predict(list(zip(queries, items)), batch_size=32, show_progress_bar=False))

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> Path:
        def w(d: Path):
            self.ce.save(str(d / "model"))
            (d / "meta.json").write_text(json.dumps({**self.meta(), "max_seq_length": self.max_seq_length,
                                                      "final_loss": self.final_loss}, indent=1))
        return save_dir_atomic(path, w)

    @classmethod
    def load(cls, path: Path, batch_size: int = 128, threads: int = 2, int8: bool = False,
             device: str = "cpu") -> "CrossEncoderTeacher":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        meta = json.loads((Path(path) / "meta.json").read_text())
        ce = CrossEncoder(str(Path(path) / "model"), device=device)
        ce.eval()
        t = cls(meta["name"], meta["version"], ce, meta["max_seq_length"], batch_size, threads, int8)
        t.train_s = meta.get("train_s")
        t.final_loss = meta.get("final_loss")
        return t


# --------------------------------------------------------------------------- stacking
class StackedTeacher(Teacher):
    """Stage k: a multinomial logistic regression over the calibrated log-probabilities
    of its members (stages 1..k), fitted on dev; a temperature on top. With a single
    member it is that member, calibrated."""

    kind = "stack"

    def __init__(self, members: list[Teacher], c: float = 1.0, seed: int = 0):
        super().__init__("+".join(m.name for m in members), "stack[" + ",".join(m.version for m in members) + "]")
        self.members, self.c, self.seed = members, c, seed
        self.stacker = None

    def member_features(self, member_logits: list[np.ndarray]) -> np.ndarray:
        return np.hstack([np.log(np.clip(m.proba_from_logits(z), 1e-12, 1.0))
                          for m, z in zip(self.members, member_logits)])

    def fit(self, member_logits: list[np.ndarray], targets: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Stacker and its temperature on dev (the members are calibrated already); a
        single member is used as calibrated."""
        if len(self.members) == 1:
            self.temperature = 1.0
            return
        if len(self.members) > 1:
            from sklearn.linear_model import LogisticRegression

            rows, grades, w = expand_soft(targets, weights)
            X = self.member_features(member_logits)
            self.stacker = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed).fit(
                X[rows], grades, sample_weight=w)
            if len(self.stacker.classes_) < 2:
                raise ValueError(f"stacking needs dev targets of at least two grades; got {list(self.stacker.classes_)}")
        self.calibrate(self.combine(member_logits), targets, weights)

    def combine(self, member_logits: list[np.ndarray]) -> np.ndarray:
        if len(member_logits[0]) == 0:
            return np.zeros((0, N_GRADES))
        X = self.member_features(member_logits)
        if self.stacker is None:
            return X  # one member: its calibrated log-probabilities
        d = self.stacker.decision_function(X)
        if d.ndim == 1:  # two classes: logit of the second against the first
            d = np.column_stack([np.zeros_like(d), d])
        # a grade the dev targets never use gets a logit far below the others
        return full_classes(self.stacker.classes_, d, -30.0)

    def calibration_state(self) -> dict:
        out = {"temperature": self.temperature}
        if self.stacker is not None:
            out.update(coef=self.stacker.coef_.round(10).tolist(), intercept=self.stacker.intercept_.round(10).tolist())
        return out

    def logits(self, pairs: pd.DataFrame, ctx) -> np.ndarray:
        return self.combine([m.logits(pairs, ctx) for m in self.members])
