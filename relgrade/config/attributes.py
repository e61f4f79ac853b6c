"""Query attribute extraction (relgrade/attributes/, docs/attributes.md)."""
from __future__ import annotations


from pydantic import Field

from relgrade.config.base import _Strict


class AttributesConfig(_Strict):
    """Query attribute extraction (docs/attributes.md): the catalog lexicon, the weak
    labels of the train queries, the MiniLM + CRF tagger, the hand gold set it is
    measured on."""

    gold_path: str | None = "data/homedepot/attributes_gold.jsonl"  # BIO-annotated dev/test queries
    lexicon_min_count: int = Field(3, ge=1)  # titles a brand / type / finish is seen in
    max_train_queries: int | None = Field(6000, ge=1)  # weakly labelled train queries the tagger fits on
    # 1 epoch: on the dev gold queries, 1 epoch + lexicon fill beat the dictionary on every
    # type with >= 20 spans, 2 epochs did not on sizes, at twice the time (docs/attributes.md)
    epochs: int = Field(1, ge=1, le=50)
    # after Viterbi, a lexicon span over words the tagger left outside every span is added
    # (QueryTagger.predict_tags); the CRF alone is reported beside it
    lexicon_fill: bool = True
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    head_learning_rate: float = Field(5e-3, gt=0, le=1)
    max_seq_length: int = Field(32, ge=8, le=512)
    seed: int = Field(13, ge=0)
    threads: int = Field(2, ge=1)
    progress_every_s: float = Field(10.0, gt=0)
