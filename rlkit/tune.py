"""`rlkit tune`: hyperparameter search with Optuna (docs/tune.md).

One study per (env, algorithm) by default, kept in an Optuna RDB storage (an SQLite file,
``RUNS_ROOT/tune/<env>/<algo>.db``, or any server URL several machines share), so a study stops and
resumes. Each trial is an ordinary run directory, ``RUNS_ROOT/tune/<env>/<algo>/trial_<n>`` (with several
``--seeds``, one per seed: ``trial_<n>/seed_<s>``), trained by ``rlkit.training.train`` with the sampled
hyperparameters as ``--set`` values over the algorithm's yaml entry, so ``rlkit compare`` and
TensorBoard read trials like any run.

The driver (this process) owns the study: it asks Optuna for a trial and samples the search space,
hands ``(trial, sampled values, run dir)`` to one of ``--jobs`` workers (rlkit.workers.WorkerGroup:
in-process for one job, spawn processes or Ray actors for more), and tells Optuna the result. A
worker trains the run and reports every stop-check evaluation to the trial in the shared storage,
where the pruner decides; a pruned run stops at that evaluation (the ``on_eval`` hook returns False).
A trial that raises or diverges is told FAIL and the study goes on; a worker that dies is replaced.
Ctrl-C or SIGTERM stop the workers (each trial's run stops at an update boundary, committed and
marked interrupted), the running trials are told FAIL (user attribute ``interrupted``), and the
study keeps everything finished: the same command continues it.

Objective: with ``--stop-at-return R``, minimise the env steps to the first evaluation with mean
return >= R; a trial that never gets there scores ``budget * (1 + (R - best) / max(|R|, 1))`` (budget:
``--steps``; best: its best evaluation mean), above every solved trial and ordered by how close it
came. ``--objective time``: minimise the training wall seconds to R instead (run.json ``solved_at_s``;
unsolved: the run's ``wall_s`` times the same factor). Without R, maximise the final score on fresh
seeds (run.json ``final_eval.mean_return``). With ``--seeds S1 S2 ...`` a trial trains one run per seed,
``trial_<n>/seed_<s>``, one after another, and its value is the median of the seeds' values; the
seeds report to the pruner in blocks of steps of their own (CarriedMedianPruner).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import yaml

from rlkit import config as configlib
from rlkit import runs
from rlkit.errors import Terminated, UsageError, did_you_mean, first_line

SPACES_FILE = configlib.HYPERPARAMS_DIR / "search_spaces.yaml"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
KINDS = ("float", "int", "categorical", "fixed")
SPEC_KEYS = {"float": {"type", "low", "high", "log", "step", "one_minus"},
             "int": {"type", "low", "high", "log", "step"},
             "categorical": {"type", "choices"}, "fixed": {"type", "value"}}
NOT_SEARCHABLE = ("n_timesteps", "env_kwargs")  # the budget is --steps; the env is not a hyperparameter
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HEARTBEAT_S, GRACE_S = 60, 180  # a trial whose worker was killed is failed by the next run after GRACE_S
ATTR = "rlkit"  # the study's user attribute: what its values mean (checked when it is continued)


# --- the search space ----------------------------------------------------------------------------
@dataclasses.dataclass
class Param:
    key: str  # Config field, or field.subkey
    kind: str  # float | int | categorical | fixed
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    one_minus: bool = False
    choices: list | None = None
    value: Any = None

    @property
    def name(self) -> str:
        """The Optuna parameter's name."""
        return f"one_minus_{self.key}" if self.one_minus else self.key

    def labels(self) -> list:
        """Optuna's choices: the values themselves, or their JSON text where one is a list or mapping."""
        plain = all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices)
        return list(self.choices) if plain else [json.dumps(c) for c in self.choices]

    def distribution(self):
        from optuna import distributions as d

        if self.kind == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.kind == "categorical":
            return d.CategoricalDistribution(self.labels())
        return None

    def edge_values(self) -> list:
        """The values a trial can get at the ends of the range (and every choice): what is checked."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        ends = [self.low, self.high]
        return [1 - v for v in ends] if self.one_minus else ends


def _spec_error(source: str, key: str, what: str) -> UsageError:
    return UsageError(f"search space {source}: key '{key}': {what}")


def _number(source, key, spec, field, integer):
    value = spec.get(field)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, str) and not integer:  # PyYAML reads 1e-5 (no dot) as a string
        try:
            value, ok = float(value), True
        except ValueError:
            pass
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise _spec_error(source, key, f"{field} must be {kind}, got {spec.get(field)!r}")
    return value if integer else float(value)


def _parse_param(source: str, key: str, spec) -> Param:
    if not isinstance(spec, dict) or "type" not in spec:
        return Param(key, "fixed", value=spec)
    kind = spec["type"]
    if kind not in KINDS:
        raise _spec_error(source, key, f"type {kind!r} is not one of {', '.join(KINDS)}")
    extra = sorted(set(spec) - SPEC_KEYS[kind])
    if extra:
        raise _spec_error(source, key, f"{', '.join(map(str, extra))} is not a {kind} setting "
                                       f"(accepted: {', '.join(sorted(SPEC_KEYS[kind]))})")
    if kind == "fixed":
        if "value" not in spec:
            raise _spec_error(source, key, "type fixed needs a value")
        return Param(key, kind, value=spec["value"])
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _spec_error(source, key, "categorical needs a non-empty list of choices")
        texts = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(texts)) != len(texts):
            raise _spec_error(source, key, "a choice is listed twice")
        return Param(key, kind, choices=list(choices))
    integer = kind == "int"
    for field in ("low", "high"):
        if field not in spec:
            raise _spec_error(source, key, f"type {kind} needs low and high")
    low, high = _number(source, key, spec, "low", integer), _number(source, key, spec, "high", integer)
    if not low < high:
        raise _spec_error(source, key, f"low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    one_minus = spec.get("one_minus", False)
    for field, flag in (("log", log), ("one_minus", one_minus)):
        if not isinstance(flag, bool):
            raise _spec_error(source, key, f"{field} must be true or false, got {flag!r}")
    if log and low <= 0:
        raise _spec_error(source, key, f"log needs low > 0, got {low}")
    step = None
    if spec.get("step") is not None:
        step = _number(source, key, spec, "step", integer)
        if step <= 0:
            raise _spec_error(source, key, f"step must be > 0, got {step}")
        if log:
            raise _spec_error(source, key, "step and log do not go together")
    return Param(key, kind, low=low, high=high, log=log, step=step, one_minus=one_minus)


def sets_of(values: dict[str, Any], base: dict) -> dict:
    """The ``--set`` values of a trial: plain keys as they are, ``field.subkey`` merged into (a copy
    of) the base entry's mapping ``field``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        top, dot, sub = key.partition(".")
        if not dot:
            out[key] = value
            continue
        merged = out.setdefault(top, dict(base.get(top) or {}))
        merged[sub] = value
    return out


