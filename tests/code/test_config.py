"""The typed configuration: one home for every default, bounds on every number, one-line
errors that name the file, the key and the closest valid key, and user config files that
hold only overrides."""
from __future__ import annotations

import typing

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from relgrade.config import DEFAULT_CONFIG_FILE, ConfigError, RelgradeConfig, load_config


def _numeric_fields(model, prefix=""):
    """(dotted name, FieldInfo or element metadata) for every int/float setting."""
    for name, f in model.model_fields.items():
        ann = f.annotation
        args = typing.get_args(ann)
        members = [a for a in (args or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        for m in members:
            yield from _numeric_fields(m, prefix + name + ".")
        origin = typing.get_origin(ann)
        if origin is dict:
            val = args[1]
            if typing.get_origin(val) is typing.Annotated:
                yield prefix + name + "{}", list(typing.get_args(val)[1:])
            elif val in (int, float):
                yield prefix + name + "{}", []
        elif origin is list:
            inner = args[0]
            pieces = (inner,) if typing.get_origin(inner) is typing.Annotated else (typing.get_args(inner) or (inner,))
            for piece in pieces:
                if typing.get_origin(piece) is typing.Annotated:
                    base, *meta = typing.get_args(piece)
                    if base in (int, float):
                        yield prefix + name + "[]", meta
                elif piece in (int, float):
                    yield prefix + name + "[]", []
                elif isinstance(piece, type) and issubclass(piece, BaseModel):
                    yield from _numeric_fields(piece, prefix + name + "[].")
                elif typing.get_origin(piece) is typing.Annotated:
                    for a in typing.get_args(typing.get_args(piece)[0]):
                        if isinstance(a, type) and issubclass(a, BaseModel):
                            yield from _numeric_fields(a, prefix + name + "[].")
        elif ann is not bool and (ann in (int, float) or any(a in (int, float) for a in args)):
            yield prefix + name, f.metadata


def test_every_numeric_setting_has_bounds():
    bounded = (at.Ge, at.Gt, at.Le, at.Lt, at.Interval)
    from pydantic.fields import FieldInfo

    def has_bounds(meta) -> bool:
        for m in meta:
            if isinstance(m, bounded):
                return True
            if isinstance(m, FieldInfo) and any(isinstance(x, bounded) for x in m.metadata):
                return True
        return False

    missing = [n for n, meta in _numeric_fields(RelgradeConfig)
               if not has_bounds(meta) and not n.endswith(("unjudged_grade_probs[]", "mined_label[]", "levels[]"))]
    # the three list exceptions are checked whole by validators (probabilities summing to 1, levels 1..5)
    assert missing == []


def test_the_shipped_profiles_hold_only_real_overrides():
    """The YAML's base is empty: the typed config is the one home of every default."""
    doc = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    assert not doc.get("base")
    for name in doc["profiles"]:
        load_config(name)


@pytest.mark.parametrize("override, message", [
    ({"grading": {"negatives": {"random_weigth": 1}}}, "unknown key grading.negatives.random_weigth (did you mean grading.negatives.random_weight?)"),
    ({"minning": {}}, "unknown key minning (did you mean mining?)"),
    ({"grading": {"stages": [{"kind": "gbm", "learning_rate": -0.1}]}}, "grading.stages.0.learning_rate = -0.1: Input should be greater than 0"),
    ({"dataset": {"adapter": "foo"}}, "dataset.adapter = 'foo'"),
    ({"training": {"batch_size": 0}}, "training.batch_size = 0"),
])
def test_bad_settings_give_one_line_naming_file_key_and_fix(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config("default", overrides=override)
    text = str(exc.value)
    assert message in text and str(DEFAULT_CONFIG_FILE) in text and "\n" not in text


def test_unknown_profile_and_empty_env_file():
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        load_config("defualt")
    import os

    os.environ["RELGRADE_CONFIG"] = "  "
    try:
        with pytest.raises(ConfigError, match="RELGRADE_CONFIG is set but empty"):
            load_config("default")
    finally:
        del os.environ["RELGRADE_CONFIG"]


def test_a_user_file_holds_only_overrides_and_resolves_its_own_paths(tmp_path):
    f = tmp_path / "proj" / "relgrade.yaml"
    f.parent.mkdir()
    f.write_text("data_root: var\nmining:\n  k: 7\n")
    cfg = load_config("quick", config_file=f)
    assert cfg.mining.k == 7 and cfg.dataset.max_queries == 400  # the quick profile below it
    assert cfg.paths.root == (tmp_path / "proj" / "var").resolve()
    bad = tmp_path / "bad.yaml"
    bad.write_text("mining:\n  kk: 7\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key mining.kk \(did you mean mining.k\?\)"):
        load_config("default", config_file=bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("mining: [k: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("default", config_file=broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("default", config_file=tmp_path / "nope.yaml")


def test_cli_prints_one_line_and_exits_2_for_a_bad_config(tmp_path, monkeypatch):
    from relgrade.cli import app

    monkeypatch.setenv("RELGRADE_CONFIG", str(DEFAULT_CONFIG_FILE))  # restored after the test (--config sets it)
    bad = tmp_path / "bad.yaml"
    bad.write_text("grading:\n  negatives:\n    random_weight: -1\n")
    r = CliRunner().invoke(app, ["ingest", "--config", str(bad)])
    assert r.exit_code == 2
    assert "grading.negatives.random_weight = -1" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["pipeline", "--until", "trian"])
    assert r.exit_code == 2 and "did you mean 'train'" in r.output
    r = CliRunner().invoke(app, ["config", "--profile", "quik"])
    assert r.exit_code == 2 and "did you mean 'quick'" in r.output


def _models(model, seen=None):
    """Every pydantic model reachable from ``model``'s fields (nested, in lists, unions)."""
    seen = seen if seen is not None else {}
    seen[model.__name__] = model
    for f in model.model_fields.values():
        stack = [f.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                if a.__name__ not in seen:
                    _models(a, seen)
            else:
                stack.extend(typing.get_args(a))
    return seen


def test_every_setting_is_read_somewhere():
    """A setting nothing reads is a promise the code does not keep: every field of the
    typed config is read (``.field`` or ``["field"]``) by the package, flows, training,
    validation or feature repo."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = "\n".join(p.read_text() for d in ("relgrade", "flows", "training", "validation", "feature_repo")
                       for p in sorted((root / d).rglob("*.py")))
    unread = [f"{name}.{field}" for name, model in _models(RelgradeConfig).items() for field in model.model_fields
              if not re.search(rf"\.{field}\b|[\"']{field}[\"']", source)]
    assert unread == []
