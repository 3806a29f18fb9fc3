"""Rollouts of many controllers at once: in the real env (V, M and C online) or in M's dream.

Every candidate in a CMA-ES generation shares V and M, so instead of one episode at a time a
worker steps all (candidate x rollout) episodes in lock-step and runs V and M on the whole batch;
only C differs per row (a batched matmul). ``Worker`` is what each rollout worker holds (CPU
copies of V and M loaded from the run's artifacts, cached envs); rlkit.workers runs it in spawn
processes or Ray actors (docs/architecture.md §8, §9).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.world_models.artifacts import load_mdrnn, load_policy, load_vae
from agents.world_models.collect import collect_file
from agents.world_models.controller import ActionCodec, controller_features, linear_outputs, reads_h
from agents.world_models.data import preprocess
from agents.world_models.frameskip import fast_road_drawing, step_held
from agents.world_models.mdrnn import MDNRNN, sample_mixture
from agents.world_models.vae import ConvVAE, to_tensor
from rlkit.environments import make_env


class PolicyState:
    """V -> C -> M for a batch of envs: the online policy used by predict and by real rollouts."""

    def __init__(self, vae: ConvVAE, mdrnn: MDNRNN, codec: ActionCodec, device):
        self.vae, self.mdrnn, self.codec, self.device = vae, mdrnn, codec, device
        self.state = None

    def reset(self, batch: int, rows: np.ndarray | None = None) -> None:
        """Zero the LSTM state of all rows (or of ``rows``, a boolean mask)."""
        if self.state is None or rows is None or self.state[0].shape[1] != batch:
            self.state = self.mdrnn.initial_state(batch, self.device)
            return
        keep = torch.as_tensor(~np.asarray(rows, dtype=bool), device=self.device).float()[None, :, None]
        self.state = (self.state[0] * keep, self.state[1] * keep)

    @torch.no_grad()
    def act(self, obs: np.ndarray, params: torch.Tensor, active: np.ndarray | None = None) -> np.ndarray:
        """obs (B, H, W, 3) uint8, params (B, P) -> env actions (B, ...).

        Only the ``active`` rows (a boolean mask; None: all) are encoded by V, acted on by C and
        stepped by M: an ended episode, or a row holding its action for frame_skip frames, costs
        nothing, and its h stays as it was. Its action is zero (the caller ignores it). M runs only
        where C reads h: a z-only C (the paper's V-only row) needs no memory.
        """
        rows = None if active is None or np.all(active) else np.flatnonzero(active)
        state = self.state
        if rows is not None:
            index = torch.as_tensor(rows, device=self.state[0].device)
            obs, params, state = obs[rows], params[index], tuple(s[:, index] for s in self.state)
        z, _ = self.vae.encode(to_tensor(preprocess(obs), self.device))  # mu: the deterministic code
        out_dim = self.codec.out_dim
        action = self.codec.squash(linear_outputs(params, controller_features(params, z, state[0][0], out_dim)))
        if reads_h(params, z.shape[1], out_dim):
            # h_{t+1} = LSTM(z_t, a_t, h_t): the memory of what was seen and done so far.
            _, _, _, _, _, new = self.mdrnn.step(z, self.codec.to_m(action), state)
            self.state = new if rows is None else tuple(s.index_copy(1, index, n) for s, n in zip(self.state, new))
        actions = self.codec.to_env(action)
        if rows is None:
            return actions
        out = np.zeros((len(active), *actions.shape[1:]), dtype=actions.dtype)
        out[rows] = actions
        return out


def real_rollouts(envs: list, policy: PolicyState, params: np.ndarray, seeds: list[int], max_steps: int,
                  frame_skip: int = 1, patience: int = 0):
    """Episode returns (m, r) of m controllers on r seeded episodes each, and the env frames used.

    A decision spans ``frame_skip`` frames (frameskip.py); ``max_steps`` caps the frames of an
    episode. ``patience`` > 0 ends an episode after that many decisions in a row without a
    positive reward (on CarRacing: without a new tile), so a search does not spend hundreds of
    steps on a candidate that has left the road; its return is what it collected until then.
    """
    m, r = len(params), len(seeds)
    n = m * r
    rows = torch.as_tensor(np.repeat(params, r, axis=0), dtype=torch.float32, device=policy.device)
    obs = np.stack([envs[i].reset(seed=int(seeds[i % r]))[0] for i in range(n)])
    policy.reset(n)
    returns = np.zeros(n)
    frames = np.zeros(n, dtype=np.int64)
    idle = np.zeros(n, dtype=np.int64)  # decisions since the last positive reward
    active = np.ones(n, dtype=bool)
    while active.any():
        actions = policy.act(obs, rows, active)
        for i in np.flatnonzero(active):
            o, rew, term, trunc, k = step_held(envs[i], actions[i], min(frame_skip, max_steps - frames[i]))
            returns[i] += rew
            frames[i] += k
            obs[i] = o
            idle[i] = 0 if rew > 0 else idle[i] + 1
            if term or trunc or frames[i] >= max_steps or (patience and idle[i] >= patience):
                active[i] = False
    return returns.reshape(m, r), int(frames.sum())


@torch.no_grad()
def dream_rollouts(mdrnn: MDNRNN, codec: ActionCodec, params: np.ndarray, init_mu: torch.Tensor,
                   init_logvar: torch.Tensor, seeds: list[int], temperature: float, max_steps: int,
                   done_threshold: float = 0.5, record: bool = False, controller_input: str = "mean"):
    """Returns (m, r) of m controllers on r = len(seeds) dream episodes; optionally the latent
    trajectory of row 0.

    The dream starts from a real first frame's posterior z ~ q(z|x_0), then lets M sample
    z_{t+1} at temperature tau, collects M's predicted reward and stops a row when M's done
    head says p(done) > done_threshold (or after max_steps). Episode j draws its start and all
    its noise from its own stream seeded with seeds[j], shared by every controller (common
    random numbers), so a controller's score depends on neither the other rows in the batch
    nor how the seeds are split over workers.

    ``controller_input`` is what C sees of each dreamed latent. In the real env C sees V's
    posterior mean, in which V's unused latent dimensions sit at 0 (on Catch 20-24 of 32); a
    sampled z carries posterior noise there (sigma ~0.9), so C would be selected on inputs it
    never meets in the real env. ``mean`` (default) gives C the drawn mixture component's mean
    (and the start frame's posterior mean), i.e. z without its Gaussian noise; ``sample`` gives
    it the sampled z, as the paper did. M always continues from the sample.
    """
    device = init_mu.device
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    m, r = len(params), len(seeds)
    rows = torch.as_tensor(np.repeat(params, r, axis=0), dtype=torch.float32, device=device)
    z_dim, groups = init_mu.shape[1], mdrnn.groups

    def per_episode(draw):  # one draw per episode stream, tiled over the m controllers
        return torch.stack([draw(g) for g in gens]).repeat(m, 1)

    start = torch.stack([torch.randint(len(init_mu), (), generator=g, device=device) for g in gens]).repeat(m)
    eps = per_episode(lambda g: torch.randn(z_dim, generator=g, device=device))
    z = init_mu[start] + torch.exp(0.5 * init_logvar[start]) * eps
    seen = init_mu[start] if controller_input == "mean" else z
    state = mdrnn.initial_state(m * r, device)
    returns = torch.zeros(m * r, device=device)
    alive = torch.ones(m * r, dtype=torch.bool, device=device)
    trajectory = [z[0].clone()] if record else None
    for _ in range(max_steps):
        action = codec.squash(linear_outputs(rows, controller_features(rows, seen, state[0][0], codec.out_dim)))
        logpi, mu, logsigma, reward, done_logit, state = mdrnn.step(z, codec.to_m(action), state)
        returns += reward * alive
        alive &= torch.sigmoid(done_logit) <= done_threshold
        noise = (per_episode(lambda g: torch.rand(groups, generator=g, device=device)),
                 per_episode(lambda g: torch.randn(z_dim, generator=g, device=device)))
        z, component_mean = sample_mixture(logpi, mu, logsigma, temperature, noise=noise, with_mean=True)
        seen = component_mean if controller_input == "mean" else z
        if record and alive[0]:
            trajectory.append(z[0].clone())
        if not alive.any():
            break
    returns = returns.view(m, r).cpu().numpy().astype(float)
    return (returns, torch.stack(trajectory)) if record else returns


class Worker:
    """What each rollout worker holds for the whole run: CPU copies of V and M (from the run's
    artifacts), its envs, and for iterative collection the policy being improved. Run by
    rlkit.workers.WorkerGroup, in this process, in a spawn process or in a Ray actor."""

    def __init__(self, rank: int, spec: dict):
        # One core per worker: the parallelism is across workers. Restored on close, as with a
        # single worker this object lives in the driver, whose V and M training wants every core.
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.rank, self.spec = rank, spec
        self.envs: list = []
        self.models = None
        self.policy = None

    def _load_models(self):
        if self.models is None:
            vae, _ = load_vae(self.spec["vae_path"], "cpu")
            mdrnn, extra, _ = load_mdrnn(self.spec["mdrnn_path"], "cpu")
            self.models = (vae, mdrnn, extra)
        return self.models

    def _make_envs(self, n: int) -> list:
        while len(self.envs) < n:
            env = make_env(self.spec["env_id"], self.spec.get("env_kwargs"))
            fast_road_drawing(env)  # CarRacing: the same frames, drawn faster (frameskip.py)
            self.envs.append(env)
        return self.envs[:n]

    def evaluate(self, params: np.ndarray, seeds: list[int], patience: int = 0):
        vae, mdrnn, extra = self._load_models()
        codec = ActionCodec(self._make_envs(1)[0].action_space, self.spec.get("squash", "tanh"))
        if self.spec["mode"] == "dream":
            ret = dream_rollouts(mdrnn, codec, params, extra["init_mu"], extra["init_logvar"], seeds,
                                 self.spec["temperature"], self.spec["max_steps"], self.spec["done_threshold"],
                                 controller_input=self.spec.get("controller_input", "mean"))
            return ret, 0
        policy = PolicyState(vae, mdrnn, codec, "cpu")
        return real_rollouts(self._make_envs(len(params) * len(seeds)), policy, params, seeds,
                             self.spec["max_steps"], self.spec.get("frame_skip", 1), patience)

    def _collect_policy(self, env):
        """``act(obs, first_step)`` of the checkpoint named by spec["policy"], loaded once."""
        if self.policy is None:
            vae, mdrnn, params, squash = load_policy(self.spec["policy"], env.observation_space, env.action_space)
            state = PolicyState(vae, mdrnn, ActionCodec(env.action_space, squash), "cpu")

            def act(obs, first_step: bool):
                if first_step:
                    state.reset(1)
                return state.act(obs[None], params[None])[0]

            self.policy = act
        return self.policy

    def collect(self, index: int) -> tuple[int, int]:
        env = self._make_envs(1)[0]
        act = None if self.spec["policy"] == "random" else self._collect_policy(env)
        return collect_file(self.spec, index, env, act)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
        torch.set_num_threads(self.threads)