def load_space(algo: str, config_cls, base: dict, path: Path | None = None) -> list[Param]:
    """The search space of ``algo`` (the default file's entry, or ``path``), checked: every key a
    Config field, every spec well formed, every value at the ends of each range (and every choice)
    accepted by rlkit's config checks, and the entry with every first value a valid Config."""
    source = str(path) if path is not None else str(SPACES_FILE)
    if path is not None:
        data = configlib.read_yaml(Path(path))  # missing or unreadable file, bad YAML: exit 2
        shown = f"--space {path}"
    else:
        data = configlib.read_yaml(SPACES_FILE)
        shown = f"the default search spaces ({SPACES_FILE.name})"
    if not isinstance(data, dict) or not data:
        raise UsageError(f"search space {source} must hold a mapping of key: spec")
    from rlkit import registry

    if algo in data and isinstance(data[algo], dict):
        data = data[algo]
    elif path is None:
        raise UsageError(f"no default search space for {algo} (there are: {', '.join(k for k in data)}); "
                         f"give one with --space FILE.yaml (docs/tune.md)")
    elif all(k in registry.ALGOS for k in data):
        raise UsageError(f"{shown} has no entry for {algo} (it has: {', '.join(data)})")
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{shown}: the entry for {algo} must be a mapping of key: spec")
    types = configlib.field_types(config_cls)
    params = []
    for key, spec in data.items():
        if not isinstance(key, str):
            raise UsageError(f"search space {source}: key {key!r} is not a name")
        top, dot, sub = key.partition(".")
        if top in NOT_SEARCHABLE:
            raise _spec_error(source, key, "is not searched (the budget is --steps; env_kwargs belong to the env)")
        if top not in types:
            raise UsageError(f"search space {source}: unknown {algo} key '{top}'{did_you_mean(top, types)}; "
                             f"accepted: {', '.join(sorted(types))}")
        if dot:
            ok, _ = configlib._accepts(types[top], {})
            if not ok or not sub:
                raise _spec_error(source, key, f"'{top}' is not a mapping: only a mapping's entries take field.subkey")
        params.append(_parse_param(source, key, spec))
    for p in params:  # every value a trial can get, as --set would take it
        for value in p.edge_values():
            _check_values(config_cls, {p.key: value}, base, source)
    _check_values(config_cls, {p.key: p.edge_values()[0] for p in params}, base, source, combined=True)
    return params


def _check_values(config_cls, values: dict, base: dict, source: str, combined: bool = False) -> None:
    sets = sets_of(values, base)
    try:
        configlib.validate(config_cls, sets, f"search space {source}")
        if combined:  # the algorithm's own checks (Config.validate) of one whole configuration
            merged = {**base, **sets}
            merged.pop("env_kwargs", None)
            configlib._build(config_cls, configlib.validate(config_cls, merged, f"search space {source}"))
    except UsageError as exc:
        raise UsageError(f"search space {source}: {exc}" if source not in str(exc) else str(exc)) from None


def sample(trial, space: list[Param]) -> dict[str, Any]:
    """Draw a trial's values from the space: {key: value} (the real values: gamma, not 1 - gamma)."""
    out = {}
    for p in space:
        if p.kind == "fixed":
            out[p.key] = p.value
        elif p.kind == "categorical":
            label = trial.suggest_categorical(p.name, p.labels())
            out[p.key] = p.choices[p.labels().index(label)]
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
            out[p.key] = 1.0 - value if p.one_minus else value
    return out


# --- the storage ---------------------------------------------------------------------------------
def check_storage(url: str, flag: str = "--storage") -> tuple[str, str, Path | None]:
    """(URL with an absolute SQLite path, URL to show (no password), the SQLite file or None). A bad
    URL, an unknown database kind, a missing driver, a server that does not answer, or a file that is
    not an Optuna database are usage errors; nothing is written."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UsageError(f"{flag} '{url}' is not a database URL (e.g. sqlite:///runs/tune/study.db or "
                         f"postgresql://user@host/db)") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise UsageError(f"{flag} {shown}: '{parsed.drivername}' is not a database kind SQLAlchemy knows "
                         f"(sqlite, postgresql, mysql, ...)") from None
    except ImportError as exc:
        raise UsageError(f"{flag} {shown}: its database driver is not installed ({exc.name or exc})") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or db.startswith("file:"):
            raise UsageError(f"{flag} {shown}: an SQLite study needs a file, e.g. sqlite:///runs/tune/study.db")
        path = Path(db).expanduser().absolute()
        _check_sqlite_file(path, flag)
        full = parsed.set(database=str(path)).render_as_string(hide_password=False)
        return full, f"sqlite:///{_rel(path)}", path
    try:
        engine = create_engine(parsed)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ImportError as exc:
        raise UsageError(f"{flag} {shown}: its database driver is not installed ({exc.name or exc})") from None
    except (SQLAlchemyError, OSError) as exc:
        raise UsageError(f"{flag} {shown}: cannot connect ({first_line(exc)})") from None
    return url, shown, None


def _check_sqlite_file(path: Path, flag: str) -> None:
    import sqlite3

    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory, not a database file")
    if not path.exists():
        runs.check_creatable(path.parent, flag, shown=path)
        return
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise UsageError(f"{flag} {path} cannot be read: {exc.strerror or first_line(exc)}") from None
    if not head:
        return  # an empty file: SQLite makes it a database
    if head != b"SQLite format 3\x00":
        raise UsageError(f"{flag} {path} is not an SQLite database")
    try:
        con = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise UsageError(f"{flag} {path} cannot be read as an SQLite database: {first_line(exc)}") from None
    if tables and "studies" not in tables:
        raise UsageError(f"{flag} {path} is an SQLite database but not an Optuna one (no 'studies' table)")
    if not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path} is not writable")


def make_storage(url: str):
    """Optuna's RDB storage with heartbeats (a killed worker's trial is failed later, not left running)
    and SQLite waiting for a busy database instead of failing (several processes share the file)."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is an experimental argument
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)


# --- pruning -------------------------------------------------------------------------------------
def _pruner_base():
    from optuna.pruners import BasePruner

    return BasePruner


