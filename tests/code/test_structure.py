"""The architecture's rules, checked on the source (docs/architecture.md, "One shape for
every stage"): logic never reaches up into the orchestration layer, flows do not use one
another as libraries, and the Feast repository is declarations only."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _flow_modules() -> set[str]:
    """flows/*.py that define a Prefect flow (the rest are the flows' shared runtime)."""
    return {f"flows.{p.stem}" for p in (REPO / "flows").glob("*.py") if "@flow(" in p.read_text()}


# logic never importing the flows is one of the layer rules: tests/code/test_layers.py


# flows that chain others: the pipeline (every stage), the label-budget experiment (the
# pipeline once per fraction)
COMPOSERS = {"pipeline": None, "label_budget": {"flows.pipeline"}}


def test_no_flow_imports_another_flow_except_the_composers():
    flows = _flow_modules()
    assert {"flows.ingest", "flows.mine", "flows.grade", "flows.assemble", "flows.train"} <= flows
    offenders = [f"{p.relative_to(REPO)} imports {m}"
                 for p in sorted((REPO / "flows").glob("*.py")) if COMPOSERS.get(p.stem, set()) is not None
                 for m in sorted(_imports(p) & flows)
                 if m != f"flows.{p.stem}" and m not in COMPOSERS.get(p.stem, set())]
    assert offenders == []


def test_the_feature_repo_is_declarations_over_feast_only():
    path = REPO / "feature_repo" / "definitions.py"
    tree = ast.parse(path.read_text())
    third_party = {m.split(".")[0] for m in _imports(path)} - {"__future__", "datetime", "pathlib"}
    assert third_party == {"feast"}
    calls_at_top = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert calls_at_top == []  # nothing runs at import: no sys.path edits, no config loading
    views = [n.targets[0].id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
             and ast.unparse(n.value.func) == "FeatureView"]
    assert views == ["retrieval_prior_fv", "relevance_grade_fv", "gated_engagement_fv", "query_attributes_fv"]
