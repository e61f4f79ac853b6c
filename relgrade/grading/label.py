"""Grade any (query, item) pairs with the trained cascade of a data root: an eval set to
annotate, a search log to label, a second opinion on a judgment file.

    from relgrade.grading.label import label_pairs, read_pairs
    out = label_pairs(cfg, read_pairs("pairs.csv"))

Input: a frame with ``query`` (text) or ``query_id`` (of the data root's queries), and
``item_id`` (of its catalog) or ``title``. Queries and titles that the contract tables do
not hold are featurized with the catalog's own statistics (:meth:`PairFeaturizer.extend`),
so a catalog pair of a known query gets exactly the grade the union has. Output: the
input columns plus ``grade, expected_grade, p_grade_0..3, confidence, deciding_stage,
teacher_version``, graded by the same code path, thresholds and caps as the union
(:func:`relgrade.grading.stage.grade_pairs`).
"""
from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pandas as pd

from relgrade.config import RelgradeConfig
from relgrade.contract import ContractError

log = logging.getLogger("relgrade.grading")

OUTPUT_COLUMNS = ["grade", "expected_grade", "p_grade_0", "p_grade_1", "p_grade_2", "p_grade_3", "confidence",
                  "deciding_stage", "teacher_version"]


def read_pairs(path: str | Path) -> pd.DataFrame:
    """CSV or Parquet; a clear error for a missing, empty or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                             keep_default_na=False, na_values=[""])
        else:
            raise ContractError(f"{path}: expected a .csv, .tsv or .parquet file")
    except pd.errors.EmptyDataError as exc:
        raise ContractError(f"{path}: empty file, no pairs to grade") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError(f"{path}: cannot read it as {path.suffix.lstrip('.')}: {exc}") from exc
    if len(df) == 0:
        raise ContractError(f"{path}: no rows, no pairs to grade")
    return df


def load_cascade(cfg: RelgradeConfig):
    """The cascade the grade stage saved for this data root (teachers, calibration,
    stacks, thresholds, the union's prior correction)."""
    from relgrade.grading.cascade import TeacherCascade
    from relgrade.grading.teachers import CrossEncoderTeacher, GBMTeacher, StackedTeacher

    ref = cfg.paths.grading / "cascade.json"
    if not ref.exists():
        raise FileNotFoundError(f"{ref} does not exist: run `relgrade grade` on this data root first")
    doc = json.loads(ref.read_text())
    d = Path(doc["path"])
    state = pickle.loads((d / "calibration.pkl").read_bytes())
    g = cfg.grading
    from relgrade.numerics import resolve_device

    device = resolve_device(cfg.device)
    by_name = {s.name: s for s in g.stages}
    teachers = []
    for spec, (temp, calibrator) in zip(doc["teachers"], state["teachers"]):
        s = by_name.get(spec["name"])
        if spec["kind"] == "gbm":
            t = GBMTeacher.load(Path(spec["dir"]), g.threads)
        elif s is not None and getattr(s, "pretrained", False):
            from relgrade.grading.stage import base_model_path

            t = CrossEncoderTeacher.from_pretrained(base_model_path(s), s, g.infer_batch_size, g.threads, device)
        else:
            t = CrossEncoderTeacher.load(Path(spec["dir"]), g.infer_batch_size, g.threads,
                                         s.int8 if s is not None else True, device)
        if t.version != spec["version"]:
            raise RuntimeError(f"teacher {spec['name']} on disk is {t.version}, the cascade was fitted with "
                               f"{spec['version']}: rerun `relgrade grade`")
        t.temperature, t.calibrator = temp, calibrator
        teachers.append(t)
    stacks = []
    for k, (stacker, temp) in enumerate(state["stacks"]):
        st = StackedTeacher(teachers[:k + 1], g.ensemble_c, g.seed)
        st.stacker, st.temperature = stacker, temp
        stacks.append(st)
    from relgrade.grading.calibration import GradeRule

    r = doc.get("grade_rule") or {"name": g.grade_rule, "grades": [0, 1, 2, 3]}
    return TeacherCascade(stacks, doc["thresholds"], rule=GradeRule(r["name"], tuple(r["grades"]))), doc.get("prior"), doc


def _known_ids(pairs: pd.DataFrame, column: str, known: pd.Series, what: str, instead: str) -> pd.Series | None:
    """``pairs[column]`` as strings when every pair has one (each must be in ``known``:
    else a ContractError naming ``what`` and what to give ``instead``); None when the
    pairs do not all carry the column."""
    if column not in pairs.columns or not pairs[column].notna().all():
        return None
    ids = pairs[column].astype(str)
    bad = ~ids.isin(pd.Index(known.astype(str)))
    if bad.any():
        raise ContractError(f"{int(bad.sum())} pair(s) name {what}, e.g. {sorted(ids[bad].unique())[:3]}; {instead}")
    return ids


def _texts(pairs: pd.DataFrame, column: str, message: str) -> pd.Series:
    """``pairs[column]`` as strings; a ContractError ``message`` when any is missing or blank."""
    if column not in pairs.columns or pairs[column].isna().any() or (pairs[column].astype(str).str.strip() == "").any():
        raise ContractError(message)
    return pairs[column].astype(str)


def resolve_pairs(pairs: pd.DataFrame, queries: pd.DataFrame, catalog: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(pairs with query_id and item_id, new queries, new items). Unknown ids are an error;
    texts and titles the tables do not hold become new rows."""
    from relgrade.adapters.common import normalize_query, query_id_of

    cols = set(pairs.columns)
    if not cols & {"query", "query_id"}:
        raise ContractError(f"pairs need a `query` (text) or `query_id` column; got {sorted(cols)}")
    if not cols & {"item_id", "title"}:
        raise ContractError(f"pairs need an `item_id` or `title` column; got {sorted(cols)}")
    out = pairs.copy()
    new_q = pd.DataFrame({"query_id": [], "text": []}, dtype=object)
    new_i = pd.DataFrame({"item_id": [], "title": []}, dtype=object)
    qid = _known_ids(out, "query_id", queries["query_id"], "a query_id this data root does not hold",
                     "give the query text in a `query` column instead")
    if qid is None:
        text = _texts(out, "query", "every pair needs a non-empty `query` text (or a known `query_id`)")
        by_norm = dict(zip(queries["text"].astype(str).map(normalize_query), queries["query_id"].astype(str)))
        qid = text.map(normalize_query).map(by_norm)
        miss = qid.isna()
        qid[miss] = "label:" + text[miss].map(query_id_of)
        new_q = pd.DataFrame({"query_id": qid[miss], "text": text[miss]}).drop_duplicates("query_id")
    out["query_id"] = qid.astype(str).to_numpy()
    iid = _known_ids(out, "item_id", catalog["item_id"], "an item_id the catalog does not hold",
                     "give the item's `title` instead")
    if iid is None:
        import hashlib

        title = _texts(out, "title", "every pair needs a non-empty `title` (or a known `item_id`)")
        iid = "label:" + title.map(lambda t: hashlib.sha1(t.encode()).hexdigest()[:16])
        new_i = pd.DataFrame({"item_id": iid, "title": title}).drop_duplicates("item_id")
    out["item_id"] = iid.astype(str).to_numpy()
    return out, new_q, new_i


def label_pairs(cfg: RelgradeConfig, pairs: pd.DataFrame) -> pd.DataFrame:
    """Grades for ``pairs`` (see the module docstring)."""
    from relgrade.grading.features import PairFeaturizer
    from relgrade.grading.stage import grade_pairs
    from relgrade.io import read_parquet

    if len(pairs) == 0:
        raise ContractError("no pairs to grade")
    cascade, prior, doc = load_cascade(cfg)
    # featurize as the saved cascade was fitted (stage-1 inputs, cross-encoder text),
    # whatever the current profile says
    # (a cascade saved before they were recorded was fitted without the attribute inputs)
    saved = doc.get("inputs") or {"attribute_features": False, "attribute_text": False}
    if saved and any(getattr(cfg.grading, k) != v for k, v in saved.items()):
        log.info("relgrade label: featurizing with the saved cascade's inputs %s", saved)
        cfg = cfg.model_copy(update={"grading": cfg.grading.model_copy(update=saved)})
    if cfg.grading.retrieval_features:
        raise ContractError("relgrade label grades pairs by content: it needs grading.retrieval_features: false "
                            "(channel ranks exist only for mined pairs)")
    catalog = read_parquet(cfg.paths.table("catalog"))
    queries = read_parquet(cfg.paths.table("queries"))
    resolved, new_q, new_i = resolve_pairs(pairs, queries, catalog)
    fz = PairFeaturizer(cfg, catalog, queries).extend(items=new_i, queries=new_q)
    grades = grade_pairs(cfg, fz, cascade, resolved[["query_id", "item_id"]].reset_index(drop=True), prior)
    out = pairs.reset_index(drop=True).copy()
    for c in ("query_id", "item_id"):
        out[c] = resolved[c].to_numpy()
    for c in OUTPUT_COLUMNS:
        out[c] = grades[c].to_numpy()
    out["cascade"] = doc["key"]
    log.info("labelled %d pairs (%d new queries, %d new items) with cascade %s", len(out), len(new_q), len(new_i),
             doc["key"])
    return out
