#!/usr/bin/env python
"""Check that relgrade's layers run one way (docs/architecture.md#layers).

Every ``import`` counts, the ones inside functions too (a lazy import is still a
dependency). A module may import its own layer, the layers before it and the ground; a
stage never imports a later stage, the ground never imports a stage, and no modules
import each other in a circle.

    python scripts/check_layers.py          # exit 1 and a list when a rule is broken
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOTS = ("relgrade", "flows", "training", "validation", "feature_repo")

# in pipeline order; a module belongs to the layer of its longest matching prefix (a
# prefix in EXACT names only itself: the package ``relgrade`` is ground, not its stages)
EXACT = frozenset({"relgrade"})
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("relgrade", "relgrade.config", "relgrade.contract", "relgrade.io", "relgrade.util",
                "relgrade.engine", "relgrade.numerics", "relgrade.reporting", "relgrade.views",
                "relgrade.featurestore", "relgrade.segments", "relgrade.label_budget", "validation", "feature_repo")),
    ("ingest", ("relgrade.adapters", "relgrade.eventlog", "relgrade.ingest")),
    ("simulate", ("relgrade.simulate", "relgrade.engagement")),
    ("mining", ("relgrade.mining",)),
    ("attributes", ("relgrade.attributes",)),
    ("grading", ("relgrade.grading",)),
    ("assemble", ("relgrade.assemble",)),
    ("training", ("training",)),
    ("flows", ("flows",)),
    ("cli", ("relgrade.cli",)),
]


def modules(root: Path, roots=ROOTS) -> dict[str, Path]:
    out = {}
    for r in roots:
        for p in sorted((root / r).rglob("*.py")):
            name = ".".join(p.relative_to(root).with_suffix("").parts)
            out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def import_graph(root: Path, roots=ROOTS) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    mods = modules(root, roots)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package up
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{a.name}" for a in node.names] or [base]
            for n in names:
                r = resolve(n)
                if r and r != m:
                    graph[m].add(r)
    return graph


def layer_of(module: str, layers=LAYERS) -> int | None:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            hit = module == p or (p not in EXACT and module.startswith(p + "."))
            if hit and p.count(".") > depth:
                best, depth = i, p.count(".")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected sets of two or more modules (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import against the layers, every module in no layer, every circle."""
    out = []
    for m in sorted(graph):
        lm = layer_of(m, layers)
        if lm is None:
            out.append(f"{m}: in no layer (add it to LAYERS in scripts/check_layers.py)")
            continue
        for d in sorted(graph[m]):
            ld = layer_of(d, layers)
            if ld is not None and ld > lm:
                out.append(f"{m} ({layers[lm][0]}) imports {d} ({layers[ld][0]}): a later layer")
    out += [f"import circle: {' -> '.join(c)}" for c in cycles(graph)]
    return out


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    bad = violations(import_graph(root))
    for line in bad:
        print(line)
    if not bad:
        print(f"layers: {len(modules(root))} modules, {' < '.join(n for n, _ in LAYERS)}: no import against them")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
