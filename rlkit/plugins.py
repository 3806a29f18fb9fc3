"""A user's own environments: the modules that register them, imported in every process that builds one.

Three ways to name a user's env on the command line (docs/byo_env.md):

- ``--env pkg.module:EnvId``: Gymnasium's own form (``gym.make`` accepts it): import the module, which
  registers ``EnvId``;
- ``--env EnvId --env-package pkg.module`` (repeatable): the RL Zoo's ``--gym-packages`` habit;
- ``--env pkg.module:ClassName``: a ``gymnasium.Env`` subclass that nobody registered; rlkit registers
  it as ``ClassName-v0`` (entry point ``pkg.module:ClassName``), unless the module registered that id itself.

Either way the run records the canonical id (``env``) and what to import (``env_packages``, a list of
``module`` or ``module:Class`` strings) in config.yaml, so eval, render, resume and ``--seeds`` import
them again. A ``gym.register`` in one process is not seen by another, so every worker (spawn
processes, Ray actors, RLlib env runners) calls ``import_in_worker``: rlkit.workers hands each worker
the list (``packages_state``) with its constructor arguments; RLlib's env runners, which rlkit does not
start itself, read it from the environment variable ``RLKIT_ENV_PACKAGES`` (inherited by the Ray rlkit
starts; given to a joined Ray cluster as its runtime env), with ``PYTHONPATH`` extended by the folders
the modules were found in. ``rlkit compare`` only reads files and never imports any of this.

A module is looked for on ``sys.path`` and, as ``python -m`` would, in the current folder, then in the
folder a run was started from (config.yaml's provenance). A module that is missing or raises while
it is imported is one line and exit 2, naming it.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

from rlkit.errors import UsageError, first_line

ENV_VAR = "RLKIT_ENV_PACKAGES"
SEPARATOR = ","  # ":" belongs to the module:Class form, so not os.pathsep
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What this process has imported (in order), the folders they were found in, and the folders rlkit
# put on sys.path to find them (which RLlib's env runners get through PYTHONPATH).
_imported: list[str] = []
_added_paths: list[str] = []
_searched: list[str] = []


def check_package_name(spec: str) -> tuple[str, str]:
    """``module`` or ``module:Class`` -> (module, Class or ""), or a usage error."""
    if not isinstance(spec, str):
        raise UsageError(f"env package {spec!r} is not a module name")
    module, _, cls_name = spec.partition(":")
    if not _MODULE.match(module) or (cls_name and not _NAME.match(cls_name)):
        raise UsageError(f"env package '{spec}' is not a module name (pkg.module, or pkg.module:Class)")
    return module, cls_name


def _root_folder(module: str) -> str | None:
    """The folder ``module``'s top-level package or file was found in (what sys.path needed)."""
    top = sys.modules.get(module.split(".")[0])
    where = getattr(top, "__file__", None)
    if where:
        path = Path(where).resolve()
        return str(path.parent.parent if path.name == "__init__.py" else path.parent)
    locations = list(getattr(top, "__path__", []) or [])  # a namespace package (a folder without __init__.py)
    return str(Path(locations[0]).resolve().parent) if locations else None


def _import_module(module: str, search: list[str]):
    """Import ``module``; if Python cannot find it, look in ``search`` folders too (added to sys.path).
    The folder it came from is remembered for the workers (``packages_state``)."""
    module_obj = _find_module(module, search)
    root = _root_folder(module)
    if root and root not in _added_paths:
        _added_paths.append(root)
    return module_obj


def _find_module(module: str, search: list[str]):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not (exc.name and module.split(".")[0] == exc.name.split(".")[0]):
            raise UsageError(f"env package '{module}' failed to import: {type(exc).__name__}: "
                             f"{first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001  the user's module raised: one line naming it
        raise UsageError(f"env package '{module}' failed to import: {type(exc).__name__}: {first_line(exc)}") from None
    for folder in search:
        folder = str(Path(folder).resolve())
        top = module.split(".")[0]
        if not (Path(folder) / top).is_dir() and not (Path(folder) / f"{top}.py").is_file():
            continue
        if folder not in sys.path:
            sys.path.append(folder)
            _searched.append(folder)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"env package '{module}' failed to import: {type(exc).__name__}: "
                             f"{first_line(exc)}") from None
    raise UsageError(f"env package '{module}' cannot be imported: no module named '{module}' on the Python path "
                     f"or in {', '.join(dict.fromkeys(str(Path(f).resolve()) for f in search))} (run from the "
                     f"folder that holds it, or add that folder to PYTHONPATH)")


