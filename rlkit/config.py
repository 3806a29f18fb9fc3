"""Hyperparameter resolution: defaults < YAML entry for the env < --config FILE < --set key=value.

Every algorithm has a ``Config`` dataclass. Keys that are not fields, and values of the wrong
type, are rejected with a UsageError (exit 2) before anything is written (docs/architecture.md §6).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rlkit.errors import UsageError, did_you_mean

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "agents" / "hyperparams"


def read_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"config file {path} is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} cannot be read: {exc}") from None


def yaml_entry(algo: str, env_id: str) -> dict:
    """The `default` entry of agents/hyperparams/<algo>.yaml, updated by the env's own entry."""
    path = HYPERPARAMS_DIR / f"{algo}.yaml"
    if not path.is_file():
        return {}
    table = read_yaml(path) or {}
    entry = dict(table.get("default") or {})
    entry.update(table.get(env_id) or {})
    return entry


def parse_set(items: list[str]) -> dict:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: value '{raw}' is not valid YAML") from None
        out[key.strip()] = value
    return out


def field_types(config_cls) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _accepts(tp, value) -> tuple[bool, Any]:
    """Return (ok, coerced value) for ``value`` against annotation ``tp``."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, coerced = _accepts(arg, value)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if args and args[0] is not Ellipsis:
            items = []
            for v in value:
                ok, c = _accepts(args[0], v)
                if not ok:
                    return False, value
                items.append(c)
            return True, list(items)
        return True, list(value)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validate(config_cls, values: dict, source: str) -> dict:
    types_ = field_types(config_cls)
    out = {}
    for key, value in values.items():
        if key not in types_:
            raise UsageError(f"unknown {source} key '{key}'{did_you_mean(key, types_)}; "
                             f"accepted: {', '.join(sorted(types_))}")
        ok, coerced = _accepts(types_[key], value)
        if not ok:
            raise UsageError(f"{source} key '{key}' = {value!r} is not a valid {_type_name(types_[key])}")
        out[key] = coerced
    return out


def resolve(config_cls, algo: str, env_id: str, config_file: Path | None = None,
            sets: dict | None = None) -> tuple[Any, dict]:
    """Build the Config and the env kwargs. Returns (config instance, env_kwargs)."""
    layers = [("hyperparams", yaml_entry(algo, env_id))]
    if config_file is not None:
        data = read_yaml(config_file)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UsageError(f"config file {config_file} must hold a mapping of key: value")
        # Accept both a flat mapping and the RL Zoo shape {env_id: {...}}.
        if env_id in data and isinstance(data[env_id], dict):
            data = data[env_id]
        layers.append(("config file", data))
    layers.append(("--set", sets or {}))

    merged: dict[str, Any] = {}
    env_kwargs: dict[str, Any] = {}
    for source, layer in layers:
        layer = dict(layer)
        kw = layer.pop("env_kwargs", None)
        if kw is not None:
            if not isinstance(kw, dict):
                raise UsageError(f"{source} key 'env_kwargs' must be a mapping, got {kw!r}")
            env_kwargs.update(kw)
        merged.update(validate(config_cls, layer, source))
    try:
        cfg = config_cls(**merged)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    check = getattr(cfg, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return cfg, env_kwargs


def config_from_dict(config_cls, values: dict):
    """Rebuild a Config saved in config.yaml / checkpoint meta (ignores keys an old version had)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in values.items() if k in names})
