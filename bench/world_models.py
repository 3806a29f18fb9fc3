"""World Models throughput: frames/s of the collect stage and of V's batched encoding.

    python bench/world_models.py                       # rlkit/Catch-v0, sizes from world-models.yaml
    python bench/world_models.py --env CarRacing-v3 --episodes 2 --workers 2
    python bench/world_models.py --device cuda --batch 1024

Collect frames/s counts stored frames (env step + resize to 64x64 + compressed npz write) over
all workers; encode frames/s is V.encode on uint8 batches already in memory (the cost the
controller stage and predict pay per step). Sizes (vae_channels, z_dim) come from the env's
entry in agents/hyperparams/world-models.yaml unless overridden.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="rlkit/Catch-v0")
    ap.add_argument("--episodes", type=int, default=20, help="episodes to collect")
    ap.add_argument("--max-steps", type=int, default=1000, help="cap per collected episode")
    ap.add_argument("--workers", type=int, default=1, help="collect processes (spawn)")
    ap.add_argument("--batch", type=int, default=256, help="frames per V.encode call")
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent timing the encoder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process")
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
    cfg, env_kwargs = config.resolve(WorldModels.Config, "world-models", args.env)
    with tempfile.TemporaryDirectory() as tmp:
        per_file = max(1, args.episodes // max(1, args.workers))
        spec = {"episodes": args.episodes, "episodes_per_file": per_file, "policy": "random",
                "action_repeat": cfg.collect_action_repeat, "max_steps": args.max_steps, "seed": 0,
                "env_id": args.env, "env_kwargs": env_kwargs, "data_dir": tmp}
        n_files = -(-args.episodes // per_file)
        t0 = time.perf_counter()
        with WorkerGroup(Worker, (spec,), n_workers=min(args.workers, n_files)) as group:
            results = group.map("collect", [(i,) for i in range(n_files)])
        wall = time.perf_counter() - t0
        frames = sum(steps + eps for eps, steps in results)  # + the final frame of each episode
        print(f"{args.env}: collect  {frames / wall:9.0f} frames/s  ({frames} frames, {args.episodes} random "
              f"episodes, {args.workers} worker(s), {wall:.1f} s incl. worker start)")
        sample = read_file(Path(tmp) / "rollouts_00000.npz")["obs"]

    device = torch.device(args.device)
    vae = ConvVAE(cfg.z_dim, cfg.vae_channels, cfg.vae_norm, cfg.vae_blur).to(device).eval()
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


if __name__ == "__main__":
    main()
