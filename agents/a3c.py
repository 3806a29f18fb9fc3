"""Asynchronous advantage actor-critic, A3C (Mnih et al. 2016).

Several workers act at the same time, each in its own copies of the env. A worker repeatedly

    1. copies the global parameters θ into its local model θ'        (θ' ← θ)
    2. collects t_max = ``n_steps`` steps with π(·|s; θ')
    3. computes n-step returns R_t = r_t + γ r_{t+1} + ... + γ^k V(s_{t+k}; θ') and the loss

           L = -E[log π(a|s) (R - V(s))] + c_v E[(V(s) - R)^2] - c_e E[H[π]]

       (the same loss as A2C: ``agents.actor_critic.a2c_loss``, with truncation bootstrapping and
       autoreset masking from rlkit.returns / rlkit.rollout)
    4. applies ∇θ' L to the global θ with a shared optimizer, without waiting for the others.

Because the workers are at different points of different episodes, their updates decorrelate
the data without a replay buffer. Actor and critic share a torso by default (``shared: true``),
as in the paper.

Backends (docs/architecture.md §8):

- ``local``: Hogwild. θ and the optimizer's statistics (shared RMSProp, as in the paper, or
  shared Adam) live in shared memory; workers are spawn processes (rlkit.workers), one torch
  thread each, with a shared step counter. The learner process evaluates, logs and checkpoints
  while they run, so A3C follows the same training protocol as every other agent. With
  ``norm_obs`` / ``norm_reward`` the running statistics are shared the same way (SharedRMS).
- ``ray``: each worker is a Ray actor with its own model copy that sends its gradient; the
  learner applies each gradient as it arrives and sends the new θ back to that worker only
  (without normalisation: the statistics are shared through one machine's memory).

A worker zeroes its local gradients (``set_to_none``) before every backward pass and hands the
optimizer this update's gradient tensors: a worker that reuses a ``.grad`` it attached once
would keep applying stale gradients (tests/test_a3c.py pins this).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.actor_critic import a2c_loss, check_optimizer_options, make_optimizer
from rlkit.environments import seed_everything
from rlkit.errors import UsageError
from rlkit.normalization import Normalizers
from rlkit.onpolicy import Collector, LazyOptimizer, check_common_options, load_agent, save_agent, setup_agent

MAX_RESTARTS = 3  # worker failures a run survives; the next one ends it with the worker's error


@dataclass
class Config:
    n_timesteps: int = 200_000
    workers: int = 0                  # 0: one per CPU core; --workers overrides
    n_envs: int = 1                   # env copies per worker (the paper: 1)
    n_steps: int = 5                  # t_max: rollout length per update = the "n" of the n-step return
    learning_rate: float = 7e-4
    anneal_lr: bool = False           # linear decay to 0 over the run's steps (by the global step counter)
    optimizer: str = "rmsprop"        # shared RMSProp (the paper) or shared "adam"
    rmsprop_alpha: float = 0.99
    optim_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 1.0           # 1.0 = n-step returns, < 1 = GAE
    normalize_advantage: bool = False
    ent_coef: float = 0.01
    vf_coef: float = 0.25             # x MSE (A2C's loss, SB3's convention); 0.25 = the earlier 0.5 x MSE / 2
    max_grad_norm: float | None = 0.5
    norm_obs: bool = False            # the workers share one set of statistics (rlkit.normalization.SharedRMS)
    norm_reward: bool = False
    norm_clip: float | None = None   # clip normalised obs and rewards to ±norm_clip (SB3: 10)
    objective: str = "discounted"     # or "average" for continuing tasks
    avg_reward_lr: float = 0.05
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    shared: bool | None = True        # actor and critic share a torso except for their heads (the paper)
    log_std_init: float = 0.0
    use_sde: bool = False             # gSDE exploration for Box actions (rlkit.networks.ActionHead)
    sde_sample_freq: int = -1         # gSDE: new noise every n steps; -1: once per rollout
    ortho_init: bool = True           # False: torch's default init (the Zoo's gSDE entries)
    torch_threads: int = 1            # per worker: the parallelism is across workers
    frame_stack: int = 1
    train_time_limit: int | None = None
    cnn: str = "nature"

    def validate(self) -> None:
        check_common_options(self)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per core), got {self.workers}")
        check_optimizer_options(self)


def optimizer_state(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The optimizer's per-parameter statistics, created now and moved to shared memory.

    torch creates them lazily on the first ``step``; Hogwild workers must all update the same
    ones (shared RMSProp), so they exist before any worker starts and every worker's optimizer
    points at them.
    """
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                if isinstance(optimizer, torch.optim.RMSprop):
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                else:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for tensor in state.values():
                tensor.share_memory_()
            out.append(state)
    return out


