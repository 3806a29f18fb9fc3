"""The PPO update against its floor (issue 36 item 4): one gradient step of agents/ppo.py's update
beside a bare fused-Adam step of the same network on the same minibatch.

The floor is what any PPO must pay per minibatch: the forward pass of the actor-critic, a backward
pass and one Adam step, with nothing else (its loss is a plain sum of the outputs). The ratio
update / floor is the overhead of PPO's own arithmetic (log-probs, ratio, clipping, advantage
normalisation, value loss, gradient clipping) and of the Python around it. Both run with one torch
thread, interleaved in rounds so machine noise hits both alike; medians over the rounds.

    python bench/update_floor.py                            # CartPole-v1 and LunarLander-v3, 4 batch sizes
    python bench/update_floor.py --env CartPole-v1 --batch-sizes 256 --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def ppo_agent(env_id: str, batch_size: int, epochs: int, minibatches: int):
    from agents.ppo import PPO, Config

    n_envs = 8
    cfg = Config(n_envs=n_envs, n_steps=max(1, minibatches * batch_size // n_envs), n_epochs=epochs,
                 batch_size=batch_size, anneal_lr=False)
    agent = PPO(env_id, cfg, seed=0, device="cpu")
    from rlkit.onpolicy import rollout_source

    with rollout_source(agent) as collector:
        batch = collector.collect()
    return agent, batch


def time_update(agent, batch, minibatches: int) -> float:
    """Seconds per gradient step of agent.update (n_epochs x ``minibatches`` steps)."""
    t0 = time.perf_counter()
    agent.update(batch)
    return (time.perf_counter() - t0) / (agent.config.n_epochs * minibatches)


def time_floor(model, optimizer, obs, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        dist, values = model(obs)
        loss = dist.log_prob(dist.sample()).sum() + values.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", default=["CartPole-v1", "LunarLander-v3"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024, 4096])
    p.add_argument("--epochs", type=int, default=10, help="gradient steps per timed update (default: 10)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds per row (default: 20)")
    p.add_argument("--minibatches", nargs="+", type=int, default=[1, 4],
                   help="minibatches per rollout, one row each: 1 takes the rollout whole (default: 1 4)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for env_id, bs, k in [(e, b, k) for e in args.env for b in args.batch_sizes for k in args.minibatches]:
        agent, batch = ppo_agent(env_id, bs, args.epochs, k)
        obs = batch.obs.flatten(0, 1)[: bs].clone()
        import copy

        model = copy.deepcopy(agent.model)
        floor_opt = torch.optim.Adam(model.parameters(), lr=1e-5, eps=1e-5, fused=True)
        time_update(agent, batch, k), time_floor(model, floor_opt, obs, args.epochs)  # warm-up
        ups, floors = [], []
        for _ in range(args.rounds):
            ups.append(time_update(agent, batch, k))
            floors.append(time_floor(model, floor_opt, obs, args.epochs))
        up, fl = statistics.median(ups), statistics.median(floors)
        rows.append((env_id, bs, k, up * 1e3, fl * 1e3, up / fl))
        print(f"{env_id:16s} batch {bs:5d} x {k}: ppo step {up * 1e3:7.3f} ms, floor {fl * 1e3:7.3f} ms, "
              f"ratio {up / fl:5.2f}", flush=True)
    print("\n| env | minibatch | minibatches per rollout | PPO gradient step (ms) | fused-Adam floor (ms) | ratio |"
          "\n|---|---|---|---|---|---|")
    for env_id, bs, k, up, fl, r in rows:
        print(f"| {env_id} | {bs} | {k} | {up:.3f} | {fl:.3f} | {r:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
