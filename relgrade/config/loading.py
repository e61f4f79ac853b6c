"""YAML profiles into the typed root: deep merge, paths, strict errors that name the key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from relgrade.config.base import DEFAULT_CONFIG_FILE
from relgrade.config.root import RelgradeConfig


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class ConfigError(ValueError):
    """A configuration that cannot be used: one line per problem, each naming the file,
    the key, the value, what is allowed and (for a misspelt key) the closest valid one."""


# keys whose values are file paths: relative ones in a user's config file resolve
# against that file's folder (the shipped profiles' against the repository root)
PATH_KEYS = ("data_root", "dataset.path", "dataset.products_path", "dataset.labels_path", "dataset.catalog_path",
             "dataset.blind_ratings_path",
             "dataset.judgments_path", "dataset.queries_path", "engagement.log_path", "mining.external_path",
             "mining.dense_cache_dir", "training.base_model", "attributes.gold_path")


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if doc is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(doc).__name__}")
    return doc


def _absolutize(doc: dict, base: Path) -> dict:
    out = _deep_merge({}, doc)
    for key in PATH_KEYS:
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str):
            v = Path(node[parts[-1]]).expanduser()
            node[parts[-1]] = str(v if v.is_absolute() else (base / v).resolve())
    stages = (out.get("grading") or {}).get("stages") if isinstance(out.get("grading"), dict) else None
    for st in stages or []:
        if isinstance(st, dict) and isinstance(st.get("base_model"), str) and not Path(st["base_model"]).is_absolute():
            st["base_model"] = str((base / st["base_model"]).resolve())
    return out


def _model_at(loc: tuple) -> type | None:
    """The config model a validation error location points into (for key suggestions)."""
    model: Any = RelgradeConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(model, _UnionOf):
            tagged = [a for a in model.members if getattr(a.model_fields.get("kind"), "default", None) == part]
            if tagged:
                model = tagged[0]
                continue
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        if part not in model.model_fields:
            return model
        ann = model.model_fields[part].annotation
        nxt = [a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = nxt[0] if len(nxt) == 1 else (_UnionOf(nxt) if nxt else ann)
    return model if isinstance(model, type) else None


class _UnionOf:
    def __init__(self, members):
        self.members = members


def _flatten(ann) -> list:
    import typing

    args = typing.get_args(ann)
    if not args:
        return [ann]
    out = []
    for a in args:
        out += _flatten(a)
    return out


def format_validation_error(exc, source: str) -> str:
    """One line per problem: ``source: key = value: what is allowed`` (with the closest
    valid key for an unknown one)."""
    import difflib

    lines = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in ("gbm", "cross_encoder")))
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            fields = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            hint = f" (did you mean {prefix}{close[0]}?)" if close else (f" (valid: {', '.join(fields)})" if fields else "")
            lines.append(f"{source}: unknown key {key}{hint}")
        elif not key or isinstance(e.get("input"), dict):
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key + ': ' if key else ''}{msg}")
        else:
            lines.append(f"{source}: {key} = {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_config(
    profile: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> RelgradeConfig:
    """The configuration: the typed defaults, the shipped profile ``profile`` (default:
    $RELGRADE_PROFILE or ``default``) and a user's config file (``config_file`` or
    $RELGRADE_CONFIG), deep-merged in that order, then ``overrides`` (tests point
    data_root at a tmp dir) and $RELGRADE_DATA_ROOT.

    A user's file holds only what differs from the defaults (any subset of the keys
    ``relgrade config`` prints); one with ``profiles:`` is a whole profile file and
    replaces the shipped one. Relative paths in it resolve against its folder. Every
    problem raises :class:`ConfigError` with one line per key."""
    profile = profile or os.environ.get("RELGRADE_PROFILE", "default")
    env_file = os.environ.get("RELGRADE_CONFIG")
    if config_file is None and env_file is not None:
        if not env_file.strip():
            raise ConfigError("RELGRADE_CONFIG is set but empty: unset it or give the path of a config file")
        config_file = env_file
    shipped = _read_yaml(DEFAULT_CONFIG_FILE)
    source = str(DEFAULT_CONFIG_FILE)
    user = None
    if config_file is not None:
        upath = Path(config_file).expanduser().resolve()
        user = _absolutize(_read_yaml(upath), upath.parent)
        source = str(upath)
    table = user if user is not None and ("profiles" in user or "base" in user) else shipped
    profiles = table.get("profiles") or {}
    if profile not in profiles:
        import difflib

        close = difflib.get_close_matches(profile, list(profiles), n=1)
        where = source if table is user else str(DEFAULT_CONFIG_FILE)
        raise ConfigError(f"{where}: unknown profile {profile!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; known: {', '.join(sorted(profiles))}")
    merged = _deep_merge(table.get("base") or {}, profiles[profile] or {})
    if user is not None and table is shipped:
        merged = _deep_merge(merged, user)
    merged["profile"] = profile
    if os.environ.get("RELGRADE_DATA_ROOT"):
        merged["data_root"] = os.environ["RELGRADE_DATA_ROOT"]
    merged = _deep_merge(merged, overrides or {})
    from pydantic import ValidationError

    try:
        return RelgradeConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
