"""rlkit command line: argument parsing only; the work is in rlkit.commands (docs/architecture.md §4)."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  rlkit list
  rlkit train --algo ppo --env CartPole-v1 --stop-at-return 475 --eval-every 5120 --seed 0
  rlkit train --algo sb3-ppo --env rlkit/GridWorld-v0 --steps 50000 --set learning_rate=1e-3
  rlkit eval runs/CartPole-v1/ppo__s0__20260101-120000 --json
  rlkit render runs/CartPole-v1/ppo__s0__20260101-120000 --out cartpole.gif
  rlkit compare runs/CartPole-v1
  rlkit tensorboard
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
    t.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1 or rlkit/GridWorld-v0")
    t.add_argument("--steps", type=_int("--steps", 1), default=None,
                   help="environment steps to train (default: the hyperparameter file's n_timesteps); "
                        "with --resume: extend the run to this many steps")
    t.add_argument("--seed", type=_int("--seed", 0, 2**32 - 1), default=None, help="(default: 0)")
    t.add_argument("--n-envs", type=_int("--n-envs", 1), default=None, help="parallel envs (default: from config)")
    t.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:<i> (default: auto; with --resume: the run's own)")
    t.add_argument("--backend", default=None, choices=["local", "ray"], help="(default: local)")
    t.add_argument("--workers", type=_int("--workers", 1), default=None, help="rollout workers (ray / a3c)")
    t.add_argument("--ray-address", default=None, help="'auto' to join a running Ray cluster")
    t.add_argument("--config", default=None, help="YAML file of hyperparameters (flat, or keyed by env id)")
    t.add_argument("--set", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="override one hyperparameter, e.g. --set learning_rate=3e-4 n_epochs=4")
    where = t.add_mutually_exclusive_group()
    where.add_argument("--runs-root", default=None,
                       help="runs go to RUNS_ROOT/<env>/<algo>__s<seed>__<time> (default: runs)")
    where.add_argument("--run-dir", default=None, help="exact run directory to create")
    t.add_argument("--eval-every", type=_int("--eval-every", 1), default=None,
                   help="env steps between evaluations (default: 10000)")
    t.add_argument("--eval-episodes", type=_int("--eval-episodes", 1), default=None, help="(default: 10)")
    t.add_argument("--stop-at-return", type=_float, default=None,
                   help="stop at the first evaluation whose mean return >= R (records solved_at_step/_s)")
    t.add_argument("--final-eval-episodes", type=_int("--final-eval-episodes", 0), default=None,
                   help="when the run ends, score it on this many fresh episodes (seeds 20000..., never "
                        "those of the periodic evaluations, 10000...): run.json final_eval; 0 skips it "
                        "(default: 100)")
    t.add_argument("--checkpoint-every", type=_int("--checkpoint-every", 1), default=None,
                   help="env steps between checkpoints (default: max(eval-every, steps/10), at most 100000)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint, with the settings in its config.yaml")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a run's latest checkpoint")
    e.add_argument("run_dir")
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
    r.add_argument("--window", action="store_true", help="show the episodes in a pygame window instead")

    c = sub.add_parser("compare", help="tables and learning curves of runs, grouped by env and algorithm")
    c.add_argument("paths", nargs="+")
    c.add_argument("--out", default=None, help="where comparison.md/.png go (default: the first path)")
    c.add_argument("--threshold", type=_float, default=None, help="return that counts as solved")

    b = sub.add_parser("tensorboard", help="start TensorBoard on the runs directory")
    b.add_argument("--logdir", default="runs")
    b.add_argument("--port", type=_int("--port", 1, 65535), default=6006)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rlkit.commands import dispatch

    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