def class_env_id(cls_name: str) -> str:
    """The id a ``module:Class`` env is registered under: its class name, version 0."""
    return f"{cls_name}-v0"


def _register_class(module_obj, module: str, cls_name: str) -> str:
    """Register ``module:Class`` as ``Class-v0`` (if the module has not registered it so itself); the id."""
    import gymnasium as gym

    cls = getattr(module_obj, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
        raise UsageError(f"env package '{module}:{cls_name}': {module} has no gymnasium.Env class {cls_name}")
    env_id, entry = class_env_id(cls_name), f"{module}:{cls_name}"
    if env_id in gym.registry:
        if gym.registry[env_id].entry_point not in (entry, cls):
            raise UsageError(f"'{module}:{cls_name}': the env id {env_id} is already registered for "
                             f"{gym.registry[env_id].entry_point}")
        return env_id
    try:
        gym.register(id=env_id, entry_point=entry)
    except gym.error.Error as exc:
        raise UsageError(f"'{module}:{cls_name}' cannot be registered as {env_id}: {first_line(exc)}") from None
    return env_id


def import_packages(packages, search: list[str] | None = None) -> None:
    """Import each ``module`` / ``module:Class`` (registering the class), once per process, and hand the
    list on to the workers this process will start (``ENV_VAR``, ``PYTHONPATH``)."""
    search = [os.getcwd(), *(search or [])]
    for spec in packages or []:
        module, cls_name = check_package_name(spec)
        module_obj = _import_module(module, search)
        if cls_name:
            _register_class(module_obj, module, cls_name)
        if spec not in _imported:
            _imported.append(spec)
    if _imported:
        os.environ[ENV_VAR] = SEPARATOR.join(_imported)
    if _searched:
        current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(current + [p for p in _searched if p not in current])


def packages_state() -> tuple:
    """What a worker needs to import what this process imported: (packages, folders they came from)."""
    return tuple(_imported), tuple(_added_paths)


def import_in_worker(state: tuple | None = None) -> None:
    """In a worker process: register rlkit's envs and import what the driver imported, given as
    ``packages_state()`` by the driver (rlkit.workers) or else read from ``ENV_VAR`` (RLlib's env runners)."""
    import envs  # noqa: F401  registers the rlkit/* ids

    if state is not None:
        wanted, folders = list(state[0]), list(state[1])
    else:
        wanted, folders = [p for p in os.environ.get(ENV_VAR, "").split(SEPARATOR) if p], []
    if any(p not in _imported for p in wanted):
        import_packages(wanted, search=folders)


def worker_env_vars() -> dict:
    """The environment variables a joined Ray cluster's workers need (its runtime env)."""
    out = {}
    if os.environ.get(ENV_VAR):
        out[ENV_VAR] = os.environ[ENV_VAR]
        if _searched:
            out["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return out


def resolve_env(env: str, packages: list[str] | None = None, search: list[str] | None = None) -> tuple[str, list[str]]:
    """The canonical env id and the packages to import for ``--env`` (+ ``--env-package``s).

    ``module:EnvId`` imports the module, which must register EnvId; ``module:Class`` registers a
    gymnasium.Env class under its name; a plain id must be registered (by Gymnasium, rlkit or a
    package). Unknown names are usage errors with a "did you mean".
    """
    from rlkit import registry

    packages = list(dict.fromkeys(packages or []))
    import_packages(packages, search)
    if ":" in env:
        import gymnasium as gym

        module, _, name = env.partition(":")
        if not _MODULE.match(module) or not name:
            raise UsageError(f"--env '{env}' is not an env id, pkg.module:EnvId or pkg.module:Class")
        module_obj = _import_module(module, [os.getcwd(), *(search or [])])
        if name in gym.registry:
            spec = module
        elif _NAME.match(name) and isinstance(getattr(module_obj, name, None), type):
            spec, name = f"{module}:{name}", class_env_id(name)
        else:
            theirs = sorted(k for k, s in gym.registry.items()
                            if isinstance(s.entry_point, str) and s.entry_point.startswith(module + ":"))
            listed = f"; it registers {', '.join(theirs)}" if theirs else "; it registers no env"
            raise UsageError(f"--env '{env}': module {module} registers no env '{name}' and has no class "
                             f"of that name{listed}")
        import_packages([spec], search)  # registers a class, and hands the import on to the workers
        if spec not in packages:
            packages.append(spec)
        return name, packages
    return registry.check_env(env), packages
