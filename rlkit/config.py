"""Hyperparameter resolution: defaults < YAML entry for the env < --config FILE < --set key=value.

The YAML entry is `default` updated by the env's own entry, or by `<env id>@<preset>` with --preset
(instead of the env's own), or `default` alone with --untuned.

Every algorithm has a ``Config`` dataclass. Keys that are not fields, values of the wrong type,
numbers that are not finite or do not fit in 64 bits, and values outside the range a key has in
every algorithm (``POSITIVE``, ``NON_NEGATIVE``, ``UNIT_INTERVAL``) are rejected with a UsageError
(exit 2) before anything is written (docs/architecture.md §6); each ``Config.validate()`` then
checks what only its algorithm knows.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rlkit.errors import UsageError, did_you_mean

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "agents" / "hyperparams"

# Keys that mean the same in every algorithm that has them (rlkit's agents and the SB3 / RL Zoo
# names): checked wherever a Config has the key, from any layer (yaml, --config, --set, config.yaml).
POSITIVE = ("n_timesteps", "n_envs", "n_steps", "n_epochs", "batch_size", "learning_rate", "buffer_size",
            "train_freq", "target_update_interval", "max_grad_norm", "clip_range", "clip_range_vf", "target_kl",
            "frame_stack", "train_time_limit", "adam_eps", "optim_eps", "rms_prop_eps", "stats_window_size")
NON_NEGATIVE = ("vf_coef", "learning_starts", "torch_threads", "workers", "threads")
UNIT_INTERVAL = ("gamma", "gae_lambda", "tau", "rmsprop_alpha", "avg_reward_lr", "exploration_fraction",
                 "exploration_initial_eps", "exploration_final_eps")
INT64 = 2**63 - 1  # what torch, numpy and TensorBoard can hold


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


# A preset is an entry keyed `<env id>@<name>` (`CartPole-v1@fast`): `rlkit train --preset NAME` takes it
# instead of the env's own entry. Gymnasium ids never hold '@', so such a key is never an env id.
PRESET_SEP = "@"
PRESET_NAME = re.compile(r"[\w.-]+")


def check_preset_name(name) -> str:
    """A preset name as --preset takes it: letters, digits, '_', '.', '-' (no '@', no spaces)."""
    if not isinstance(name, str) or not PRESET_NAME.fullmatch(name):
        raise UsageError(f"--preset {name!r} is not a preset name (letters, digits, '_', '.' or '-'; "
                         f"`rlkit list` shows each algorithm's presets)")
    return name


def preset_key(key) -> tuple[str, str] | None:
    """(env id, preset name) of a key `<env id>@<name>`; None for a key without '@' (an env id, `default`)."""
    if not isinstance(key, str) or PRESET_SEP not in key:
        return None
    env_id, _, name = key.partition(PRESET_SEP)
    if not env_id or any(c.isspace() for c in env_id) or not PRESET_NAME.fullmatch(name):
        return env_id, ""  # malformed: read_table refuses it
    return env_id, name


def _shown(path: Path) -> str:
    """``path`` as a message shows it: relative to the checkout (agents/hyperparams/ppo.yaml) where it can be."""
    try:
        return str(path.relative_to(HYPERPARAMS_DIR.parent.parent))
    except ValueError:
        return str(path)


def read_table(algo: str) -> tuple[Path, dict]:
    """agents/hyperparams/<algo>.yaml as (path, {key: entry}); {} where the algorithm has no file.
    A malformed preset key (`Foo@`, `@fast`, `A@b@c`) is refused with exit 2."""
    path = HYPERPARAMS_DIR / f"{algo}.yaml"
    if not path.is_file():
        return path, {}
    table = read_yaml(path) or {}
    if not isinstance(table, dict):
        raise UsageError(f"{_shown(path)} must hold a mapping of entries (default, env ids, <env id>@<preset>)")
    for key in table:
        parsed = preset_key(key)
        if parsed is not None and not parsed[1]:
            raise UsageError(f"{_shown(path)}: entry '{key}' is malformed: a preset entry is keyed <env id>@<name> "
                             f"(e.g. CartPole-v1@fast; a name of letters, digits, '_', '.' or '-')")
    return path, table


def list_presets(algo: str) -> dict[str, list[str]]:
    """{env id: [preset names]} of agents/hyperparams/<algo>.yaml, in the file's order."""
    out: dict[str, list[str]] = {}
    for key in read_table(algo)[1]:
        parsed = preset_key(key)
        if parsed is not None:
            out.setdefault(parsed[0], []).append(parsed[1])
    return out