def learning_rate(c: Config, steps: int, total: int) -> float:
    return c.learning_rate * (1.0 - min(steps, total) / total) if c.anneal_lr else c.learning_rate


def apply_gradient(local_model, shared_params, optimizer, c: Config) -> None:
    """Clip θ''s gradient and step the shared optimizer on θ with it."""
    if c.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(local_model.parameters(), c.max_grad_norm)
    for local, shared in zip(local_model.parameters(), shared_params):
        shared.grad = local.grad  # this update's tensor, assigned every time: never a stale one
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class A3CWorker:
    """One actor-learner: its own env copies (seeded ``seed + rank * n_envs + i``) and local model θ'.

    Local backend: ``model`` and ``opt_state`` are in shared memory and the worker steps them
    itself (``run``). Ray backend: the worker only computes gradients (``gradient``).
    """

    def __init__(self, rank: int, env_factory, config: Config, seed: int, model, opt_state=None,
                 steps=None, stop=None, events=None, normalizers: Normalizers | None = None):
        torch.set_num_threads(config.torch_threads)
        seed_everything(seed + rank)  # each worker samples its own actions
        # steps: one lock-free slot per worker (the global count is their sum); stop: a shared flag.
        # No locks: a worker killed inside a critical section would leave the others waiting forever.
        self.rank, self.config, self.steps, self.stop, self.events = rank, config, steps, stop, events
        self.shared = model
        self.local = copy.deepcopy(model)  # θ': private, never in shared memory
        # Local backend: the learner's statistics, in shared memory, updated by every worker's envs.
        normalizers = normalizers or Normalizers(env_factory.spaces()[1], norm_obs=False, norm_reward=False,
                                                 gamma=config.gamma)
        self.collector = Collector(env_factory, self.local, normalizers,
                                   n_envs=config.n_envs, n_steps=config.n_steps, seed=seed, rank=rank)
        self.optimizer = None
        if opt_state is not None:  # Hogwild: a local optimizer object over θ, its statistics shared
            self.shared_params = list(model.parameters())
            self.optimizer = make_optimizer(self.shared_params, config)
            for p, state in zip(self.shared_params, opt_state):
                self.optimizer.state[p] = state
        self.avg_reward: float | None = None

    def _loss(self):
        """Steps 2-3: a rollout with θ' and the gradient of its loss in θ'.grad."""
        batch = self.collector.collect()
        self.local.zero_grad(set_to_none=True)  # a fresh gradient for every update (torch 2.x: None)
        if not batch.valid.any():
            return batch, {}
        loss, stats, self.avg_reward = a2c_loss(self.local, batch, self.config, self.avg_reward)
        loss.backward()
        return batch, stats

    def run(self, total_timesteps: int) -> int:
        """Local backend: update the shared θ until the global step count reaches the budget or the
        learner raises the stop flag. Returns the env steps this worker has collected."""
        c = self.config
        while not self.stop.value and sum(self.steps) < total_timesteps:
            self.local.load_state_dict(self.shared.state_dict())  # θ' ← θ
            batch, stats = self._loss()
            if self.stop.value:  # the learner stopped (solved, Ctrl-C): leave θ as it was evaluated
                break
            if stats:
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(c, sum(self.steps), total_timesteps)
                apply_gradient(self.local, self.shared_params, self.optimizer, c)
            self.steps[self.rank] += batch.rewards.numel()
            self.events.put((self.rank, sum(self.steps), self.steps[self.rank], batch.episode_returns,
                             batch.episode_lengths, batch.reward_rate(), stats))
        return self.steps[self.rank]

    def gradient(self, weights: dict):
        """Ray backend: load θ, collect, return (numpy gradient or None, env steps, episode stats)."""
        self.local.load_state_dict(weights)
        batch, stats = self._loss()
        if self.config.max_grad_norm is not None and stats:
            torch.nn.utils.clip_grad_norm_(self.local.parameters(), self.config.max_grad_norm)
        grads = [p.grad.numpy().copy() for p in self.local.parameters()] if stats else None
        return grads, batch.rewards.numel(), batch.episode_returns, batch.episode_lengths, batch.reward_rate(), stats

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.collector.close()


