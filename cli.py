"""rlkit command line: argument parsing only; the work is in rlkit.commands (docs/architecture.md §4)."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  rlkit list
  rlkit train --algo ppo --env CartPole-v1 --stop-at-return 475 --eval-every 5120 --seed 0
  rlkit train --algo sb3-ppo --env rlkit/GridWorld-v0 --steps 50000 --set learning_rate=1e-3
  rlkit train --algo ppo --env CartPole-v1 --stop-at-return 475 --eval-every 5120 --seeds 0 1 2
  rlkit eval runs/CartPole-v1/ppo__s0__20260101-120000 --json --checkpoint best
  rlkit render runs/CartPole-v1/ppo__s0__20260101-120000 --out cartpole.gif
  rlkit compare runs/CartPole-v1
  rlkit tensorboard
  rlkit tune --algo ppo --env CartPole-v1 --stop-at-return 475 --trials 30 --seed 0
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"rlkit: error: {message}\n")


INT64 = 2**63 - 1  # what torch, numpy and TensorBoard can hold


def _int(kind: str, minimum: int, maximum: int = INT64):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer >= {minimum}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer in [{minimum}, {maximum}], got {value}")
        return value

    parse.__name__ = kind
    return parse


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _checkpoint(text: str) -> str:
    """best | latest | step_<n> (also <n>, step_<n>.pt); the rule is rlkit.runs.parse_checkpoint_name."""
    from rlkit.errors import UsageError
    from rlkit.runs import parse_checkpoint_name

    try:
        return parse_checkpoint_name(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"expected best, latest or step_<n>, got '{text}'") from None


def _host(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"--host must be a host name or address, got '{text}'")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rlkit", description="Train, evaluate, render and compare RL agents and baselines.",
                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("list", help="list algorithms and environments")

    # Train options default to None so that rlkit.commands can tell what was given: with --resume
    # only --steps, --device and --no-progress apply. The defaults are in the help texts.
    t = sub.add_parser("train", help="train an agent (or resume a run)")
    t.add_argument("--algo", help="algorithm name (see `rlkit list`)")
    t.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1 or rlkit/GridWorld-v0; a user's env as "
                                 "pkg.module:EnvId (the module registers EnvId) or pkg.module:Class (a gymnasium.Env "
                                 "class, registered as Class-v0)")
    t.add_argument("--env-package", action="append", default=None, metavar="MODULE",
                   help="import MODULE before making the env (it registers the user's envs); repeatable. "
                        "Recorded in config.yaml, so eval, render, --resume and workers import it again")
    t.add_argument("--steps", type=_int("--steps", 1), default=None,
                   help="environment steps to train (default: the hyperparameter file's n_timesteps); "
                        "with --resume: extend the run to this many steps")
    t.add_argument("--seed", type=_int("--seed", 0, 2**32 - 1), default=None, help="(default: 0)")
    t.add_argument("--seeds", type=_int("--seeds", 0, 2**32 - 1), nargs="+", default=None, metavar="SEED",
                   help="train one run per seed, one after another, into the same env folder (then "
                        "`rlkit compare RUNS_ROOT/<env>`); not with --seed, --run-dir or --resume")
    t.add_argument("--n-envs", type=_int("--n-envs", 1), default=None, help="parallel envs (default: from config)")
    t.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:<i> (default: auto; with --resume: the run's own)")
    t.add_argument("--backend", default=None, choices=["local", "ray"],
                   help="local: this machine's processes; ray: Ray actors (default: local)")
    t.add_argument("--workers", type=_int("--workers", 1), default=None,
                   help="parallel workers: rollout workers sharing n_envs (reinforce, actor-critic, ppo), "
                        "a3c's actor-learners, world-models' collectors; ray default: one per core")
    t.add_argument("--ray-address", default=None,
                   help="join a running Ray cluster: 'auto' (started here with `ray start --head`) or host:port")
    t.add_argument("--config", default=None, help="YAML file of hyperparameters (flat, or keyed by env id)")
    t.add_argument("--untuned", action="store_true", default=None,
                   help="use only the `default` entry of agents/hyperparams/<algo>.yaml, not the env's tuned one")
    t.add_argument("--preset", default=None, metavar="NAME",
                   help="use the `default` entry updated by the `<env>@NAME` entry of agents/hyperparams/<algo>.yaml "
                        "instead of the env's tuned one (`rlkit list` shows the presets); not with --untuned")
    t.add_argument("--set", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="override one hyperparameter, e.g. --set learning_rate=3e-4 n_epochs=4")
    where = t.add_mutually_exclusive_group()
    where.add_argument("--runs-root", default=None,
                       help="runs go to RUNS_ROOT/<env>/<algo>__s<seed>__<time> (default: runs)")
    where.add_argument("--run-dir", default=None, help="exact run directory to create")
    t.add_argument("--eval-every", type=_int("--eval-every", 1), default=None,
                   help="env steps between evaluations (default: 10000; world-models: 250000, a few "
                        "CMA-ES generations)")
    t.add_argument("--eval-episodes", type=_int("--eval-episodes", 1), default=None, help="(default: 10)")
    t.add_argument("--stop-at-return", type=_float, default=None,
                   help="stop at the first evaluation whose mean return >= R (records solved_at_step/_s)")
    t.add_argument("--final-eval-episodes", type=_int("--final-eval-episodes", 0), default=None,
                   help="when the run ends, score it on this many fresh episodes (seeds 20000..., never "
                        "those of the periodic evaluations, 10000...): run.json final_eval; 0 skips it "
                        "(default: 100)")
    t.add_argument("--checkpoint-every", type=_int("--checkpoint-every", 1), default=None,
                   help="env steps between checkpoints (default: max(eval-every, steps/10), at most 100000)")
    t.add_argument("--video-every", type=_int("--video-every", 1), default=None, metavar="N",
                   help="every N env steps, record one deterministic evaluation episode to "
                        "RUN_DIR/videos/step_<n>.gif (.mp4 where the env renders frames over 256 px; the env "
                        "must render rgb_array) and four of its frames to TensorBoard (default: no videos)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint, with the settings in its config.yaml")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar (each evaluation is then a line on stdout, as when stdout is not a terminal)")
    t.add_argument("--quiet", action="store_true",
                   help="no progress bar and no line per evaluation; only the summary line at the end")

    e = sub.add_parser("eval", help="evaluate a run's checkpoint (default: the latest)")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", type=_checkpoint, default="latest",
                   help="best (the best stop-check evaluation), latest, or step_<n> (default: latest)")
    e.add_argument("--episodes", type=_int("--episodes", 1), default=10)
    # None -> rlkit.evaluation.CONFIRM_SEED (resolved in rlkit/commands.py: this module stays light)
    e.add_argument("--seed", type=_int("--seed", 0), default=None,
                   help="seed of the first episode (default 20000: never seen by training's stop check, "
                        "which uses 10000...)")
    e.add_argument("--json", action="store_true", help="print one JSON object")

    r = sub.add_parser("render", help="render episodes of a run to a GIF/MP4 or a window")
    r.add_argument("run_dir")
    r.add_argument("--episodes", type=_int("--episodes", 1), default=1)
    r.add_argument("--seed", type=_int("--seed", 0), default=10_000)
    r.add_argument("--out", default=None, help="FILE.gif or FILE.mp4 (default: RUN_DIR/videos/episode.gif)")
    r.add_argument("--window", action="store_true",
                   help="show the episodes in a pygame window instead (needs a display)")
    r.add_argument("--checkpoint", type=_checkpoint, default="latest",
                   help="best (the best stop-check evaluation), latest, or step_<n> (default: latest)")

    c = sub.add_parser("compare", help="tables and learning curves of runs, grouped by env, algorithm and "
                                       "configuration, with bootstrap 95%% intervals over seeds")
    c.add_argument("paths", nargs="+")
    c.add_argument("--out", default=None, help="where comparison.md/.png go (default: the first path)")
    c.add_argument("--threshold", type=_float, default=None, help="return that counts as solved")

    b = sub.add_parser("tensorboard", help="start TensorBoard on the runs directory")
    b.add_argument("--logdir", default="runs")
    b.add_argument("--port", type=_int("--port", 1, 65535), default=6006)
    b.add_argument("--host", type=_host, default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")

    u = sub.add_parser("tune", help="search hyperparameters with Optuna: one run directory per trial, a "
                                    "resumable study (docs/tune.md)")
    u.add_argument("--algo", required=True, help="algorithm name (default search spaces: ppo, actor-critic, "
                                                 "reinforce, a3c, sb3-ppo, sb3-a2c; others need --space)")
    u.add_argument("--env", required=True, help="env id, as for train")
    u.add_argument("--env-package", action="append", default=None, metavar="MODULE",
                   help="import MODULE before making the env (repeatable), as for train")
    u.add_argument("--trials", type=_int("--trials", 1), required=True,
                   help="trials to run now; the same command again continues the study with as many more")
    u.add_argument("--timeout", type=_float, default=None, metavar="S",
                   help="start no new trial after S seconds (running trials finish)")
    u.add_argument("--jobs", type=_int("--jobs", 1), default=1,
                   help="trials at a time: 1 runs them in this process, more in worker processes or Ray actors "
                        "(default: 1)")
    u.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: this machine's processes; ray: Ray actors (default: local)")
    u.add_argument("--ray-address", default=None, help="with --backend ray: join this Ray cluster ('auto', host:port)")
    u.add_argument("--runs-root", default="runs",
                   help="trials, charts and best.yaml go to RUNS_ROOT/tune/<env>/<algo or study>/ (default: runs)")
    u.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna RDB URL of the study (default: sqlite:///RUNS_ROOT/tune/<env>/<algo>.db); a server "
                        "URL (postgresql://..., mysql://...) lets several machines share one study")
    u.add_argument("--study", default=None, metavar="NAME", help="study name (default: <algo>-<env>); also names "
                                                                  "the output folder")
    u.add_argument("--sampler", default="tpe", choices=["tpe", "random"], help="(default: tpe)")
    u.add_argument("--pruner", default="median", choices=["median", "none"],
                   help="median: stop a trial whose evaluations fall below the median of the complete trials "
                        "(default: median)")
    u.add_argument("--startup-trials", type=_int("--startup-trials", 0), default=5,
                   help="random trials before TPE models the space, and complete trials before pruning (default: 5)")
    u.add_argument("--preset", default=None, metavar="NAME",
                   help="trials start from the yaml entry <env>@NAME instead of the env's own, as train --preset; "
                        "the study is <algo>@NAME's")
    u.add_argument("--space", default=None, metavar="FILE.yaml",
                   help="search space replacing the default one (agents/hyperparams/search_spaces.yaml)")
    useeds = u.add_mutually_exclusive_group()
    useeds.add_argument("--seed", type=_int("--seed", 0, 2**32 - 1), default=None,
                        help="every trial's training seed, and the sampler's (default: 0); --seed S is --seeds S")
    useeds.add_argument("--seeds", type=_int("--seeds", 0, 2**32 - 1), nargs="+", default=None, metavar="SEED",
                        help="every trial trains one run per seed (TRIAL/seed_<s>/); its value is the median over "
                             "the seeds; the sampler's seed is the first")
    u.add_argument("--steps", type=_int("--steps", 1), default=None,
                   help="env steps per trial (default: the hyperparameter file's n_timesteps)")
    u.add_argument("--stop-at-return", type=_float, default=None, metavar="R",
                   help="minimise the env steps to an evaluation mean >= R (default: maximise the final score)")
    u.add_argument("--objective", default=None, choices=["steps", "time"],
                   help="with --stop-at-return: minimise the env steps to R (steps, the default) or the training "
                        "wall seconds to R (time)")
    u.add_argument("--eval-every", type=_int("--eval-every", 1), default=10_000,
                   help="env steps between evaluations, each reported to the pruner (default: 10000)")
    u.add_argument("--eval-episodes", type=_int("--eval-episodes", 1), default=10, help="(default: 10)")
    u.add_argument("--final-eval-episodes", type=_int("--final-eval-episodes", 0), default=None,
                   help="fresh episodes scoring each trial's end (default: 100; 0 with --stop-at-return)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in config.yaml (provenance)
    from rlkit.commands import dispatch

    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