def yaml_entry(algo: str, env_id: str, untuned: bool = False, preset: str | None = None) -> dict:
    """The `default` entry of agents/hyperparams/<algo>.yaml, updated by the env's own entry
    (not with ``untuned``: how the default alone does on an env, `rlkit train --untuned`).

    ``preset``: the `default` entry updated by the `<env id>@<preset>` entry *instead of* the env's own
    (a complete alternative to the tuned entry, not a layer over it; `rlkit train --preset NAME`). A preset
    the file does not hold for that env exits 2 naming those it does; with ``untuned`` it is a usage error."""
    if preset is not None:
        check_preset_name(preset)
        if untuned:
            raise UsageError(f"--preset {preset} and --untuned cannot be combined: --preset takes <env id>@{preset} "
                             f"in place of the env's own entry, --untuned no entry at all; give one of them")
    path, table = read_table(algo)
    entry = dict(table.get("default") or {})
    if preset is not None:
        key = f"{env_id}{PRESET_SEP}{preset}"
        if key not in table:
            have = list_presets(algo).get(env_id, [])
            raise UsageError(f"--preset {preset}: {algo} has no preset '{preset}' for {env_id} (no entry '{key}' "
                             f"in {_shown(path)}); its presets for {env_id}: {', '.join(have) or 'none'}")
        chosen = table[key]
        if chosen is not None and not isinstance(chosen, dict):
            raise UsageError(f"{_shown(path)}: entry '{key}' must be a mapping of key: value")
        entry.update(chosen or {})
    elif not untuned:
        entry.update(table.get(env_id) or {})
    return entry


def parse_set(items: list[str]) -> dict:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got '{item}'")
        try:
            item.encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line
            raise UsageError(f"--set {key.strip()}: the value is not valid UTF-8 text") from None
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
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True, float(value)
            if isinstance(value, str):  # PyYAML reads "1e-3" as a string
                return True, float(value)
        except (ValueError, OverflowError):  # not a number, or an int too large for a float
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


def _numbers(value):
    """Every int and float inside a value (lists and dicts included), bools left out."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)


def _schedule_start(value: str) -> float | None:
    """The start value of an RL Zoo schedule string ``lin_<float>`` (None if it is not one)."""
    if not value.startswith("lin_"):
        return None
    try:
        return float(value[4:])
    except ValueError:
        return None


def check_value(key: str, value, source: str = "--set") -> None:
    """Refuse what no algorithm can train on: non-finite or out-of-int64 numbers anywhere in the
    value, and values outside the range ``key`` has in every algorithm (POSITIVE, ...)."""
    where = f"{source} key '{key}' = {value!r}"
    for number in _numbers(value):
        if isinstance(number, float) and not math.isfinite(number):
            raise UsageError(f"{where}: numbers must be finite")
        if isinstance(number, int) and abs(number) > INT64:
            raise UsageError(f"{where}: integers must lie within ±{INT64} (64 bits)")
    if key == "policy_kwargs" and isinstance(value, dict):  # SB3 layer sizes
        if any(n < 1 for n in _numbers(value.get("net_arch"))):
            raise UsageError(f"{where}: net_arch layer sizes must be >= 1")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if key in POSITIVE:  # SB3 schedules: learning_rate / clip_range "lin_<float>"
            start = _schedule_start(value)
            if start is None or not math.isfinite(start) or start <= 0:
                raise UsageError(f"{where}: expected a number > 0 or lin_<number > 0>")
        return
    number = value[0] if key == "train_freq" and isinstance(value, (list, tuple)) and value else value
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        return
    if key in POSITIVE and not number > 0:
        raise UsageError(f"{where}: must be > 0")
    if key in NON_NEGATIVE and number < 0:
        raise UsageError(f"{where}: must be >= 0")
    if key in UNIT_INTERVAL and not 0 <= number <= 1:
        raise UsageError(f"{where}: must lie in [0, 1]")


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
        check_value(key, coerced, source)
        out[key] = coerced
    return out


def _build(config_cls, merged: dict):
    """The Config instance, checked by its own ``validate()`` (ValueError -> UsageError)."""
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
    return cfg


def config_file_entry(config_file: Path, env_id: str) -> dict:
    """A --config file's hyperparameters for ``env_id``: a flat mapping, or the RL Zoo shape {env_id: {...}}."""
    data = read_yaml(config_file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {config_file} must hold a mapping of key: value")
    if env_id in data and isinstance(data[env_id], dict):
        data = data[env_id]
    return data


def resolve(config_cls, algo: str, env_id: str, config_file: Path | None = None,
            sets: dict | None = None, untuned: bool = False, sets_source: str = "--set",
            preset: str | None = None) -> tuple[Any, dict]:
    """Build the Config and the env kwargs. Returns (config instance, env_kwargs). ``sets_source`` names
    the overrides in error messages (the Python API's are keyword arguments, not --set). ``preset``: the
    `<env id>@<preset>` entry replaces the env's own (``yaml_entry``); the config file and sets still apply."""
    layers = [("hyperparams", yaml_entry(algo, env_id, untuned, preset))]
    if config_file is not None:
        layers.append(("config file", config_file_entry(config_file, env_id)))
    layers.append((sets_source, sets or {}))

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
    return _build(config_cls, merged), env_kwargs


def check_saved(config_cls, values, source: str):
    """The Config of a saved run (config.yaml ``hyperparams``), checked as strictly as a new one:
    a hand-edited file is refused with exit 2. Keys an older version had are ignored."""
    if not isinstance(values, dict):
        raise UsageError(f"{source}: hyperparams must be a mapping of key: value")
    names = {f.name for f in dataclasses.fields(config_cls)}
    return _build(config_cls, validate(config_cls, {k: v for k, v in values.items() if k in names}, source))


def config_from_dict(config_cls, values: dict):
    """Rebuild a Config saved in config.yaml / checkpoint meta (ignores keys an old version had)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in values.items() if k in names})
