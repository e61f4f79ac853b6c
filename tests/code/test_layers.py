"""The layers run one way (docs/architecture.md#layers): scripts/check_layers.py finds
no import against them in the repository, and it does find each kind of break in a
small tree built here."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_repository_has_no_import_against_its_layers():
    ck = _checker()
    graph = ck.import_graph(ROOT)
    assert len(graph) > 50 and "relgrade.grading.stage" in graph
    assert ck.violations(graph) == []
    # lazy imports count: the dense channel imports the engine inside a method
    assert "relgrade.engine" in graph["relgrade.mining.channels.dense"]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True, text=True)
    assert r.returncode == 0 and "no import against them" in r.stdout


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_checker_finds_a_reverse_import_a_circle_and_a_module_in_no_layer(tmp_path):
    ck = _checker()
    layers = [("ground", ("pkg", "pkg.config")), ("mine", ("pkg.mine",)), ("grade", ("pkg.grade",))]
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/config.py": "def f():\n    from pkg.grade.stage import x\n",  # ground -> stage, inside a function
        "pkg/mine/__init__.py": "",
        "pkg/mine/a.py": "from . import b\n",  # a relative import
        "pkg/mine/b.py": "import pkg.mine.a\n",  # a <-> b
        "pkg/grade/__init__.py": "",
        "pkg/grade/stage.py": "import pkg\nx = 1\n",  # the ground: fine
        "other/__init__.py": "",
    })
    ck.EXACT = frozenset({"pkg"})
    try:
        graph = ck.import_graph(tmp_path, roots=("pkg", "other"))
        assert graph["pkg.mine.a"] == {"pkg.mine.b"}
        bad = ck.violations(graph, layers)
    finally:
        ck.EXACT = frozenset({"relgrade"})
    assert "pkg.config (ground) imports pkg.grade.stage (grade): a later layer" in bad
    assert "import circle: pkg.mine.a -> pkg.mine.b" in bad
    assert any(b.startswith("other: in no layer") for b in bad)
    assert not any("pkg.grade.stage (grade) imports" in b for b in bad)
    assert len(bad) == 3
