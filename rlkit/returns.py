"""Advantages and returns over a (T, N) rollout from a NEXT_STEP-autoreset vector env.

Conventions (docs/architecture.md §3), for step t of env n:
- ``terminated[t]``: the episode truly ended; the next state's value is 0.
- ``truncated[t]``: cut by a time limit; bootstrap with V(final observation).
- Under NEXT_STEP autoreset the step after an episode end is a *reset step*: the env ignores its
  action, returns reward 0 and the new episode's first observation. Its observation is the
  final observation of the ended episode, so ``values[t + 1]`` is exactly V(final obs), the
  bootstrap a truncation needs. Reset steps carry ``valid = False`` and must be masked out of
  every loss; their advantages are returned as 0.
The recursion is cut at every episode end (terminated or truncated).
"""

from __future__ import annotations

import torch


def _next_values(values: torch.Tensor, last_value: torch.Tensor) -> torch.Tensor:
    return torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)


def gae(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
        valid: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation. All inputs (T, N) except last_value (N,).

    Returns (advantages, returns) with returns = advantages + values; both 0 on reset steps.
    """
    next_values = _next_values(values, last_value)
    not_terminated = 1.0 - terminated.float()
    continues = 1.0 - torch.maximum(terminated, truncated).float()
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * continues[t] * running
        running = running * valid[t].float()  # a reset step contributes nothing and starts afresh
        advantages[t] = running
    returns = (advantages + values) * valid.float()
    return advantages, returns


def discounted_returns(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                       valid: torch.Tensor, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """Monte-Carlo reward-to-go, G_t = r_t + γ G_{t+1}, cut at every episode end.

    ``bootstrap[t]`` must be V(s_{t+1}), i.e. the values shifted by one step and ending with
    V(next_obs): it is used only where the sum is cut short without a true ending, at a
    truncation (where s_{t+1} is the final observation) and after the last step. Pass zeros for
    plain REINFORCE without a critic. Terminated episodes always end with 0.
    """
    T = rewards.shape[0]
    out = torch.zeros_like(rewards)
    running = bootstrap[T - 1] * (1.0 - terminated[T - 1].float())
    for t in reversed(range(T)):
        if t < T - 1:
            ended = torch.maximum(terminated[t], truncated[t]).bool()
            cut = truncated[t].bool() & ~terminated[t].bool()
            running = torch.where(ended, torch.where(cut, bootstrap[t], torch.zeros_like(running)), running)
        running = (rewards[t] + gamma * running) * valid[t].float()
        out[t] = running
    return out


def differential_rewards(rewards: torch.Tensor, valid: torch.Tensor, avg_reward: float | None,
                         step_size: float) -> tuple[torch.Tensor, float]:
    """Rewards r - ρ̄ for the average-reward objective, and the updated estimate ρ̄.

    ρ̄ first moves ``step_size`` of the way towards this batch's mean reward over valid steps
    (autoreset steps carry no reward), then is subtracted from every reward. The first batch
    (``avg_reward`` None) sets ρ̄ to its own mean: starting from 0 would bias the early
    differential returns by the whole reward rate.
    """
    batch_rate = float(rewards[valid].mean())
    avg_reward = batch_rate if avg_reward is None else avg_reward + step_size * (batch_rate - avg_reward)
    return rewards - avg_reward, avg_reward
