"""Run directories: runs/<env>/<algo>__s<seed>__<time>/ with config.yaml, run.json, checkpoints/
and the ``latest`` pointer; ``load_run`` rebuilds the agent of a run for eval, render and demo.

One writer at a time: ``lock_run_dir`` takes an OS file lock (``flock`` on ``RUN_DIR/.lock``) that
the training process holds until it ends; the kernel drops it when the process dies, so a lock is
never stale. Readers (eval, render, compare) take no lock: every file is replaced atomically.

One commit point per checkpoint (``commit``): the agent file ``step_<n>.pt`` is written, then its
run state ``step_<n>.json`` (run.json's content at that step: evaluation history, ``solved_at_*``,
wall time), then ``latest`` is moved to name them. Moving ``latest`` is the commit; run.json is a
readable copy of the committed state, rewritten from it on resume. A kill at any instant leaves
the last commit, and files of a commit that never happened are removed on resume
(``clean_uncommitted``).

The best checkpoint rides on the same commit. When a stop-check evaluation beats every earlier one,
the agent is written to ``best_<step>.pt`` (staged) and the run state names it (``best``); the
commit that carries that run state then renames it to ``best.pt`` (``promote_best``). A kill after
``latest`` moved but before the rename is finished on resume; a staged file that no commit names is
removed. So ``best.pt`` is always a whole checkpoint, and the one run.json's ``best`` describes.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from pathlib import Path

import yaml

from rlkit.checkpoint import atomic_write_text, load_agent_checkpoint
from rlkit.errors import UsageError, first_line

DEFAULT_ROOT = Path("runs")
LOCK_FILE = ".lock"
STATUSES = ("running", "finished", "solved", "interrupted", "failed")


def env_dirname(env_id: str) -> str:
    return env_id.replace("/", "-")


def new_run_dir(root: Path, env_id: str, algo: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / env_dirname(env_id) / f"{algo}__s{seed}__{stamp}"
    path, i = base, 1
    while path.exists():  # two runs started in the same second
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


# --- creating a run directory ----------------------------------------------------------------
def check_creatable(path: Path, flag: str, shown: Path | None = None) -> None:
    """Refuse, before any work, a directory that cannot be made: it, or a folder above it, is a
    file, or the nearest existing folder above it is not writable. Messages name ``flag shown``
    (default: ``path``)."""
    path = Path(path)
    check_path_name(path, flag, shown)
    name = f"{flag} {shown if shown is not None else path}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{name} is a file, not a directory" if shown is None else
                         f"{name}: {path} is a file, not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{name}: {probe} is a file, not a directory")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{name}: {probe} is not writable")


def _shorten(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[: keep // 2]}…{text[-keep // 2:]}"


def check_path_name(path: Path, flag: str, shown: Path | None = None) -> None:
    """Refuse a path no file system here can name (ENAMETOOLONG, which ``Path.exists`` raises rather
    than answers): a part longer than NAME_MAX bytes, or the whole longer than PATH_MAX."""
    def limit(name: str, default: int) -> int:
        try:
            return os.pathconf("/", name)
        except (OSError, ValueError):
            return default

    name_max, path_max = limit("PC_NAME_MAX", 255), limit("PC_PATH_MAX", 4096)
    name = f"{flag} {_shorten(str(shown if shown is not None else path))}"
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise UsageError(f"{name}: the name '{_shorten(part)}' is too long ({size} bytes; a file name has at most "
                             f"{name_max})")
    size = len(os.fsencode(os.path.abspath(path)))
    if size >= path_max:
        raise UsageError(f"{name}: the path is too long ({size} bytes; a path has fewer than {path_max})")


def check_utf8_name(path: Path, flag: str) -> None:
    """Refuse a run directory whose name is not valid UTF-8 (a byte Python decoded with surrogateescape):
    TensorBoard, config.yaml and run.json record the path as text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(f"{flag} {shown}: the name is not valid UTF-8; run directories need UTF-8 names "
                         f"(TensorBoard, config.yaml and run.json record them as text)") from None


