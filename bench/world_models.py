"""World Models throughput: env frames/s per frame_skip, collection, V's encoding, and (with
--stages) the wall time and steps/s of each stage of a scaled run.

    python bench/world_models.py                                   # rlkit/Catch-v0, yaml sizes
    python bench/world_models.py --env CarRacing-v3 --episodes 2 --workers 2
    python bench/world_models.py --env CarRacing-v3 --stages --set collect_episodes=4 \\
        episodes_per_file=2 vae_epochs=1 mdrnn_epochs=1 cma_popsize=4 cma_rollouts=1 \\
        cma_generations=1 cma_eval_rollouts=2 frame_skip=4 workers=2 threads=2
    python bench/world_models.py --device cuda --batch 1024

Env frames/s steps one env with random held actions through frameskip.step_held (CarRacing
draws only every k-th frame), as gymnasium draws frames and with the rollout workers' faster
drawing of the same pixels (frameskip.fast_road_drawing). Collect frames/s counts played
frames (env step + resize to 64x64 + compressed npz write) over all workers; encode frames/s is
V.encode on uint8 batches already in memory (the cost the controller stage and predict pay per
decision). --stages runs collect, V, M and C one after another in a temporary directory with
the env's yaml entry and --set overrides, and prints each stage's wall time and throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def env_frames_per_second(env_id: str, env_kwargs: dict, skip: int, frames: int, fast: bool) -> float:
    from agents.world_models.frameskip import fast_road_drawing, step_held
    from rlkit.environments import make_env

    env = make_env(env_id, env_kwargs)
    if fast:
        fast_road_drawing(env)
    env.reset(seed=0)
    env.action_space.seed(0)
    done, t0 = 0, time.perf_counter()
    while done < frames:
        _, _, term, trunc, n = step_held(env, env.action_space.sample(), skip)
        done += n
        if term or trunc:
            env.reset()
    wall = time.perf_counter() - t0
    env.close()
    return done / wall


def stage_table(env_id: str, sets: dict, workers: int) -> None:
    """Run every stage once (the agent's own code) and time it; steps are what each stage consumes."""
    import numpy as np

    from agents.world_models import WorldModels
    from agents.world_models.data import read_manifest
    from rlkit import config

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for stage in ("collect", "vae", "mdrnn", "controller"):
            cfg, env_kwargs = config.resolve(WorldModels.Config, "world-models", env_id,
                                             sets={**sets, "stage": stage, "progress": False})
            agent = WorldModels(env_id, cfg, seed=0, device="cpu", run_dir=tmp, workers=workers or None,
                                env_kwargs=env_kwargs)
            t0 = time.perf_counter()
            agent.learn(10**12)
            wall = time.perf_counter() - t0
            manifest = read_manifest(Path(tmp) / "data")
            decisions = manifest["steps"]
            if stage == "collect":
                amount, unit = decisions * cfg.frame_skip, "env frames"
            elif stage == "vae":
                amount, unit = cfg.vae_epochs * decisions, "frames trained"
            elif stage == "mdrnn":
                amount, unit = cfg.mdrnn_epochs * decisions, "transitions trained"
            else:
                amount, unit = agent.metas["controller"]["real_steps"], "env frames"
            rows.append((stage, wall, amount, unit))
            agent.close()
        print(f"\n{env_id}: stages (frame_skip={cfg.frame_skip}, workers={agent.workers}, threads={cfg.threads})")
        print("| stage | wall time | steps | steps/s |\n|---|---|---|---|")
        for stage, wall, amount, unit in rows:
            print(f"| {stage} | {wall:.1f} s | {amount:,} {unit} | {amount / max(wall, 1e-9):,.0f} |")
        print(f"| all | {np.sum([r[1] for r in rows]):.1f} s | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="rlkit/Catch-v0")
    ap.add_argument("--episodes", type=int, default=20, help="episodes to collect")
    ap.add_argument("--max-steps", type=int, default=1000, help="cap per collected episode")
    ap.add_argument("--workers", type=int, default=1, help="collect processes (spawn)")
    ap.add_argument("--batch", type=int, default=256, help="frames per V.encode call")
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent timing the encoder")
    ap.add_argument("--frames", type=int, default=2000, help="env frames timed per frame_skip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    ap.add_argument("--stages", action="store_true", help="also time every stage of a scaled run")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for --stages")
    args = ap.parse_args()

    import numpy as np
    import torch

    from agents.world_models import WorldModels
    from agents.world_models.data import read_file
    from agents.world_models.rollouts import Worker
    from agents.world_models.vae import ConvVAE, to_tensor
    from rlkit import config
    from rlkit.workers import WorkerGroup

    torch.set_num_threads(args.threads)
    sets = config.parse_set(args.set)
    cfg, env_kwargs = config.resolve(WorldModels.Config, "world-models", args.env, sets=sets)
    for skip in sorted({1, 4, cfg.frame_skip}):
        for fast in (False, True):
            fps = env_frames_per_second(args.env, env_kwargs, skip, args.frames, fast)
            drawing = "the workers' faster drawing" if fast else "as gymnasium draws"
            print(f"{args.env}: env      {fps:9.0f} frames/s  (one env, frame_skip={skip}, {drawing}, "
                  "random held actions)")
    with tempfile.TemporaryDirectory() as tmp:
        per_file = max(1, args.episodes // max(1, args.workers))
        spec = {"episodes": args.episodes, "episodes_per_file": per_file, "policy": "random",
                "action_repeat": cfg.collect_action_repeat, "max_steps": args.max_steps, "seed": 0,
                "frame_skip": cfg.frame_skip, "env_id": args.env, "env_kwargs": env_kwargs, "data_dir": tmp}
        n_files = -(-args.episodes // per_file)
        t0 = time.perf_counter()
        with WorkerGroup(Worker, (spec,), n_workers=min(args.workers, n_files)) as group:
            results = group.map("collect", [(i,) for i in range(n_files)])
        wall = time.perf_counter() - t0
        frames = sum(steps + eps for eps, steps in results)  # + the final frame of each episode
        print(f"{args.env}: collect  {frames * cfg.frame_skip / wall:9.0f} frames/s  ({frames} stored frames, "
              f"frame_skip={cfg.frame_skip}, {args.episodes} random episodes, {args.workers} worker(s), "
              f"{wall:.1f} s incl. worker start)")
        sample = read_file(Path(tmp) / "rollouts_00000.npz")["obs"]

    device = torch.device(args.device)
    vae = ConvVAE.from_sizes(cfg.vae_sizes()).to(device).eval()
    batch = sample[np.arange(args.batch) % len(sample)]
    with torch.inference_mode():
        vae.encode(to_tensor(batch, device))  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            vae.encode(to_tensor(batch, device))
            n += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    print(f"{args.env}: encode   {n / wall:9.0f} frames/s  (V with z={cfg.z_dim}, channels={cfg.vae_channels}, "
          f"norm={cfg.vae_norm}, batch {args.batch}, {args.device}, {args.threads} thread(s))")
    if args.stages:
        stage_table(args.env, sets, args.workers)


if __name__ == "__main__":
    main()