class CarriedMedianPruner(_pruner_base()):
    """Optuna's median rule with the other trials' values carried forward: a trial is pruned at step s
    (past ``n_warmup_steps``, once ``n_startup_trials`` trials are complete) when its best value so far
    is worse than the median, over the complete trials, of each one's last value at a step <= s.

    Optuna's MedianPruner compares only trials that reported at exactly step s. Trials that solve stop
    early and report nothing later, so a time-to-solve study would compare a slow trial only with the
    other slow ones, and never prune; carried forward, a solved trial keeps its value (its solving step).
    Steps are evaluation milestones (multiples of --eval-every), the same for every configuration.

    Several seeds per trial (``--seeds``): a trial trains its seeds one after another, and the k-th seed
    (k from 0, in the order given) reports milestone m at step ``k * seed_stride + m``, where
    ``seed_stride`` is the budget rounded up to a multiple of --eval-every, plus --eval-every
    (TuneSpec.seed_stride), so the seeds' steps never overlap. Every comparison stays within one seed's
    block of steps ``[k * seed_stride, s]``: the trial's best value so far on seed k against the complete
    trials' values on their seed k, carried forward to milestone m; the warm-up counts from the start of
    each seed. ``seed_stride`` None: one block (one seed)."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, seed_stride: int | None = None):
        self.n_startup_trials, self.n_warmup_steps = int(n_startup_trials), int(n_warmup_steps)
        self.seed_stride = int(seed_stride) if seed_stride else None

    def prune(self, study, trial) -> bool:
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        step = trial.last_step
        if step is None:
            return False
        start = step - step % self.seed_stride if self.seed_stride else 0  # this seed's block of steps
        if step - start < self.n_warmup_steps:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup_trials:
            return False
        minimise = study.direction == StudyDirection.MINIMIZE
        if any(not math.isfinite(v) for v in trial.intermediate_values.values()):
            return True
        mine = [v for s, v in trial.intermediate_values.items() if start <= s <= step]
        if not mine:
            return False
        best = min(mine) if minimise else max(mine)
        others = []
        for t in done:
            before = [s for s in t.intermediate_values if start <= s <= step]
            if before:
                value = t.intermediate_values[max(before)]
                if math.isfinite(value):
                    others.append(value)
        if not others:
            return False
        median = statistics.median(others)
        return best > median if minimise else best < median


# --- the objective ---------------------------------------------------------------------------------
def unsolved_score(steps: float, stop_at_return: float, best: float) -> float:
    """A trial that never reached R: ``steps`` (the budget, or the steps it trained where its last
    rollout ran past the budget) times 1 + its best evaluation's shortfall from R over max(|R|, 1). So
    it scores above every trial that solved within the budget, and closer to R is better. With
    ``--objective time`` the same rule applies to the run's wall seconds in place of ``steps``."""
    return float(steps) * (1.0 + max(0.0, stop_at_return - best) / max(abs(stop_at_return), 1.0))