def make_dirs(path: Path, flag: str, shown: Path | None = None) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, deepest last (to undo a failed start)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    created = []
    folder = path
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # made by someone else meanwhile: not ours to remove
            created.append(folder)
    except OSError as exc:
        remove_created(created)
        raise UsageError(f"{flag} {shown if shown is not None else path}: cannot create {folder}: "
                         f"{exc.strerror or first_line(exc)}") from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove folders ``make_dirs`` created, deepest first, each only if it is empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def is_empty_run_dir(run_dir: Path) -> bool:
    """True if a directory holds nothing but (maybe) a lock file."""
    return all(p.name == LOCK_FILE for p in Path(run_dir).iterdir())


# --- the writer's lock -----------------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``; the file holds the holder's PID. ``found``: the
    file as the holder found it (content, stat result), or None if it created it."""

    def __init__(self, fd: int, path: Path, found: tuple[bytes, os.stat_result] | None = None):
        self.fd, self.path, self.found = fd, path, found

    def release(self, restore: bool = False) -> None:
        """Drop the lock. ``restore``: the holder took it only to refuse the run (bad input), and
        puts back the .lock it found, content and times, or removes the one it created."""
        if self.fd is None:
            return
        if restore:
            try:
                if self.found is None:
                    self.path.unlink(missing_ok=True)
                else:
                    data, st = self.found
                    os.ftruncate(self.fd, 0)
                    os.pwrite(self.fd, data, 0)
                    os.utime(self.fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError:
                pass  # the lock file is a hint for people; the flock is what counts
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None


def _holder_pid(path: Path) -> str:
    for _ in range(40):  # the holder writes its PID right after taking the lock
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.025)
    return "unknown"


def lock_run_dir(run_dir: Path) -> RunLock:
    """Take the run directory's writer lock, or raise UsageError naming the PID that holds it."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    while True:
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write in run directory {run_dir}: {exc.strerror or first_line(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _in_use(run_dir, path) from None
        try:  # a failed start may have removed the file between open and flock: lock the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    st = os.fstat(fd)
    found = (os.pread(fd, max(st.st_size, 1), 0), st) if existed else None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(fd, path, found)


def _in_use(run_dir: Path, path: Path) -> UsageError:
    return UsageError(f"run directory {run_dir} is in use by another rlkit process (PID "
                      f"{_holder_pid(path)}); wait for it to end or stop it first")


def check_not_in_use(run_dir: Path) -> None:
    """Raise ``lock_run_dir``'s UsageError if a writer holds the run directory's lock, and change
    nothing either way: the lock file is opened read-only (never created, no PID written) and a
    shared lock is tried and dropped at once. For a process that is going to refuse the directory
    anyway and only wants to name the writer at work there."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: no writer
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise _in_use(run_dir, path) from None
    finally:
        os.close(fd)  # drops the shared lock, if it was taken


# --- config.yaml -----------------------------------------------------------------------------
def write_config(run_dir: Path, config: dict) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# config.yaml keys the driver reads: (check, what it must be)
_SETTINGS = {
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "total_steps": (lambda v: _is_int(v) and 1 <= v < 2**63, "an integer >= 1"),
    "eval_every": (lambda v: _is_int(v) and 1 <= v < 2**63, "an integer >= 1"),
    "eval_episodes": (lambda v: _is_int(v) and 1 <= v < 2**63, "an integer >= 1"),
    "checkpoint_every": (lambda v: _is_int(v) and 1 <= v < 2**63, "an integer >= 1"),
    "final_eval_episodes": (lambda v: _is_int(v) and 0 <= v < 2**63, "an integer >= 0"),
    "video_every": (lambda v: v is None or (_is_int(v) and 1 <= v < 2**63), "an integer >= 1 or null"),
    "stop_at_return": (lambda v: v is None or _is_number(v), "a finite number or null"),
    "env_kwargs": (lambda v: v is None or isinstance(v, dict), "a mapping"),
    "hyperparams": (lambda v: v is None or isinstance(v, dict), "a mapping"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "backend": (lambda v: v in ("local", "ray"), "local or ray"),
    "workers": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
    "ray_address": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "env_packages": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v), "a list of module names"),
    "preset": (lambda v: v is None or (isinstance(v, str) and _is_preset_name(v)), "a preset name or null"),
}


def _is_preset_name(name: str) -> bool:
    from rlkit.config import PRESET_NAME

    return PRESET_NAME.fullmatch(name) is not None
TRAINING_KEYS = ("seed", "total_steps", "eval_every", "eval_episodes", "checkpoint_every")


def read_config(run_dir: Path, training: bool = False, import_env: bool = True) -> dict:
    """config.yaml, checked: a hand-edited file naming an unknown algorithm or env, or holding a
    value of the wrong kind, is refused with exit 2. ``training``: the keys resuming needs must be there.
    ``import_env``: import the run's env packages (rlkit.plugins) and check its env id; ``rlkit compare``,
    which only reads files, passes False."""
    from rlkit import registry

    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise UsageError(f"{run_dir} is not an rlkit run directory (no config.yaml)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UsageError(f"{path} is not valid YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} cannot be read: {first_line(exc)}") from None
    if not isinstance(cfg, dict) or "algo" not in cfg or "env" not in cfg:
        raise UsageError(f"{path} is not an rlkit run config (needs algo and env)")
    if not isinstance(cfg["algo"], str) or not isinstance(cfg["env"], str):
        raise UsageError(f"{path}: algo and env must be strings")
    for key, (ok, what) in _SETTINGS.items():
        if key in cfg and not ok(cfg[key]):
            raise UsageError(f"{path}: {key} = {cfg[key]!r} is not {what}")
    try:
        registry.check_algo(cfg["algo"])
        if import_env:
            from rlkit import plugins

            started_in = (cfg.get("provenance") or {}).get("cwd") if isinstance(cfg.get("provenance"), dict) else None
            plugins.import_packages(cfg.get("env_packages") or [], search=[started_in] if started_in else [])
            registry.check_env(cfg["env"])
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if training:
        missing = [k for k in TRAINING_KEYS if k not in cfg]
        if missing:
            raise UsageError(f"{path} lacks {', '.join(missing)}: it cannot be resumed")
    return cfg


# --- run.json --------------------------------------------------------------------------------
def write_run_json(run_dir: Path, info: dict) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))


def read_run_json(run_dir: Path) -> dict:
    """run.json as a dict; {} if it is missing or not a JSON object (see ``run_info_problem``)."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def run_info_problem(info) -> str | None:
    """What is wrong with a run.json's content (None if nothing): the fields rlkit reads must have
    the types it writes."""
    if not isinstance(info, dict):
        return f"it holds {type(info).__name__}, not an object"
    for key in ("wall_s", "solved_at_s"):
        if key in info and not (_is_number(info[key]) and info[key] >= 0):
            return f"{key} = {info[key]!r} is not a number >= 0"
    for key in ("steps", "total_steps", "solved_at_step"):
        if key in info and not (_is_int(info[key]) and info[key] >= 0):
            return f"{key} = {info[key]!r} is not an integer >= 0"
    if "status" in info and info["status"] not in STATUSES:
        return f"status = {info['status']!r} is not one of {', '.join(STATUSES)}"
    evals = info.get("evals", [])
    if not isinstance(evals, list) or not all(
            isinstance(e, list) and len(e) == 3 and _is_int(e[0]) and all(_is_number(x) for x in e[1:]) for e in evals):
        return "evals is not a list of [step, seconds, mean return]"
    best = info.get("best")
    if best is not None and not (isinstance(best, dict) and _is_int(best.get("step")) and best["step"] >= 0
                                 and _is_number(best.get("mean_return"))):
        return "best is not an object with an integer step and a mean_return"
    final = info.get("final_eval")
    if final is not None and not (isinstance(final, dict) and all(
            _is_number(final[k]) for k in ("mean_return", "std_return", "episodes") if k in final)):
        return "final_eval is not an object of numbers"
    return None


def load_run_info(run_dir: Path) -> dict:
    """run.json, checked; UsageError (exit 2) naming the problem if it is missing or damaged."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not valid JSON ({first_line(exc)})") from None
    problem = run_info_problem(info)
    if problem:
        raise UsageError(f"{path} is damaged: {problem}")
    return info


# --- checkpoints and the commit --------------------------------------------------------------
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def state_path(ckpt: Path) -> Path:
    """The run state committed with a checkpoint: step_<n>.pt -> step_<n>.json."""
    return Path(ckpt).with_suffix(".json")


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint named by checkpoints/latest (falls back to the highest step_<n>.pt)."""
    ckdir = checkpoint_dir(run_dir)
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    committed = committed_checkpoint(run_dir)
    if committed is not None:
        return committed
    try:
        named = (ckdir / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    if named and "/" not in named and (ckdir / named).exists():  # there, but not a file: say what it is
        kind = "a directory" if (ckdir / named).is_dir() else "not a regular file"
        raise UsageError(f"{ckdir / 'latest'} names {ckdir / named}, which is {kind}, not a checkpoint file")
    candidates = sorted(ckdir.glob("step_*.pt"), key=_step_of)
    if not candidates:
        raise UsageError(f"run directory {run_dir} holds no checkpoint")
    return candidates[-1]


def committed_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, or None if nothing was ever committed (or it is gone)."""
    latest = checkpoint_dir(run_dir) / "latest"
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    path = checkpoint_dir(run_dir) / name
    if not name or "/" in name or not path.is_file():
        return None
    return path


def committed_state(ckpt: Path) -> dict | None:
    """The run state committed with ``ckpt`` (None for checkpoints written without one: older runs,
    World Models' stage checkpoints)."""
    try:
        info = json.loads(state_path(ckpt).read_text())
    except (OSError, ValueError):
        return None
    return info if run_info_problem(info) is None else None


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.split("_")[1])
    except (IndexError, ValueError):
        return -1


def commit(run_dir: Path, ckpt: Path, info: dict, keep: int = 3) -> None:
    """Commit a checkpoint already written at ``ckpt``: its run state next to it, then ``latest``;
    then the staged best checkpoint that run state names becomes ``best.pt``."""
    atomic_write_text(state_path(ckpt), json.dumps(info))
    mark_latest(run_dir, ckpt, keep)
    promote_best(run_dir, info)


BEST_FILE = "best.pt"


def staged_best(run_dir: Path, step: int) -> Path:
    """Where the agent of a new best evaluation at ``step`` waits for the next commit."""
    return checkpoint_dir(run_dir) / f"best_{int(step)}.pt"


def promote_best(run_dir: Path, state: dict | None) -> None:
    """Make the staged best checkpoint named by a committed run state ``best.pt``; remove every other
    staged one (superseded, or never committed)."""
    ckdir = checkpoint_dir(run_dir)
    best = (state or {}).get("best")
    keep = None
    if isinstance(best, dict) and _is_int(best.get("step")):
        keep = staged_best(run_dir, best["step"])
        if keep.is_file():
            os.replace(keep, ckdir / BEST_FILE)
    for path in ckdir.glob("best_*.pt"):
        if path != keep:
            path.unlink(missing_ok=True)


def mark_latest(run_dir: Path, ckpt: Path, keep: int = 3) -> None:
    ckdir = checkpoint_dir(run_dir)
    atomic_write_text(ckdir / "latest", ckpt.name)
    old = sorted(ckdir.glob("step_*.pt"), key=_step_of)[:-keep]
    for path in old:
        if path != ckpt:
            path.unlink(missing_ok=True)
            state_path(path).unlink(missing_ok=True)


def clean_uncommitted(run_dir: Path, committed: Path | None) -> None:
    """Remove what a killed writer left outside its last commit: temp files of atomic writes, and
    checkpoints (with their run states) newer than the committed one, or all if none was."""
    run_dir = Path(run_dir)
    for folder in (run_dir, checkpoint_dir(run_dir)):
        if folder.is_dir():
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
    limit = _step_of(committed) if committed is not None else -1
    for pattern in ("step_*.pt", "step_*.json"):
        for path in checkpoint_dir(run_dir).glob(pattern):
            if _step_of(path) > limit or committed is None:
                path.unlink(missing_ok=True)
    if committed is None:
        (checkpoint_dir(run_dir) / BEST_FILE).unlink(missing_ok=True)
    promote_best(run_dir, committed_state(committed) if committed is not None else None)


def find_runs(paths) -> list[Path]:
    """Every run directory (holding run.json or config.yaml) under the given paths."""
    found = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UsageError(f"path {p} does not exist")
        if (p / "config.yaml").is_file():
            found.append(p)
            continue
        found.extend(sorted(c.parent for c in p.rglob("config.yaml")))
    return found


CHOICES = "best, latest or step_<n>"


def parse_checkpoint_name(text: str) -> str:
    """``best``, ``latest`` or ``step_<n>`` (``<n>`` alone and a ``.pt`` suffix are accepted too)."""
    name = str(text).strip()
    if name.endswith(".pt"):
        name = name[:-3]
    if name.isdigit():
        name = f"step_{name}"
    if name in ("best", "latest"):
        return name
    if name.startswith("step_") and name[5:].isdigit():
        return f"step_{int(name[5:])}"
    raise UsageError(f"--checkpoint '{text}' is not one of {CHOICES}")


def available_checkpoints(run_dir: Path) -> str:
    """What ``--checkpoint`` can name in a run, for error messages."""
    ckdir = checkpoint_dir(run_dir)
    names = [p.stem for p in sorted(ckdir.glob("step_*.pt"), key=_step_of)]
    if (ckdir / BEST_FILE).is_file():
        names.insert(0, "best")
    return ", ".join(["latest", *names]) if names else "none"


def find_checkpoint(run_dir: Path, which: str = "latest") -> Path:
    """The checkpoint file ``--checkpoint which`` names in a run directory (UsageError if it has none)."""
    which = parse_checkpoint_name(which)
    if which == "latest":
        return latest_checkpoint(run_dir)
    if not Path(run_dir).is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if which == "best":
        path = checkpoint_dir(run_dir) / BEST_FILE
        if not path.is_file():
            raise UsageError(f"{run_dir} has no best checkpoint (checkpoints/{BEST_FILE} is written at the first "
                             f"commit after an evaluation; available: {available_checkpoints(run_dir)})")
        return path
    path = checkpoint_dir(run_dir) / f"{which}.pt"
    if not path.is_file():
        raise UsageError(f"{run_dir} has no checkpoint {which} (available: {available_checkpoints(run_dir)})")
    return path


def load_run(run_dir: Path, device: str = "cpu", checkpoint: str = "latest"):
    """(agent, settings) for a checkpoint of a run directory (``latest``, ``best`` or ``step_<n>``).

    Takes no lock: a writer may prune the checkpoint just read from ``latest`` (or replace
    ``best.pt``); then the name resolves to a newer file, so it is read again."""
    from rlkit import registry

    settings = read_config(run_dir)
    cls = registry.load_algo(settings["algo"])
    for attempt in range(3):
        ckpt = find_checkpoint(run_dir, checkpoint)
        try:
            agent = load_agent_checkpoint(cls, ckpt, settings["env"], settings.get("env_kwargs") or {}, device,
                                          algo=settings["algo"])
        except UsageError:
            if attempt < 2 and not ckpt.exists():
                continue
            raise
        return agent, settings
