"""The model card (README.md) of a trained bi-encoder folder, in the Hugging Face
format sentence-transformers writes: YAML front matter, usage with the FAISS index,
data, target, curriculum, index, metrics (after evaluation), limitations, data terms."""
from __future__ import annotations

import json
from pathlib import Path

SUMMARY_FILE = "training_summary.json"


def read_summary(folder: str | Path) -> dict | None:
    """The training summary the student wrote into ``folder`` (None before training)."""
    p = Path(folder) / SUMMARY_FILE
    return json.loads(p.read_text()) if p.exists() else None


def write_model_card(folder: str | Path, summary: dict, metrics: dict | None = None,
                     compared: dict[str, dict] | None = None) -> Path:
    """README.md of the model folder: usage, data, target, curriculum, index, metrics
    (``metrics``: this model's; ``compared``: the other models' of the same evaluation,
    name -> metric -> {mean, lo, hi}), limitations, data terms."""
    folder = Path(folder)
    lines = _header(summary) + _data(summary) + _stages(summary)
    if summary.get("index"):
        lines += ["## Index", "", f"`index.faiss` (FAISS {summary['index']['index']}, {summary['index']['items']} catalog "
                  f"items, ids in `index_items.json`).", ""]
    lines += _metrics(summary, metrics, compared or {})
    lines += _limitations()
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _header(summary: dict) -> list[str]:
    """Front matter, title and usage."""
    n_train = summary["data"].get("rows", summary["data"].get("triplets"))
    return [
        "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
        "base_model: sentence-transformers/all-MiniLM-L6-v2", "language: [en]", "license: apache-2.0",
        "tags: [sentence-transformers, feature-extraction, sentence-similarity, product-search, relgrade, "
        + ", ".join(sorted({s["loss"] for s in summary["stages"]})) + "]",
        f"datasets: [{summary.get('dataset', 'relgrade-trainset')}]",
        "metrics: [ndcg_at_10, recall_at_100, embarrassing_at_3]", "---", "",
        f"# relgrade {summary['run']}", "",
        f"{summary.get('description', '')}. Fine-tuned from `{Path(summary['base_model']).name}` "
        f"(all-MiniLM-L6-v2); cosine similarity of normalized 384-d embeddings; "
        f"max_seq_length {summary['max_seq_length']}; {n_train} training rows.", "",
        "## Usage", "",
        "Embed queries and titles (normalized: the dot product is the cosine):", "",
        "```python", "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer(\"<this folder>\")",
        "emb = model.encode([\"cordless drill\", \"DEWALT 20V MAX cordless drill kit\"], normalize_embeddings=True)",
        "print(float(emb[0] @ emb[1]))", "```", "",
        "Search the catalog with the FAISS index saved beside the model (`index.faiss`, its row ids in "
        "`index_items.json`):", "",
        "```python", "import json", "import faiss", "from sentence_transformers import SentenceTransformer", "",
        "folder = \"<this folder>\"", "model = SentenceTransformer(folder)",
        "index = faiss.read_index(f\"{folder}/index.faiss\")",
        "item_ids = json.load(open(f\"{folder}/index_items.json\"))",
        "q = model.encode([\"cordless drill\"], normalize_embeddings=True)",
        "scores, rows = index.search(q, 10)",
        "top10 = [(item_ids[r], float(s)) for r, s in zip(rows[0], scores[0])]", "print(top10)", "```", "",
    ]


_TARGETS = {
    "target": "the blended relgrade target (teacher expected grade, retrieval prior, gated engagement preference).",
    "click_target": "raw engagement only (smoothed click-through rate of the pair; baseline).",
    "grade_target": "teacher expected grade / 3 only (ablation).",
}