OBJECTIVES = ("steps", "time")


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """What every worker needs (plain data: it travels to spawn processes and Ray actors)."""

    algo: str
    env: str
    env_packages: tuple
    storage: str
    study: str
    folder: str
    steps: int
    seeds: tuple  # every trial trains each of them; the value is the median over them
    eval_every: int
    eval_episodes: int
    stop_at_return: float | None
    final_eval_episodes: int
    pruner: str
    startup_trials: int
    warmup_steps: int
    train_fn: str = "rlkit.training:train"  # "module:function"; tests put a stand-in here
    objective: str | None = None  # with stop_at_return: "steps" (default) or "time"; None without it
    preset: str | None = None  # trials start from the yaml entry <env>@<preset> (`train --preset`)

    @property
    def seed(self) -> int:
        """The first seed: the sampler's seed comes from it."""
        return int(self.seeds[0])

    @property
    def by_time(self) -> bool:
        return self.stop_at_return is not None and self.objective == "time"

    @property
    def seed_stride(self) -> int:
        """Steps between the reports of consecutive seeds of a trial: the budget rounded up to a multiple
        of --eval-every, plus --eval-every (CarriedMedianPruner)."""
        return -(-self.steps // self.eval_every) * self.eval_every + self.eval_every

    def milestone(self, num_timesteps: int) -> int:
        """The evaluation milestone of a step (at most the budget rounded up: a last rollout past the budget
        does not reach the next seed's block)."""
        return min(int(num_timesteps) // self.eval_every * self.eval_every, self.seed_stride - self.eval_every)

    def report_step(self, seed_index: int, num_timesteps: int) -> int:
        """The step an evaluation of the trial's ``seed_index``-th seed is reported at."""
        return seed_index * self.seed_stride + self.milestone(num_timesteps)

    def score(self, info: dict) -> float | None:
        """One seed's value from its run.json (None: there is none); the trial's is the median over seeds."""
        if self.stop_at_return is not None:
            key = "solved_at_s" if self.by_time else "solved_at_step"
            if info.get("solved_at_step") is not None and info.get(key) is not None:
                return float(info[key])
            best = (info.get("best") or {}).get("mean_return")
            if self.by_time:
                wall = info.get("wall_s")
                return None if best is None or wall is None else unsolved_score(float(wall), self.stop_at_return,
                                                                                  float(best))
            steps = max(self.steps, int(info.get("steps") or 0))
            return None if best is None else unsolved_score(steps, self.stop_at_return, float(best))
        final = (info.get("final_eval") or {}).get("mean_return")
        if final is None and info.get("evals"):
            final = info["evals"][-1][2]
        return None if final is None else float(final)


def make_pruner(spec: TuneSpec):
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return CarriedMedianPruner(spec.startup_trials, spec.warmup_steps, spec.seed_stride)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Heartbeats are recorded by rlkit's workers themselves (TuneWorker), not by Study.optimize.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def _train_command(spec: TuneSpec, sets: dict, run_dir: Path, seed: int) -> list[str]:
    """The `rlkit train` command that repeats one seed of a trial (recorded in its config.yaml)."""
    cmd = ["train", "--algo", spec.algo, "--env", spec.env, "--steps", str(spec.steps), "--seed", str(seed),
           "--eval-every", str(spec.eval_every), "--eval-episodes", str(spec.eval_episodes),
           "--final-eval-episodes", str(spec.final_eval_episodes), "--run-dir", str(run_dir)]
    if spec.stop_at_return is not None:
        cmd += ["--stop-at-return", f"{spec.stop_at_return:g}"]
    if spec.preset is not None:
        cmd += ["--preset", spec.preset]
    for package in spec.env_packages:
        cmd += ["--env-package", package]
    if sets:
        cmd += ["--set", *[f"{k}={json.dumps(v)}" for k, v in sets.items()]]
    return cmd


class TuneWorker:
    """Runs trials (rlkit.workers.WorkerGroup worker: ``TuneWorker(rank, spec)``). ``run_trial`` trains
    one run, reporting each evaluation to the trial in the shared storage, and returns what the driver
    tells Optuna; it never raises for a trial's own failure."""

    def __init__(self, rank: int, spec: TuneSpec):
        import multiprocessing

        self.rank, self.spec = rank, spec
        self._study = None
        self._spawned = multiprocessing.parent_process() is not None and threading_main()
        if self._spawned:
            # A spawn process of the local backend: the driver stops it with SIGTERM (rlkit.workers closes
            # busy workers so); the trial's run then stops at an update boundary, committed, as on Ctrl-C.
            signal.signal(signal.SIGTERM, _raise_terminated)

    @property
    def study(self):
        if self._study is None:
            import optuna

            _quiet_optuna()
            self._study = optuna.load_study(study_name=self.spec.study, storage=make_storage(self.spec.storage),
                                            sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(self.spec))
        return self._study

    def run_trial(self, trial_id: int, number: int, sets: dict, run_dir: str) -> dict:
        """Train the trial's seeds one after another (one seed: ``run_dir`` is its run directory; several:
        ``run_dir/seed_<s>`` each), reporting every evaluation at ``spec.report_step``. The value is the
        median of the seeds' values. A seed pruned, failed or diverged ends the trial there: the seeds
        after it are not trained."""
        import optuna

        spec, study = self.spec, self.study
        trial = optuna.trial.Trial(study, trial_id)
        storage = study._storage
        attrs: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "worker": self.rank}
        beat_at = [time.monotonic()]
        t0 = time.perf_counter()

        def beat():
            if time.monotonic() - beat_at[0] >= HEARTBEAT_S / 2:
                beat_at[0] = time.monotonic()
                with contextlib.suppress(Exception):  # a missed heartbeat is not worth a trial
                    storage.record_heartbeat(trial_id)

        with contextlib.suppress(Exception):
            storage.record_heartbeat(trial_id)
        trial_dir = Path(run_dir)
        several = len(spec.seeds) > 1
        per_seed: dict[str, dict] = {}  # str(seed): what its run.json says, and its value
        values = []
        for index, seed in enumerate(spec.seeds):
            path = trial_dir / f"seed_{seed}" if several else trial_dir
            outcome = self._train_seed(trial, index, int(seed), sets, path, number, beat)
            if outcome.get("info") is not None:
                per_seed[str(seed)] = outcome["info"]
            if outcome["state"] == "complete":
                values.append(outcome["value"])
                continue
            attrs.update(_seed_attrs(per_seed, several))
            attrs.update(outcome.get("attrs") or {})
            attrs["trial_s"] = round(time.perf_counter() - t0, 3)
            out = {k: v for k, v in outcome.items() if k not in ("info", "attrs", "value")}
            if several:
                out["seed"] = int(seed)
                if outcome["state"] == "pruned":
                    attrs["pruned_seed"] = int(seed)
            return {**out, "attrs": attrs}
        attrs.update(_seed_attrs(per_seed, several))
        attrs["trial_s"] = round(time.perf_counter() - t0, 3)
        return {"state": "complete", "value": float(statistics.median(values)), "attrs": attrs}

    def _train_seed(self, trial, index: int, seed: int, sets: dict, path: Path, number: int, beat) -> dict:
        """Train one seed of a trial: {"state": complete|pruned|fail, "value", "reason", "info" (its
        run.json's numbers), "attrs", "step", "mean_return"}."""
        from rlkit import training

        spec = self.spec
        state: dict[str, Any] = {"best": -math.inf, "pruned": None, "diverged": None}

        def on_step(num_timesteps, agent):
            beat()
            return True

        def on_eval(num_timesteps, result, agent):
            mean = float(result["mean_return"])
            if not math.isfinite(mean):
                state["diverged"] = f"diverged: evaluation mean return {mean} at step {num_timesteps}" + (
                    f" (seed {seed})" if len(spec.seeds) > 1 else "")
                return False
            state["best"] = max(state["best"], mean)
            n = max(int(num_timesteps), 1)
            if spec.stop_at_return is not None:
                solved = mean >= spec.stop_at_return
                if spec.by_time:  # wall seconds of this seed so far; unsolved: projected to the budget, penalised
                    elapsed = time.perf_counter() - state["t0"]
                    value = elapsed if solved else unsolved_score(elapsed * max(spec.steps, n) / n,
                                                                  spec.stop_at_return, state["best"])
                else:
                    value = float(num_timesteps) if solved else unsolved_score(max(spec.steps, n),
                                                                               spec.stop_at_return, state["best"])
            else:
                solved, value = False, mean
            trial.report(value, spec.report_step(index, num_timesteps))
            beat()
            if not solved and trial.should_prune():
                state["pruned"] = {"step": int(num_timesteps), "mean_return": round(mean, 4)}
                return False
            return True

        train = _resolve(spec.train_fn)
        state["t0"] = time.perf_counter()
        try:
            train(spec.algo, spec.env, steps=spec.steps, seed=seed, sets=dict(sets), run_dir=path,
                  eval_every=spec.eval_every, eval_episodes=spec.eval_episodes, stop_at_return=spec.stop_at_return,
                  final_eval_episodes=spec.final_eval_episodes, progress=False, quiet=True,
                  command=_train_command(spec, sets, path, seed), env_packages=list(spec.env_packages) or None,
                  on_step=on_step, on_eval=on_eval, confirm_stopped=False,
                  **({"preset": spec.preset} if spec.preset else {}))
        except Terminated:
            if self._spawned:  # stopped by the driver: the run is committed; end without a traceback
                raise SystemExit(143) from None
            raise
        except UsageError as exc:  # a combination of values the algorithm refuses: nothing was written
            return {"state": "fail", "reason": f"invalid configuration: {first_line(exc)}"}
        except Exception as exc:  # noqa: BLE001  the trial fails, the study goes on
            crash = {"crash_log": str(_write_crash_log(path, number, exc))}
            reason = state["diverged"] or f"{type(exc).__name__}: {first_line(exc)}"  # NaN weights raise later
            return {"state": "fail", "reason": reason, "attrs": crash}
        finally:
            if sys.modules.get("rlkit.training") is training:
                training.current_run_dir = None  # a later error in this process is not this run's
        run_json = runs.read_run_json(path) if (path / "run.json").is_file() else {}
        info = {"run_dir": str(path)}
        for key, value in (("wall_s", run_json.get("wall_s")), ("steps", run_json.get("steps")),
                           ("status", run_json.get("status")),
                           ("best_eval_return", (run_json.get("best") or {}).get("mean_return")),
                           ("final_return", (run_json.get("final_eval") or {}).get("mean_return")),
                           ("solved_at_step", run_json.get("solved_at_step")),
                           ("solved_at_s", run_json.get("solved_at_s"))):
            if value is not None:
                info[key] = value
        if state["diverged"]:
            return {"state": "fail", "reason": state["diverged"], "info": info}
        if state["pruned"]:
            return {"state": "pruned", "info": info, "attrs": {"pruned_at_step": state["pruned"]["step"]},
                    **state["pruned"]}
        value = spec.score(run_json)
        if value is None or not math.isfinite(value):
            return {"state": "fail", "reason": f"diverged: the run's score is {value}" + (
                f" (seed {seed})" if len(spec.seeds) > 1 else ""), "info": info}
        info["value"] = value
        return {"state": "complete", "value": value, "info": info}


SEED_KEYS = ("value", "steps", "wall_s", "solved_at_step", "solved_at_s", "best_eval_return", "final_return",
             "status", "run_dir")


def _seed_attrs(per_seed: dict[str, dict], several: bool) -> dict:
    """A trial's user attributes from its seeds' numbers: ``seed_<key>`` {seed: value} for each (None where
    a seed has none: unsolved, or not scored), and the medians over the seeds in the plain names (the
    value itself with one seed): ``steps``, ``wall_s``, ``best_eval_return``, ``final_return``, and
    ``solved_at_step`` / ``solved_at_s`` where the median seed solved (an unsolved seed counts as never)."""
    out: dict[str, Any] = {}
    if not per_seed:
        return out
    for key in SEED_KEYS:
        if key == "run_dir" and not several:
            continue
        out[f"seed_{key if key != 'value' else 'values'}"] = {s: d.get(key) for s, d in per_seed.items()}
    for key in ("steps", "wall_s", "best_eval_return", "final_return"):
        xs = [d[key] for d in per_seed.values() if d.get(key) is not None]
        if len(xs) == len(per_seed):
            out[key] = _median(xs)
    for key in ("solved_at_step", "solved_at_s"):
        m = _median([math.inf if d.get(key) is None else d[key] for d in per_seed.values()])
        if math.isfinite(m):
            out[key] = m
    statuses = {d.get("status") for d in per_seed.values()} - {None}
    if statuses:
        out["status"] = statuses.pop() if len(statuses) == 1 else "mixed"
    return out


def _median(xs: list):
    """The median; an int where the numbers are ints and it is whole (steps), else rounded to 4 decimals."""
    m = statistics.median(xs)
    if not math.isfinite(m):
        return m
    if all(isinstance(x, int) for x in xs if math.isfinite(x)) and float(m).is_integer():
        return int(m)
    return round(float(m), 4) if len(xs) > 1 else m


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum, frame):
    raise Terminated()