class A3C:
    algo_name = "a3c"
    Config = Config
    supports_ray = True
    # The learner's optimizer over the shared θ, built when training first uses it: eval and render
    # never need it (rlkit.onpolicy.LazyOptimizer).
    optimizer = LazyOptimizer(lambda self: make_optimizer(self.model.parameters(), self.config))

    def __init__(self, env_id: str, config: Config, *, seed: int = 0, device: str = "auto",
                 env_kwargs: dict | None = None, logger=None, run_dir: Path | None = None,
                 seed_globals: bool = True, backend: str = "local", workers: int | None = None,
                 ray_address: str | None = None):
        if device not in ("auto", "cpu"):
            raise UsageError(f"--device {device}: a3c's workers share a model in CPU memory; use --device cpu")
        setup_agent(self, env_id, config, seed=seed, device="cpu", env_kwargs=env_kwargs, logger=logger,
                    run_dir=run_dir, seed_globals=seed_globals, collector=False)
        self.parts.normalizers.share_memory()  # norm_obs / norm_reward: one set for every worker
        self.avg_reward = None  # each worker keeps its own ρ̄ (objective: average)
        self.set_backend(backend, workers, ray_address)
        self.worker_pids: list[int] = []
        self.worker_restarts = 0

    # --- the algorithm -------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None) -> A3C:
        """Run the workers until ``total_timesteps`` env steps (over all workers) or until the
        callback says stop; evaluate / log / checkpoint from this process meanwhile."""
        if self.num_timesteps >= total_timesteps:
            return self
        run = self._learn_ray if self.backend == "ray" else self._learn_local
        return run(total_timesteps, callback)

    def _learn_local(self, total_timesteps: int, callback) -> A3C:
        import multiprocessing as mp

        from rlkit.workers import WorkerError, WorkerGroup

        ctx = mp.get_context("spawn")
        steps = ctx.Array("q", self.n_workers, lock=False)
        steps[0] = self.num_timesteps  # a resumed run counts on from its checkpoint
        stop, events = ctx.RawValue("b", 0), ctx.Queue()
        self.model.share_memory()
        args = (self.parts.env_factory, self.config, self.seed, self.model, optimizer_state(self.optimizer),
                steps, stop, events, self.parts.normalizers)
        with WorkerGroup(A3CWorker, args, n_workers=self.n_workers, backend="local", in_process=False) as group:
            self.worker_pids = group.broadcast("pid")
            for rank in range(self.n_workers):
                group.start(rank, "run", total_timesteps)
            running = set(range(self.n_workers))
            stopped = None  # (θ, statistics) the callback saw when it said stop
            try:
                while running:
                    try:
                        done = group.next_done(timeout=0.05)
                    except WorkerError as err:  # raised or was killed: replace it, the others go on
                        self._restart(group, err, running, total_timesteps, stop)
                        continue
                    if done is not None:
                        running.discard(done[0])
                    self._drain(events, log=stopped is None)
                    if stopped is not None:  # what the workers still finish after a stop counts for nothing
                        continue
                    self.num_timesteps = int(sum(steps))
                    if callback is not None and not stop.value:
                        with self._held() as held:  # the callback sees one θ, not one the workers move
                            go_on = callback.on_step(self.num_timesteps, self)
                        if not go_on:
                            stop.value = 1
                            stopped = held
            finally:
                stop.value = 1  # Ctrl-C or an error: every worker ends its update and returns
        self._drain(events, log=stopped is None)
        if stopped is None:
            self.num_timesteps = int(sum(steps))
        else:  # no update lands after the stop: θ is the one the callback evaluated and committed
            self._restore(stopped)
        return self

    @contextlib.contextmanager
    def _held(self):
        """θ and the normalisation statistics as they are now, copied to private memory, stand in for
        the shared ones while the callback runs: the Hogwild workers go on updating the shared θ, and
        the callback evaluates, stages as best and checkpoints this one θ. Yields (model, normalizers)."""
        live_model, live_norm = self.parts.model, self.parts.normalizers
        still = getattr(self, "_still", None)
        if still is None:
            still = self._still = copy.deepcopy(live_model)  # private: a deep copy is not in shared memory
        still.load_state_dict(live_model.state_dict())
        still_norm = live_norm.frozen_copy()
        self.model = self.parts.model = still
        self.parts.normalizers = still_norm
        try:
            yield still, still_norm
        finally:
            self.model = self.parts.model = live_model
            self.parts.normalizers = live_norm

    def _restore(self, held) -> None:
        """After the callback said stop: the shared θ and statistics go back to the ones it saw, so the
        updates of workers that were in flight do not land (``num_timesteps`` stays the stop's step)."""
        model, normalizers = held
        self.parts.model.load_state_dict(model.state_dict())
        self.parts.normalizers.load_state(normalizers.state())

    def _restart(self, group, err, running: set, total_timesteps: int, stop) -> None:
        """Replace a worker that raised or died. Every failure counts against the run's budget of
        MAX_RESTARTS, a replacement that fails while it starts (or before its first call) included;
        the one after the budget ends the run with its error."""
        import sys

        from rlkit.workers import WorkerError

        while True:
            if self.worker_restarts >= MAX_RESTARTS:
                raise err
            self.worker_restarts += 1
            print(f"a3c: {err}; restarting it ({self.worker_restarts} of at most {MAX_RESTARTS} restarts)",
                  file=sys.stderr)
            try:
                group.restart(err.rank)
                self.worker_pids[err.rank] = group.pid(err.rank)
                if stop.value:
                    running.discard(err.rank)
                else:
                    group.start(err.rank, "run", total_timesteps)
                return
            except WorkerError as again:  # the replacement died too
                err = again

    def _learn_ray(self, total_timesteps: int, callback) -> A3C:
        from rlkit.workers import WorkerGroup

        args = (self.parts.env_factory, self.config, self.seed, copy.deepcopy(self.model))
        params = list(self.model.parameters())
        with WorkerGroup(A3CWorker, args, n_workers=self.n_workers, backend="ray",
                         ray_address=self.ray_address) as group:
            for rank in range(self.n_workers):
                group.start(rank, "gradient", self.model.state_dict())
            running = set(range(self.n_workers))
            go_on = True
            while running:
                done = group.next_done(timeout=None)
                rank, (grads, n, ep_returns, ep_lengths, rate, stats) = done
                running.discard(rank)
                if not go_on:  # stopped (solved): the evaluated θ stays as it is
                    continue
                if grads is not None:  # apply as it arrives: no barrier between workers
                    for g in self.optimizer.param_groups:
                        g["lr"] = learning_rate(self.config, self.num_timesteps, total_timesteps)
                    for p, grad in zip(params, grads):
                        p.grad = torch.tensor(grad)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.num_timesteps += n
                self.worker_steps[rank] += n
                self.logger.episodes(ep_returns, ep_lengths)
                self._record(stats, rate, self.num_timesteps)
                if callback is not None and go_on:
                    go_on = callback.on_step(self.num_timesteps, self)
                if go_on and self.num_timesteps < total_timesteps:
                    group.start(rank, "gradient", self.model.state_dict())  # θ to this worker only
                    running.add(rank)
        return self

    # --- logging -------------------------------------------------------------------------
    def _drain(self, events, log: bool = True) -> None:
        """Log what the workers reported since the last call, as one point: a worker reports every
        update (hundreds a second), more than TensorBoard or this process should handle one by one.
        ``log=False`` (after a stop) only empties the queue."""
        import queue

        batch = []
        while True:
            try:
                batch.append(events.get_nowait())
            except queue.Empty:
                break
        if not batch or not log:
            return
        for rank, _, done, ep_returns, ep_lengths, _, _ in batch:
            self.worker_steps[rank] = done
            self.logger.episodes(ep_returns, ep_lengths)
        step = max(event[1] for event in batch)
        stats = [event[6] for event in batch if event[6]]
        mean = {k: float(np.mean([s[k] for s in stats if s.get(k) is not None] or [np.nan])) for k in stats[0]} \
            if stats else {}
        self._record(mean, float(np.mean([event[5] for event in batch])), step)

    def _record(self, stats: dict, rate: float, step: int) -> None:
        self.logger.scalars(stats, step)
        for rank, steps in enumerate(self.worker_steps):
            self.logger.scalar(f"workers/{rank}/steps", steps, step)
        now = time.perf_counter()
        last_t, last_step = getattr(self, "_last_record", (None, None))
        if last_t is not None and now - last_t >= 1.0:  # over at least a second: a steady figure
            per_update = self.config.n_envs * self.config.n_steps
            self.logger.scalar("time/updates_per_s", (step - last_step) / per_update / (now - last_t), step)
            self._last_record = (now, step)
        elif last_t is None:
            self._last_record = (now, step)
        self.logger.rollout_summary(step, rate if self.continuing else None)

    # --- the agent protocol --------------------------------------------------------------
    def set_backend(self, backend: str = "local", workers: int | None = None, ray_address: str | None = None) -> None:
        """Hogwild processes (local) or Ray actors; a resumed run calls it with its config.yaml's settings."""
        if backend == "ray" and (self.config.norm_obs or self.config.norm_reward):
            raise UsageError("a3c's norm_obs / norm_reward need the local backend: its workers share the "
                             "statistics in this machine's memory")
        self.backend, self.ray_address = backend, ray_address
        self.n_workers = int(workers or self.config.workers or os.cpu_count() or 1)
        self.worker_steps = [0] * self.n_workers

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.parts.predict(obs, deterministic)

    def save(self, path: Path) -> None:
        save_agent(self, path)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> A3C:
        return load_agent(cls, path, device)

    def close(self) -> None:
        self.parts.close()