def _data(summary: dict) -> list[str]:
    """What the run trained on, and its target."""
    d = summary["data"]
    if summary.get("recipe") == "hardneg_human":
        return ["## Data", "",
                f"The peer recipe (training/hardneg.py): {d['positives']} human-judged train-split pairs with a grade "
                f">= {d['min_grade']} (of {d['positive_pairs_available']} such pairs, {d['queries']} queries), one hard "
                f"negative each from sentence-transformers' `mine_hard_negatives` with the base model over "
                f"{d['corpus']} catalog texts (range {d['range_min']}..{d['range_max']}, relative margin "
                f"{d['relative_margin']}, {d['sampling_strategy']} sampling): {d['triplets']} triplets "
                f"({100 * d['without_negative_share']:.0f}% of the positives had no valid negative). No teacher grade, "
                f"no engagement, no curriculum. Human labels of test queries are never used.", "",
                "## Target", "", "MultipleNegativesRankingLoss on (query, positive, hard negative) with in-batch "
                "negatives.", ""]
    if summary.get("recipe") == "triplets":  # a ladder rung (training/ladder.py)
        r = d.get("recipe") or {}
        pos = ("human-judged train-split pairs with a grade >= " + str(d.get("min_grade"))
               if r.get("positives") == "human" else "relgrade-target positives (each train query's best union items)")
        neg = ("one hard negative each from `mine_hard_negatives` with the base model" if r.get("negatives") == "mined"
               else "one negative each from relgrade's difficulty levels 4-5 of the same query")
        return ["## Data", "",
                f"A ladder rung (training/ladder.py): {d.get('positives')} {pos} (of {d.get('positive_pairs_available')} "
                f"available, {d.get('queries')} queries), {neg}: {d.get('triplets')} triplets "
                f"({100 * (d.get('without_negative_share') or 0):.0f}% of the positives drawn had none). "
                "Human labels of test queries are never used.", "",
                "## Target", "", ("MarginMSELoss on the target margin." if r.get("loss") == "margin_mse" else
                                  "MultipleNegativesRankingLoss on (query, positive, negative) with in-batch negatives."), ""]
    return ["## Data", "",
            f"relgrade's assembled training set (`training/trainset.parquet`): mined (query, item) pairs of the "
            f"train-split queries only. Rows used: {d['rows']} over {d['queries']} queries, "
            f"{d['graded_rows']} of them teacher-graded (graded fraction {summary['graded_fraction']}). "
            f"Rows per difficulty level: {d['level_counts']}. Human labels of test queries are never used "
            f"in training.", "",
            "## Target", "",
            f"Column `{summary['target_column']}`: " + _TARGETS.get(summary["target_column"], "see docs/training.md."), ""]


def _stages(summary: dict) -> list[str]:
    """The curriculum's stages (the recipe's one stage)."""
    lines = ["## Curriculum", "",
             "| stage | name | loss | levels | examples | steps | examples/s | train loss |", "|---|---|---|---|---|---|---|---|"]
    for s in summary["stages"]:
        lines.append(f"| {s['stage']} | {s['name']} | {s['loss']} | {s.get('levels', '')} | {s['examples']} | {s['steps']} "
                     f"| {s.get('examples_per_s', '')} | {s.get('train_loss', float('nan')):.4f} |")
    return lines + ["", "Levels: 1 easiest .. 5 hardest (how many retrievers get the example wrong). docs/training.md "
                    "has the reasoning for each stage's levels and loss.", ""]


def _metrics(summary: dict, metrics: dict | None, compared: dict[str, dict]) -> list[str]:
    """This model's evaluation metrics, and the other models' beside them."""
    lines = ["## Metrics", ""]
    if not metrics:
        return lines + ["Not evaluated yet: run `relgrade evaluate`."]
    lines += ["Test-split queries, human grades, bootstrap 95% intervals over queries "
              "(reports/evaluation/report.html):", "", "| metric | value | 95% CI |", "|---|---|---|"]
    lines += [f"| {name} | {m['mean']:.4f} | [{m['lo']:.4f}, {m['hi']:.4f}] |" for name, m in metrics.items()]
    others = {n: v for n, v in compared.items() if n != summary["run"]}
    if others:
        names = list(metrics)
        lines += ["", "The other models of the same evaluation (means):", "",
                  "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for n, v in others.items():
            cells = [f"{v[m]['mean']:.4f}" if m in v and v[m].get("mean") is not None else "-" for m in names]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _limitations() -> list[str]:
    """Limitations and data terms."""
    lines: list[str] = []
    lines += ["", "## Limitations", "",
              "- Trained and evaluated on product titles only (no descriptions or attributes), English, one "
              "retailer's catalog (home improvement): expect a shift on other catalogs and languages.",
              "- The targets come from a teacher cascade (its agreement with human grades is in relgrade's grading "
              "report), not from people: the student inherits the teachers' errors, most of all on items of the "
              "right aisle but the wrong type, size or material.",
              "- Engagement in the bundled run is simulated; the click-trained baseline it is compared with learns "
              "from that simulator's clicks.",
              "- Not a reranker: it scores a query and a title independently (a bi-encoder); pair it with a "
              "cross-encoder for the top of a list.", "",
              "## Data terms", "",
              "The bundled data is the training file of Kaggle's \"Home Depot Product Search Relevance\" (2016); "
              "competition data is subject to the competition's rules: cite the source wherever the model or the "
              "data is shipped (relgrade's data/homedepot/PROVENANCE.md). The base model all-MiniLM-L6-v2 is "
              "Apache-2.0."]
    return lines


def add_metrics(folder: str | Path, model_metrics: dict, all_models: dict | None = None) -> Path | None:
    """Rewrite the card of the model in ``folder`` with its evaluation metrics
    (``model_metrics``: the evaluation report's ``models[<name>]``; ``all_models``: the
    report's ``models``, shown beside them)."""
    summary = read_summary(folder)
    if not summary:
        return None
    compared = {n: {m: v["all"] for m, v in mm.items()} for n, mm in (all_models or {}).items()}
    return write_model_card(folder, summary, {m: v["all"] for m, v in model_metrics.items() if v["all"]["mean"] is not None},
                            compared)