def _resolve(dotted: str):
    import importlib

    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _write_crash_log(run_dir: Path, number: int, exc: BaseException) -> Path:
    text = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} rlkit tune, trial {number}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if run_dir.is_dir():
        path = run_dir / "crash.log"
    elif run_dir.parent.is_dir():
        path = run_dir.with_name(f"{run_dir.name}.crash.log")
    else:  # a seed of a trial whose folder was removed with its first seed's half-made run
        path = run_dir.parent.with_name(f"{run_dir.parent.name}.crash.log")
    with contextlib.suppress(OSError):
        with open(path, "a") as f:
            f.write(text)
    return path


# --- the driver ----------------------------------------------------------------------------------
def _study_settings(spec: TuneSpec) -> dict:
    """What a study's values mean: continuing it with other settings would mix incomparable values.
    (``seed``, the first seed, is kept for studies made before ``--seeds``; ``seeds`` is what is checked.)"""
    return {"algo": spec.algo, "env": spec.env, "steps": spec.steps, "seed": spec.seed,
            "seeds": [int(s) for s in spec.seeds], "stop_at_return": spec.stop_at_return,
            "objective": spec.objective, "preset": spec.preset, "eval_every": spec.eval_every,
            "eval_episodes": spec.eval_episodes, "final_eval_episodes": spec.final_eval_episodes}


FLAGS = {"algo": "--algo", "env": "--env", "steps": "--steps", "seeds": "--seeds",
         "stop_at_return": "--stop-at-return", "objective": "--objective", "preset": "--preset",
         "eval_every": "--eval-every",
         "eval_episodes": "--eval-episodes", "final_eval_episodes": "--final-eval-episodes"}


def _recorded_settings(recorded: dict) -> dict:
    """A study's recorded settings, those of a study made before --seeds and --objective completed: its
    one seed, and the steps objective where it has --stop-at-return."""
    recorded = dict(recorded)
    if "seeds" not in recorded and "seed" in recorded:
        recorded["seeds"] = [recorded["seed"]]
    if "objective" not in recorded:
        recorded["objective"] = "steps" if recorded.get("stop_at_return") is not None else None
    return recorded


def _check_existing_study(url: str, shown: str, sqlite: Path | None, spec: TuneSpec, space: list[Param]) -> bool:
    """True if the study exists (and may be continued with these settings and this space)."""
    if sqlite is not None and (not sqlite.exists() or sqlite.stat().st_size == 0):
        return False
    import optuna

    storage = make_storage(url)
    try:
        try:
            study_id = storage.get_study_id_from_name(spec.study)
        except KeyError:
            return False
        recorded = storage.get_study_user_attrs(study_id).get(ATTR)
        if not isinstance(recorded, dict):
            raise UsageError(f"study '{spec.study}' in {shown} was not made by rlkit tune: give another --study")
        recorded, mine = _recorded_settings(recorded), _study_settings(spec)
        for key, flag in FLAGS.items():
            if recorded.get(key) != mine[key]:
                raise UsageError(f"study '{spec.study}' in {shown} measures {flag} {_shown(recorded.get(key))}, not "
                                 f"{_shown(mine[key])}: continue it with the same settings, or start another with "
                                 f"--study NAME")
        seen = {}
        for t in storage.get_all_trials(study_id, deepcopy=False):
            seen.update(t.distributions)
        for p in space:
            if p.kind != "fixed" and p.name in seen:
                try:
                    optuna.distributions.check_distribution_compatibility(seen[p.name], p.distribution())
                except ValueError as exc:
                    raise UsageError(f"study '{spec.study}' in {shown} sampled '{p.name}' from another range "
                                     f"({first_line(exc)}); keep its space, or start another with --study NAME"
                                     ) from None
        return True
    finally:
        with contextlib.suppress(Exception):
            storage.engine.dispose()


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    return "(none)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _check_seeds(seed, seeds, max_seed: int) -> list[int]:
    """The trial seeds: ``seeds``, or [``seed``] (default [0]); each an integer in [0, max_seed], none
    twice, at least one."""
    if seeds is not None and seed is not None:
        raise UsageError("--seed and --seeds do not go together (--seed S is --seeds S)")
    flag = "--seeds" if seeds is not None else "--seed"
    given = list(seeds) if seeds is not None else [0 if seed is None else seed]
    if not given:
        raise UsageError("--seeds needs at least one seed")
    for s in given:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= max_seed:
            raise UsageError(f"{flag} must be {'integers' if flag == '--seeds' else 'an integer'} in "
                             f"[0, {max_seed}], got {s}")
    twice = sorted({s for s in given if given.count(s) > 1})
    if twice:
        raise UsageError(f"--seeds {' '.join(map(str, given))}: seed {', '.join(map(str, twice))} given more than "
                         f"once (a repeated seed repeats the same run)")
    return [int(s) for s in given]


def tune(algo: str, env: str, trials: int, *, timeout: float | None = None, jobs: int = 1, backend: str = "local",
         ray_address: str | None = None, runs_root: Path | str = runs.DEFAULT_ROOT, storage: str | None = None,
         study: str | None = None, sampler: str = "tpe", pruner: str = "median", space: Path | str | None = None,
         seed: int | None = None, seeds: list[int] | None = None, steps: int | None = None,
         stop_at_return: float | None = None, objective: str | None = None, eval_every: int = 10_000,
         eval_episodes: int = 10, final_eval_episodes: int | None = None, startup_trials: int = 5,
         warmup_steps: int | None = None, env_packages: list[str] | None = None, command: list[str] | None = None,
         train_fn: str = "rlkit.training:train", preset: str | None = None, out=None) -> dict:
    """Run ``trials`` more trials of the study (created, or continued), then write best.yaml, the charts
    and trials.csv and print the summary. Everything is checked before anything is written. ``seeds``:
    every trial trains each (its value the median over them); ``seed`` S is ``seeds`` [S] (default 0).
    ``objective`` (with ``stop_at_return``): "steps" (default) or "time", the training wall seconds to R.
    Returns {"study", "folder", "storage", "counts", "best"}."""
    from rlkit import plugins, registry
    from rlkit.training import MAX_SEED, check_env_for

    out = out or sys.stdout
    # --- checks: nothing is written before all of them pass ---------------------------------------
    registry.check_algo(algo)
    for name, value, low in (("--trials", trials, 1), ("--jobs", jobs, 1), ("--eval-every", eval_every, 1),
                             ("--eval-episodes", eval_episodes, 1), ("--startup-trials", startup_trials, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UsageError(f"--steps must be an integer >= 1, got {steps}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a number of seconds > 0, got {timeout}")
    seeds = _check_seeds(seed, seeds, MAX_SEED)
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler '{sampler}' is not one of {', '.join(SAMPLERS)}{did_you_mean(sampler, SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"--pruner '{pruner}' is not one of {', '.join(PRUNERS)}{did_you_mean(pruner, PRUNERS)}")
    if backend not in ("local", "ray"):
        raise UsageError(f"--backend '{backend}' is not one of local, ray")
    if ray_address is not None and backend != "ray":
        raise UsageError("--ray-address goes with --backend ray")
    if stop_at_return is not None and not math.isfinite(float(stop_at_return)):
        raise UsageError(f"--stop-at-return must be a finite number, got {stop_at_return}")
    if objective is not None:
        if objective not in OBJECTIVES:
            raise UsageError(f"--objective '{objective}' is not one of {', '.join(OBJECTIVES)}"
                             f"{did_you_mean(objective, OBJECTIVES)}")
        if stop_at_return is None:
            raise UsageError(f"--objective {objective} measures the way to --stop-at-return R: give R too "
                             f"(without it the objective is the final score)")
    objective = (objective or "steps") if stop_at_return is not None else None
    env_id, packages = plugins.resolve_env(env, env_packages)
    if study is not None and not STUDY_NAME.match(study):
        raise UsageError(f"--study '{study}' must be letters, digits, '.', '_' or '-' (it names a folder), "
                         f"at most 100 characters")
    cls = registry.load_algo(algo)
    cfg, env_kwargs = configlib.resolve(cls.Config, algo, env_id, None, {}, preset=preset)
    base = configlib.yaml_entry(algo, env_id, preset=preset)
    check_env_for(cls, algo, env_id, env_kwargs)
    params = load_space(algo, cls.Config, base, Path(space) if space is not None else None)
    budget = int(steps if steps is not None else getattr(cfg, "n_timesteps", 0) or 100_000)
    if final_eval_episodes is None:
        final_eval_episodes = 0 if stop_at_return is not None else 100
    if not isinstance(final_eval_episodes, int) or final_eval_episodes < 0:
        raise UsageError(f"--final-eval-episodes must be an integer >= 0, got {final_eval_episodes}")
    root = Path(runs_root)
    runs.check_creatable(root, "--runs-root")
    env_dir = root / "tune" / runs.env_dirname(env_id)
    name = algo if preset is None else f"{algo}@{preset}"  # a preset's study is a study of its own
    folder = (env_dir / (study or name)).absolute()
    runs.check_creatable(folder, "--runs-root", shown=root)
    study_name = study or f"{name}-{runs.env_dirname(env_id)}"
    url, shown, sqlite = check_storage(storage or f"sqlite:///{(env_dir / f'{name}.db').absolute()}")
    spec = TuneSpec(algo=algo, env=env_id, env_packages=tuple(packages), storage=url, study=study_name,
                    folder=str(folder), steps=budget, seeds=tuple(seeds), eval_every=int(eval_every),
                    eval_episodes=int(eval_episodes),
                    stop_at_return=None if stop_at_return is None else float(stop_at_return),
                    final_eval_episodes=int(final_eval_episodes), pruner=pruner, startup_trials=int(startup_trials),
                    warmup_steps=int(budget // 3 if warmup_steps is None else warmup_steps), train_fn=train_fn,
                    objective=objective, preset=preset)
    existed = _check_existing_study(url, shown, sqlite, spec, params)

    # --- the workers first (a Ray address that does not answer is still a usage error), then the files
    import optuna

    from rlkit.workers import WorkerGroup

    _quiet_optuna()
    group = WorkerGroup(TuneWorker, args=(spec,), n_workers=jobs, backend=backend, ray_address=ray_address,
                        in_process=True, max_restarts=0)
    try:
        runs.make_dirs(folder, "--runs-root", shown=root)
        if sqlite is not None:
            runs.make_dirs(sqlite.parent, "--storage", shown=sqlite)
        rdb = make_storage(url)
        n_before = 0
        if existed:
            n_before = len(rdb.get_all_trials(rdb.get_study_id_from_name(study_name), deepcopy=False))
        direction = "minimize" if spec.stop_at_return is not None else "maximize"
        sampler_seed = (spec.seed * 1_000_003 + n_before) % 2**32  # a continued study draws new values
        if sampler == "tpe":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # multivariate is experimental
                the_sampler = optuna.samplers.TPESampler(n_startup_trials=max(1, startup_trials), seed=sampler_seed,
                                                         multivariate=True, constant_liar=True)
        else:
            the_sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
        the_study = optuna.create_study(storage=rdb, study_name=study_name, direction=direction,
                                        sampler=the_sampler, pruner=make_pruner(spec), load_if_exists=True)
        if not existed:
            the_study.set_user_attr(ATTR, _study_settings(spec))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(the_study)  # trials of a killed run: failed after GRACE_S
        print(f"study {study_name} ({'continued, ' + str(n_before) + ' trials so far' if existed else 'new'}) in "
              f"{shown}; {trials} trial{'s' if trials != 1 else ''} of {algo} on {env_id}, {jobs} at a time "
              f"({backend}); runs in {_rel(folder)}", file=out, flush=True)
        print(f"objective: {_objective_text(spec)}", file=out, flush=True)
        mine = _drive(group, the_study, spec, params, base, trials, timeout, out, command)
    finally:
        group.close()
    return _finish(the_study, spec, params, shown, folder, mine, out)


def _objective_text(spec: TuneSpec) -> str:
    seeds = (f"; the median over seeds {_shown(list(spec.seeds))}, each a run of its own" if len(spec.seeds) > 1
             else "")
    if spec.by_time:
        r = spec.stop_at_return
        return (f"minimise training wall seconds to an evaluation mean return >= {r:g} (run.json solved_at_s; "
                f"every {spec.eval_every} steps, {spec.eval_episodes} episodes); unsolved in {spec.steps}: the run's "
                f"wall_s * (1 + (R - best) / {max(abs(r), 1.0):g}){seeds}")
    if spec.stop_at_return is not None:
        r = spec.stop_at_return
        return (f"minimise env steps to an evaluation mean return >= {r:g} (every {spec.eval_every} steps, "
                f"{spec.eval_episodes} episodes); unsolved in {spec.steps}: {spec.steps} * (1 + (R - best) / "
                f"{max(abs(r), 1.0):g}){seeds}")
    return (f"maximise the final mean return over {spec.final_eval_episodes} fresh episodes after {spec.steps} "
            f"steps{seeds}" if spec.final_eval_episodes else
            f"maximise the last evaluation's mean return ({spec.eval_episodes} episodes) after {spec.steps} "
            f"steps{seeds}")


def _drive(group, study, spec: TuneSpec, params: list[Param], base: dict, trials: int, timeout: float | None,
           out, command: list[str] | None) -> list[int]:
    """Keep every worker busy until ``trials`` trials have run (or ``timeout`` seconds have passed:
    no new trial starts then). Returns the numbers of this run's trials."""
    from optuna.trial import TrialState

    from rlkit.workers import WorkerError

    deadline = None if timeout is None else time.monotonic() + float(timeout)
    folder = Path(spec.folder)
    free, running, mine = list(range(group.n_workers)), {}, []
    started = lost = 0
    try:
        while True:
            while free and started < trials and (deadline is None or time.monotonic() < deadline):
                rank = free.pop(0)
                trial = running[rank] = study.ask()
                values = sample(trial, params)
                sets = sets_of(values, base)
                run_dir = _trial_dir(folder, trial.number)
                config = {**base, **sets, "n_timesteps": spec.steps}
                for key, value in (("run_dir", str(run_dir)), ("values", values), ("config", config)):
                    trial.set_user_attr(key, value)
                with contextlib.suppress(Exception):
                    study._storage.record_heartbeat(trial._trial_id)
                mine.append(trial.number)
                started += 1
                group.start(rank, "run_trial", trial._trial_id, trial.number, sets, str(run_dir))
            if not running:
                return mine
            try:
                done = group.next_done()
            except WorkerError as err:  # the worker died (or broke outside a trial): the trial fails
                rank = getattr(err, "rank", None)
                _tell(study, running[rank], {"state": "fail", "reason": first_line(err), "attrs": {}}, out,
                      spec.by_time)
                running.pop(rank)
                if group.backend == "ray":  # an actor Ray could not keep alive (max_restarts 0: no retried trial)
                    lost += 1
                    if lost == group.n_workers and started < trials:
                        print(f"every Ray worker was lost: {trials - started} trials not started", file=out)
                        return mine
                    continue
                group.restart(rank)  # a fresh process for the next trial
                free.append(rank)
                continue
            rank, result = done
            _tell(study, running[rank], result, out, spec.by_time)  # a Ctrl-C meanwhile: the except below tells it
            running.pop(rank)
            free.append(rank)
    except BaseException as exc:  # Ctrl-C, SIGTERM, an error of the driver: stop the workers, fail their trials
        group.close()
        for trial in running.values():
            with contextlib.suppress(Exception):
                if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                    trial.set_user_attr("interrupted", True)
                    trial.set_user_attr("fail_reason", "interrupted" if isinstance(exc, KeyboardInterrupt)
                                        else f"the tune driver stopped: {type(exc).__name__}")
                    study.tell(trial, state=TrialState.FAIL)
        if isinstance(exc, KeyboardInterrupt):
            from rlkit import training

            training.current_run_dir = None  # the hint below, not `train --resume` of one trial
            n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
                again = f": {shlex.join(['rlkit', *command])}" if command else ""
                print(f"study {study.study_name} keeps its {n} finished trials; the same command continues it"
                      f"{again}", file=out, flush=True)
        raise


def _trial_dir(folder: Path, number: int) -> Path:
    path, i = folder / f"trial_{number:04d}", 1
    while path.exists():  # left by an earlier study of the same name (its database deleted)
        path = folder / f"trial_{number:04d}-{i}"
        i += 1
    return path


def _tell(study, trial, result: dict, out, time_objective: bool = False) -> None:
    from optuna.trial import TrialState

    attrs = dict(result.get("attrs") or {})
    if result["state"] == "fail":
        attrs["fail_reason"] = result["reason"]
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    run = _rel(Path(trial.user_attrs.get("run_dir", "")))
    on_seed = f" on seed {result['seed']}" if result.get("seed") is not None else ""
    if result["state"] == "complete":
        study.tell(trial, result["value"])
        what = _value_text(result["value"], attrs, study.direction.name == "MINIMIZE",
                           time_objective=time_objective)
        line = f"trial {trial.number}: {what}{_per_seed_text(attrs, ' [median; {}]')}  {run}"
    elif result["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        line = (f"trial {trial.number}: pruned at step {result.get('step')}{on_seed} "
                f"(evaluation {result.get('mean_return')})  {run}")
    else:
        study.tell(trial, state=TrialState.FAIL)
        where = f" (traceback in {_rel(Path(attrs['crash_log']))})" if attrs.get("crash_log") else ""
        reason = result["reason"]
        line = f"trial {trial.number}: failed: {reason}{on_seed if '(seed ' not in reason else ''}{where}"
    print(line, file=out, flush=True)


def _value_text(value: float, a: dict, minimise: bool, time_objective: bool) -> str:
    """A complete trial's value in words (from its median attributes)."""
    if not minimise:
        return f"final return {value:.2f}"
    if time_objective:
        return (f"solved in {_fmt(a.get('solved_at_s'))} s (step {_fmt(a.get('solved_at_step'))})"
                if a.get("solved_at_s") is not None else
                f"not solved, best evaluation {_fmt(a.get('best_eval_return'))}: score {value:.4g} s")
    return (f"solved at step {_fmt(a['solved_at_step'])} ({_fmt(a.get('solved_at_s'))} s)"
            if a.get("solved_at_step") is not None else
            f"not solved, best evaluation {_fmt(a.get('best_eval_return'))}: score {value:.0f}")


def _per_seed_text(a: dict, template: str = "{}") -> str:
    """``seeds 0 1 2: 300 100 6650``, the seeds' values of a trial of several seeds ('' for one seed)."""
    values = a.get("seed_values") or {}
    if len(values) < 2:
        return ""
    return template.format(f"seeds {' '.join(values)}: {' '.join(_num(v) for v in values.values())}")


def _num(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:.4g}"


# --- results ---------------------------------------------------------------------------------------
def _finish(study, spec: TuneSpec, params: list[Param], shown: str, folder: Path, mine: list[int], out) -> dict:
    from optuna.trial import TrialState

    all_trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == getattr(TrialState, s.upper()) for t in all_trials)
              for s in ("complete", "pruned", "fail", "running")}
    ours = [t for t in all_trials if t.number in set(mine)]
    print(f"\nstudy {study.study_name}: {len(all_trials)} trial{'s' if len(all_trials) != 1 else ''} "
          f"({len(ours)} in this run): {counts['complete']} "
          f"complete, {counts['pruned']} pruned, {counts['fail']} failed"
          + (f", {counts['running']} running" if counts["running"] else ""), file=out)
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best = study.best_trial
        print(_best_text(best, spec), file=out)
        print(_table(complete, study, spec), file=out)
        best_yaml = folder / "best.yaml"
        _write_best_yaml(best_yaml, best, study, spec, shown)
        print(f"wrote {_rel(best_yaml)}: {shlex.join(_reproduce(spec, best_yaml))}", file=out)
    else:
        print("no complete trial yet: no best.yaml", file=out)
    written, notes = _write_charts(study, folder, spec)
    _write_csv(folder / "trials.csv", all_trials, params)
    written.append(folder / "trials.csv")
    print(f"wrote {', '.join(_rel(p) for p in written)}", file=out)
    for note in notes:
        print(note, file=out)
    out.flush()
    if ours and all(t.state == TrialState.FAIL for t in ours):
        reason = ours[0].user_attrs.get("fail_reason", "")
        raise TrialsFailed(f"all {len(ours)} trials of this run failed; the first: {reason}")
    return {"study": study.study_name, "folder": folder, "storage": shown, "counts": counts,
            "best": None if best is None else best.number, "trials": [t.number for t in ours]}


class TrialsFailed(Exception):
    """Every trial of a `rlkit tune` run failed (exit 1 with one line: the study itself is fine)."""


def _best_text(best, spec: TuneSpec) -> str:
    a = best.user_attrs
    if spec.by_time:
        head = (f"best: trial {best.number}, solved in {_fmt(a.get('solved_at_s'))} s "
                f"(step {_fmt(a.get('solved_at_step'))})" if a.get("solved_at_s") is not None else
                f"best: trial {best.number}, not solved (best evaluation {_fmt(a.get('best_eval_return'))}), "
                f"score {best.value:.4g} s")
    elif spec.stop_at_return is not None:
        head = (f"best: trial {best.number}, solved at step {_fmt(a.get('solved_at_step'))} "
                f"({_fmt(a.get('solved_at_s'))} s)" if a.get("solved_at_step") is not None else
                f"best: trial {best.number}, not solved (best evaluation {_fmt(a.get('best_eval_return'))}), "
                f"score {best.value:.0f}")
    else:
        head = f"best: trial {best.number}, final return {best.value:.2f}"
    head += _per_seed_text(a, ", the median of {}")
    values = a.get("values") or {}
    width = max([len(k) for k in values] + [5])
    lines = [head, f"  {'param':<{width}}  value"]
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in values.items()]
    return "\n".join(lines)


def _table(complete: list, study, spec: TuneSpec, top: int = 5) -> str:
    ordered = sorted(complete, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")[:top]
    several = any(len(t.user_attrs.get("seed_values") or {}) > 1 for t in ordered)
    rows = [("trial", "median" if several else "value", "solved_at", *(("solved_s",) if spec.by_time else ()),
             "wall_s", "final_return", *(("per_seed",) if several else ()), "run")]
    for t in ordered:
        a = t.user_attrs
        rows.append((str(t.number), f"{t.value:.6g}", _fmt(a.get("solved_at_step", "-")),
                     *((_fmt(a.get("solved_at_s", "-")),) if spec.by_time else ()), _fmt(a.get("wall_s", "-")),
                     _fmt(a.get("final_return", "-")),
                     *((" ".join(_num(v) for v in (a.get("seed_values") or {}).values()),) if several else ()),
                     _rel(Path(a.get("run_dir", "")))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return f"top {len(ordered)} of {len(complete)} complete:\n" + "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _reproduce(spec: TuneSpec, best_yaml: Path) -> list[str]:
    seeds = ["--seeds", *map(str, spec.seeds)] if len(spec.seeds) > 1 else ["--seed", str(spec.seed)]
    # With a preset, best.yaml goes on top of the preset's entry (as in the trials), not the env's own.
    preset = ["--preset", spec.preset] if spec.preset is not None else []
    cmd = ["rlkit", "train", "--algo", spec.algo, "--env", spec.env, *preset, "--config", _rel(best_yaml), *seeds,
           "--eval-every", str(spec.eval_every), "--eval-episodes", str(spec.eval_episodes)]
    if spec.stop_at_return is not None:
        cmd += ["--stop-at-return", f"{spec.stop_at_return:g}"]
    for package in spec.env_packages:
        cmd += ["--env-package", package]
    return cmd


def _write_best_yaml(path: Path, best, study, spec: TuneSpec, shown: str) -> None:
    """The best trial's configuration as an RL Zoo shaped entry {env id: {key: value}}, which
    `rlkit train --config` takes: the algorithm's yaml entry with the trial's values, n_timesteps the
    trial budget."""
    a = best.user_attrs
    config = a.get("config") or {}
    if spec.stop_at_return is None:
        value = f"final mean return {best.value:.2f}"
    elif spec.by_time and a.get("solved_at_s") is not None:
        value = (f"mean return >= {spec.stop_at_return:g} in {_fmt(a['solved_at_s'])} s "
                 f"(step {_fmt(a.get('solved_at_step'))})")
    elif not spec.by_time and a.get("solved_at_step") is not None:
        value = f"mean return >= {spec.stop_at_return:g} at step {_fmt(a['solved_at_step'])}"
    else:
        value = f"not solved, score {best.value:.4g} s" if spec.by_time else f"not solved, score {best.value:.0f}"
    if len(spec.seeds) > 1:
        value += f" (median; {_per_seed_text(a)})"
        seeds = f"seeds {_shown(list(spec.seeds))}; its runs: {a.get('run_dir')}/seed_<seed>"
    else:
        seeds = f"seed {spec.seed}; its run: {a.get('run_dir')}"
    head = (f"# rlkit tune: the best trial ({best.number}) of study {study.study_name} in {shown}: {value}\n"
            f"# {spec.algo} on {spec.env}, {seeds}\n"
            f"# train it: {shlex.join(_reproduce(spec, path))}\n")
    body = yaml.safe_dump({spec.env: config}, sort_keys=False, default_flow_style=None)
    _atomic_write(path, head + body)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_charts(study, folder: Path, spec: TuneSpec) -> tuple[list[Path], list[str]]:
    """history.png (every complete trial's value and the best so far) and importances.png (PED-ANOVA,
    Optuna's evaluator that needs no scikit-learn). Returns (files written, one-line notes)."""
    from optuna.trial import TrialState

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as ov

    written, notes = [], []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    charts = [("history.png", lambda: ov.plot_optimization_history(study), 1, "the optimisation history"),
              ("importances.png", lambda: ov.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
               2, "parameter importances")]
    for name, plot, needed, what in charts:
        path = folder / name
        if len(complete) < needed:
            notes.append(f"{name}: not drawn, {what} need{'s' if needed == 1 else ''} {needed} complete "
                         f"trial{'s' if needed > 1 else ''} (the study has {len(complete)})")
            continue
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                ax = plot()
                ax = ax.flat[0] if hasattr(ax, "flat") else ax
                if name == "history.png":
                    ax.set_title(f"{study.study_name}: {spec.algo} on {spec.env}")
                    label = (f"training seconds to {spec.stop_at_return:g} (unsolved: penalised)" if spec.by_time
                             else f"env steps to {spec.stop_at_return:g} (unsolved: penalised)"
                             if spec.stop_at_return is not None else "final mean return")
                    ax.set_ylabel(label + (f", median of {len(spec.seeds)} seeds" if len(spec.seeds) > 1 else ""))
                fig = ax.figure
                fig.savefig(path, dpi=100, bbox_inches="tight")
                plt.close(fig)
            written.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
            plt.close("all")
            notes.append(f"{name}: not drawn ({first_line(exc)})")
    return written, notes


def _write_csv(path: Path, trials: list, params: list[Param]) -> None:
    keys = []
    for t in trials:
        for k in (t.user_attrs.get("values") or {}):
            if k not in keys:
                keys.append(k)
    extra = ("solved_at_step", "solved_at_s", "wall_s", "best_eval_return", "final_return", "pruned_at_step",
             "fail_reason", "run_dir", "pid", "pruned_seed", "seed_values")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", *keys, *extra])
    for t in trials:
        values = t.user_attrs.get("values") or {}
        w.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                    *[_fmt(values[k]) if k in values else "" for k in keys],
                    *[_fmt(v) if isinstance(v := t.user_attrs.get(k, ""), dict) else v for k in extra]])
    _atomic_write(path, buf.getvalue())
