"""rlkit's PPO and A2C against Stable-Baselines3's, update by update, at equal settings.

Each case builds SB3's algorithm and rlkit's agent with the same hyperparameters and network shape
(separate actor and critic torsos, the same activation), copies SB3's initial parameters into rlkit's
``ActorCritic`` (so the initialisation scheme no longer matters) and drives both through the same env
steps: every env copy takes the same precomputed actions (``Schedule``). SB3 collects through its own
``collect_rollouts`` (VecNormalize, truncation bootstrapping through ``terminal_observation``, its
RolloutBuffer and GAE), only the policy's sampling replaced by the schedule; rlkit through its own
``Rollout`` and normalisers. Each side then updates on its own rollout (``train()``, ``update(batch)``),
with the same minibatch order (the permutations forced on both). After each of two updates the test
asserts, to float32 tolerance: the same observations, rewards, log-probs and values; the same
advantages and returns; the same normaliser statistics (observation mean / var / count, return mean /
var / count); the same logged losses (policy, value, entropy; PPO's approx KL and clip fraction too);
the same parameters.

Deliberate differences, which the comparisons take into account (docs/architecture.md §3):

- NEXT_STEP autoreset: rlkit's rollout holds a reset step after each episode end (``valid`` False,
  out of every loss) where SB3's holds none, so a rollout with k episode ends per env copy is
  ``n_steps + k`` steps long in rlkit for SB3's ``n_steps`` transitions. Compared on valid steps.
- Truncation: SB3 adds γ·V(terminal observation) to the stored reward; rlkit bootstraps with
  ``values[t + 1]`` (the reset step holds the final observation) inside GAE. The advantages and
  returns agree; the stored reward of a truncation step differs, so rewards are compared elsewhere.
- With ``norm_obs``, a truncated episode's final observation is normalised before the new episode's
  first observation enters the statistics (SB3: after it), so V(final observation) differs by that
  one sample's effect on the statistics: no case combines ``norm_obs`` with a truncation.
- ``objective: average`` (differential rewards) has no SB3 counterpart and is not exercised.
- Not an rlkit difference but the test's: rlkit steps CartPole-v1 with Gymnasium's native
  ``CartPoleVectorEnv``, whose copies draw their states from one generator, SB3 a DummyVecEnv of
  single envs seeded ``seed + i``; the cases use ``CARTPOLE``, the single-env CartPole registered
  without a vector entry point, so both sides step the same episodes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C as SB3A2C
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from agents.actor_critic import ActorCritic as A2CAgent
from agents.ppo import PPO
from rlkit.returns import gae

HIDDEN = [32, 32]
CARTPOLE = "rlkit-test/SingleCartPole-v1"  # CartPole-v1 without its native vector env (module docstring)
if CARTPOLE not in gym.registry:
    gym.register(CARTPOLE, entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv", max_episode_steps=500)
TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32, two implementations of the same arithmetic


# --- the same env steps on both sides --------------------------------------------------------------
class Schedule:
    """Precomputed actions, one row per env copy: each copy takes the next action of its row at each
    of its transitions (an rlkit reset step takes none: its action is ignored)."""

    def __init__(self, actions: np.ndarray):
        self.actions, self.next = np.asarray(actions), np.zeros(len(actions), dtype=int)

    def take(self, envs: np.ndarray) -> np.ndarray:
        out = self.actions[envs, self.next[envs]]
        self.next[envs] += 1
        return out


def cartpole_actions(seed: int, limit: int, n: int, *, fall_first: bool, noise: float = 0.0):
    """CartPole actions for ``n`` transitions of the copy seeded ``seed``: push left until the pole
    falls (``fall_first``), then balance it (flipped with probability ``noise``); and where its
    episodes end, as (transition index, "term" | "trunc")."""
    rng = np.random.default_rng(seed)
    env = gym.make(CARTPOLE, max_episode_steps=limit)
    obs, _ = env.reset(seed=seed)
    actions, ends, balancing = [], [], not fall_first
    for i in range(n):
        a = int(3 * obs[2] + obs[3] > 0) if balancing else 0
        if balancing and rng.random() < noise:
            a = 1 - a
        obs, _, terminated, truncated, _ = env.step(a)
        actions.append(a)
        if terminated or truncated:
            ends.append((i, "term" if terminated else "trunc"))
            balancing = True
            obs, _ = env.reset()
    env.close()
    return actions, ends


def pendulum_actions(seed: int, n_envs: int, n: int) -> np.ndarray:
    """Uniform torques a little beyond the Box (both sides clip them for the env, store them unclipped)."""
    return np.random.default_rng(seed).uniform(-2.5, 2.5, (n_envs, n, 1)).astype(np.float32)


# --- the pair of learners ---------------------------------------------------------------------------
@dataclass
class Pair:
    algo: str                     # "ppo" | "a2c"
    env_id: str
    n_envs: int
    n_steps: int                  # SB3's, transitions per copy per rollout
    ends: int = 0                 # episode ends per copy per rollout: rlkit's rollout is n_steps + ends long
    hp: dict = field(default_factory=dict)      # same name, same meaning on both sides
    policy: dict = field(default_factory=dict)  # log_std_init, ortho_init, use_sde (SB3: policy_kwargs / kwarg)
    norm: dict | None = None      # {"obs": bool, "reward": bool, "clip": float}
    limit: int | None = None      # TimeLimit of the training episodes
    seed: int = 0

    def build(self):
        gamma = self.hp.get("gamma", 0.99)
        venv = make_vec_env(self.env_id, n_envs=self.n_envs, seed=self.seed,
                            env_kwargs={"max_episode_steps": self.limit} if self.limit else None)
        self.vecnorm = None
        if self.norm:
            venv = self.vecnorm = VecNormalize(venv, norm_obs=self.norm["obs"], norm_reward=self.norm["reward"],
                                               clip_obs=self.norm["clip"], clip_reward=self.norm["clip"], gamma=gamma)
        policy_kwargs = {"net_arch": {"pi": HIDDEN, "vf": HIDDEN}, "activation_fn": torch.nn.Tanh,
                         "log_std_init": self.policy.get("log_std_init", 0.0),
                         "ortho_init": self.policy.get("ortho_init", True)}
        use_sde = self.policy.get("use_sde", False)
        if self.algo == "ppo":
            self.sb3 = SB3PPO("MlpPolicy", venv, n_steps=self.n_steps, use_sde=use_sde, policy_kwargs=policy_kwargs,
                              seed=self.seed, device="cpu", **self.hp)
            cls, extra = PPO, {"anneal_lr": False}
        else:
            self.sb3 = SB3A2C("MlpPolicy", venv, n_steps=self.n_steps, use_sde=use_sde, policy_kwargs=policy_kwargs,
                              use_rms_prop=True, rms_prop_eps=1e-5, seed=self.seed, device="cpu", **self.hp)
            cls, extra = A2CAgent, {"anneal_lr": False, "optimizer": "rmsprop", "rmsprop_alpha": 0.99,
                                    "optim_eps": 1e-5}
        _, self.callback = self.sb3._setup_learn(10**9)
        norm = self.norm or {"obs": False, "reward": False, "clip": None}
        config = cls.Config(n_envs=self.n_envs, n_steps=self.n_steps + self.ends, hidden=HIDDEN, activation="tanh",
                            shared=False, use_sde=use_sde, norm_obs=norm["obs"], norm_reward=norm["reward"],
                            norm_clip=norm["clip"], train_time_limit=self.limit, **self.policy_fields(), **extra,
                            **self.hp)
        self.rl = cls(self.env_id, config, seed=self.seed, device="cpu")
        self.names = sb3_names(self.rl.model, self.sb3.policy)
        sb3_state = self.sb3.policy.state_dict()
        self.rl.model.load_state_dict({k: sb3_state[v].clone() for k, v in self.names.items()})
        return self

    def policy_fields(self) -> dict:
        return {k: v for k, v in self.policy.items() if k != "use_sde"}

    def close(self):
        self.rl.close()
        self.sb3.env.close()


def sb3_names(model, sb3_policy) -> dict:
    """rlkit ActorCritic state-dict name -> SB3 ActorCriticPolicy state-dict name, covering both."""
    out = {}
    for name in model.state_dict():
        sb3 = (name.replace("actor_torso.net.", "mlp_extractor.policy_net.")
               .replace("critic_torso.net.", "mlp_extractor.value_net.")
               .replace("head.logits.", "action_net.").replace("head.mean.", "action_net.")
               .replace("head.log_std", "log_std"))
        out[name] = "value_net." + sb3[len("value."):] if sb3.startswith("value.") else sb3
    assert sorted(out.values()) == sorted(sb3_policy.state_dict()), "the two networks differ in layout"
    return out


def collect_rlkit(pair: Pair, schedule: Schedule):
    """One rlkit rollout through its own collector's Rollout and normalisers, actions from ``schedule``."""
    rollout, model = pair.rl.parts.collector.rollout, pair.rl.model

    def policy(obs):
        actions = torch.zeros_like(rollout.buf.actions[0])
        live = (~rollout.resetting).nonzero().flatten().numpy()  # a reset step's action is ignored
        actions[live] = torch.as_tensor(schedule.take(live), dtype=actions.dtype)
        dist, value = model(obs)
        return actions, dist.log_prob(actions), value

    return rollout.collect(policy)


def collect_sb3(pair: Pair, schedule: Schedule) -> None:
    """One SB3 rollout through its own ``collect_rollouts``, actions from ``schedule``."""
    policy, every = pair.sb3.policy, np.arange(pair.n_envs)

    def forward(obs, deterministic=False):
        actions = torch.as_tensor(schedule.take(every))
        values, log_prob, _ = policy.evaluate_actions(obs, actions)
        return actions, values, log_prob

    policy.forward = forward
    try:
        assert pair.sb3.collect_rollouts(pair.sb3.env, pair.callback, pair.sb3.rollout_buffer, pair.n_steps)
    finally:
        del policy.forward


def force_minibatch_order(monkeypatch, pair: Pair, batch, n_epochs: int, rng) -> None:
    """The same random minibatches on both sides: a permutation of the transitions per epoch, given to
    rlkit in its order (time-major over valid steps) and to SB3's RolloutBuffer in its (copy-major)."""
    valid, seen, order = batch.valid.numpy(), np.zeros(pair.n_envs, dtype=int), []
    for t in range(valid.shape[0]):
        for n in np.flatnonzero(valid[t]):
            order.append(n * pair.n_steps + seen[n])  # this transition's index in SB3's flattened buffer
            seen[n] += 1
    # A2C's one full-batch step: rlkit takes the rollout in its order, SB3's buffer is given the same
    perms = [rng.permutation(len(order)) if pair.algo == "ppo" else np.arange(len(order)) for _ in range(n_epochs)]
    rl_perms = [torch.as_tensor(p) for p in perms]
    sb3_perms = [np.asarray(order)[p] for p in perms]

    def randperm(n, *args, **kwargs):
        assert n == len(order)
        return rl_perms.pop(0)

    def permutation(n):
        assert n == len(order)
        return sb3_perms.pop(0)

    monkeypatch.setattr(torch, "randperm", randperm)
    monkeypatch.setattr(np.random, "permutation", permutation)
    return rl_perms, sb3_perms


def close(a, b, what: str) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), **TOL,
                               err_msg=what)


def compare_rollouts(pair: Pair, b) -> None:
    """Same transitions, the same advantages and returns on valid steps, the same statistics."""
    buf, c = pair.sb3.rollout_buffer, pair.rl.config
    valid = b.valid.numpy()
    with torch.no_grad():
        last_value = pair.rl.model.get_value(b.next_obs)
        advantages, returns = gae(b.rewards, b.values, b.terminated, b.truncated, b.valid, last_value,
                                  c.gamma, c.gae_lambda)
    for n in range(pair.n_envs):
        steps = np.flatnonzero(valid[:, n])
        assert len(steps) == pair.n_steps, f"copy {n}: {len(steps)} valid steps, SB3 has {pair.n_steps}"
        close(b.obs[steps, n], buf.observations[:, n], "observations")
        close(b.actions[steps, n].reshape(pair.n_steps, -1), buf.actions[:, n], "actions")
        cut = b.truncated[steps, n].numpy()  # SB3 stored r + γ V(terminal obs) there
        close(b.rewards[steps, n][~cut], buf.rewards[:, n][~cut], "rewards")
        close(b.logprobs[steps, n], buf.log_probs[:, n], "old log-probs")
        close(b.values[steps, n], buf.values[:, n], "old values")
        close(advantages[steps, n], buf.advantages[:, n], "advantages")
        close(returns[steps, n], buf.returns[:, n], "returns")
    if pair.norm:
        ours, theirs = pair.rl.parts.normalizers, pair.vecnorm
        for name, mine, sb3 in (("obs", ours.obs_rms, "obs_rms"), ("return", ours.return_rms, "ret_rms")):
            assert (mine is None) == (not pair.norm[name.replace("return", "reward")])
            if mine is None:
                continue
            sb3 = getattr(theirs, sb3)
            close(mine.mean, sb3.mean, f"{name} mean")
            close(mine.var, sb3.var, f"{name} var")
            assert mine.count == pytest.approx(sb3.count, abs=1e-9), f"{name} count"


LOSSES = {"ppo": ("policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction", "loss"),
          "a2c": ("policy_loss", "value_loss", "entropy_loss")}


def compare_updates(pair: Pair, stats: dict) -> None:
    logged = pair.sb3.logger.name_to_value
    for key in LOSSES[pair.algo]:
        close(stats[f"train/{key}"], logged[f"train/{key}"], key)
    sb3_state = pair.sb3.policy.state_dict()
    for name, value in pair.rl.model.state_dict().items():
        close(value, sb3_state[pair.names[name]], f"parameter {name}")


def run(monkeypatch, pair: Pair, actions: np.ndarray, updates: int = 2, check=None) -> list[int]:
    """``updates`` rounds of: both collect one rollout from ``actions``, compare, both update, compare.
    Returns, per PPO update, how many epochs were left when it stopped (0: none; > 0: target_kl)."""
    rl_schedule, sb3_schedule = Schedule(actions), Schedule(actions)
    epochs_left = []
    rng = np.random.default_rng(pair.seed)
    try:
        for _ in range(updates):
            b = collect_rlkit(pair, rl_schedule)
            collect_sb3(pair, sb3_schedule)
            if check is not None:
                check(b)
            compare_rollouts(pair, b)
            before = {k: v.clone() for k, v in pair.rl.model.state_dict().items()}
            with monkeypatch.context() as m:
                rl_perms, sb3_perms = force_minibatch_order(m, pair, b, pair.hp.get("n_epochs", 1), rng)
                stats = pair.rl.update(b)
                pair.sb3.train()
            whole = pair.hp.get("batch_size", 64) >= pair.n_envs * pair.n_steps  # rlkit draws no permutation then
            if pair.algo == "ppo" and not whole:  # as many epochs began on both sides (all unless target_kl stopped)
                assert len(rl_perms) == len(sb3_perms)
                epochs_left.append(len(rl_perms))
            compare_updates(pair, stats)
            moved = max((v - before[k]).abs().max().item() for k, v in pair.rl.model.state_dict().items())
            assert moved > 1e3 * TOL["atol"]  # an update that changed nothing would prove nothing
    finally:
        pair.close()
    return epochs_left


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*mini-batch size.*")
        yield


PPO_HP = {"learning_rate": 1e-3, "gamma": 0.98, "gae_lambda": 0.9, "clip_range": 0.2, "ent_coef": 0.01,
          "vf_coef": 0.5, "max_grad_norm": 0.5, "normalize_advantage": True}


# --- the cases ---------------------------------------------------------------------------------------
def test_ppo_discrete_with_minibatches(monkeypatch):
    """PPO on CartPole, 2 copies x 32 steps, 3 epochs of minibatches of 16 in a forced random order."""
    actions = [cartpole_actions(seed, 500, 64, fall_first=False, noise=0.3) for seed in (0, 1)]
    assert not any(ends for _, ends in actions)
    pair = Pair("ppo", CARTPOLE, n_envs=2, n_steps=32, hp={**PPO_HP, "n_epochs": 3, "batch_size": 16}).build()
    assert run(monkeypatch, pair, np.array([a for a, _ in actions])) == [0, 0]


def test_ppo_one_minibatch_holding_the_rollout_is_not_shuffled(monkeypatch):
    """batch_size >= the rollout: rlkit takes the rollout as it is, in one minibatch per epoch (no
    permutation, no gathers: the mean over a minibatch does not depend on its order), SB3 shuffles it;
    the same losses and parameters after each of 3 epochs' steps, to float tolerance."""
    actions = [cartpole_actions(seed, 500, 32, fall_first=False, noise=0.3) for seed in (0, 1)]
    pair = Pair("ppo", CARTPOLE, n_envs=2, n_steps=16, hp={**PPO_HP, "n_epochs": 3, "batch_size": 64}).build()
    run(monkeypatch, pair, np.array([a for a, _ in actions]))


def test_ppo_value_clipping_and_target_kl(monkeypatch):
    """``clip_range_vf`` (SB3's: the value prediction kept within ±clip_range_vf of the rollout's value,
    then the plain MSE) and ``target_kl`` (SB3's: checked per minibatch before its step; above 1.5
    target_kl that minibatch is not applied and the update ends), on Pendulum with minibatches of 16;
    the KL bound stops both updates before their last epoch, at the same minibatch on both sides."""
    pair = Pair("ppo", "Pendulum-v1", n_envs=2, n_steps=32,
                hp={**PPO_HP, "learning_rate": 3e-3, "n_epochs": 4, "batch_size": 16, "clip_range_vf": 0.05,
                    "target_kl": 0.002}).build()
    assert all(left > 0 for left in run(monkeypatch, pair, pendulum_actions(3, 2, 64)))


def test_ppo_box_with_normalisation_and_clipping(monkeypatch):
    """PPO on Pendulum with observation and reward normalisation, both clipped (VecNormalize's clip_obs
    and clip_reward; a small bound so the clip is hit); the statistics are compared after each rollout."""
    clip = 1.5
    pair = Pair("ppo", "Pendulum-v1", n_envs=2, n_steps=32, hp={**PPO_HP, "n_epochs": 2, "batch_size": 32},
                norm={"obs": True, "reward": True, "clip": clip}).build()

    hits = []

    def clipped(b):
        hits.append(((b.obs.abs() == clip).any().item(), (b.rewards.abs() == clip).any().item()))

    run(monkeypatch, pair, pendulum_actions(0, 2, 64), check=clipped)
    assert all(map(any, zip(*hits)))  # both clips were hit (the rewards' early on, before the statistics settle)


def test_ppo_gsde(monkeypatch):
    """PPO with gSDE on Pendulum (the RL Zoo's Pendulum-v1 PPO uses it): the state-dependent noise's
    (features x actions) log std, torch's default init, log-probs from the Normal of the noise's variance."""
    pair = Pair("ppo", "Pendulum-v1", n_envs=2, n_steps=16, hp={**PPO_HP, "n_epochs": 2, "batch_size": 16},
                policy={"use_sde": True, "log_std_init": -2.0, "ortho_init": False}).build()
    run(monkeypatch, pair, pendulum_actions(1, 2, 32))


def _one_end_per_rollout(pair: Pair, kinds: list[str]):
    """A check that each copy's rollout holds one episode end of the given kind (per rollout, in turn)."""
    rollouts = iter(kinds)

    def check(b):
        kind = next(rollouts)
        flags = (b.terminated if kind == "term" else b.truncated).sum(0)
        other = (b.truncated if kind == "term" else b.terminated).sum(0)
        assert flags.tolist() == [1] * pair.n_envs and other.tolist() == [0] * pair.n_envs
        assert (~b.valid).sum(0).tolist() == [1] * pair.n_envs  # the reset step after it

    return check


def test_ppo_truncation_and_termination(monkeypatch):
    """Two CartPole copies that push the pole over (termination, first rollout), then balance it until
    the 16-step TimeLimit cuts the episode (truncation, second rollout). SB3 bootstraps the truncation
    through ``terminal_observation`` (r + γ V in the buffer), rlkit through the reset step's value:
    the advantages and returns on valid steps must agree."""
    actions = [cartpole_actions(seed, 16, 32, fall_first=True) for seed in (0, 1)]
    assert all([kind for _, kind in ends] == ["term", "trunc"] and ends[0][0] <= 14 and 16 <= ends[1][0] <= 30
               for _, ends in actions)
    pair = Pair("ppo", CARTPOLE, n_envs=2, n_steps=16, ends=1, limit=16,
                hp={**PPO_HP, "n_epochs": 2, "batch_size": 8}).build()
    run(monkeypatch, pair, np.array([a for a, _ in actions]), check=_one_end_per_rollout(pair, ["term", "trunc"]))


@pytest.mark.parametrize("norm_obs", [False, True], ids=["norm_reward", "norm_obs+norm_reward"])
def test_reward_normaliser_across_episode_ends(monkeypatch, norm_obs):
    """The reward normaliser over a termination (+1 reward on the terminal step) and a truncation: SB3's
    order (add the reward, update the return statistics, scale and clip, then restart the return at any
    episode end). Without norm_obs the truncation is in the second rollout; with it (see the module
    docstring) only the termination, where the final observation must not enter the statistics."""
    actions, ends = cartpole_actions(0, 16, 32, fall_first=True)
    assert [kind for _, kind in ends] == ["term", "trunc"] and ends[0][0] <= 14 and 16 <= ends[1][0] <= 30
    pair = Pair("ppo", CARTPOLE, n_envs=1, n_steps=16, ends=1, limit=16,
                hp={**PPO_HP, "n_epochs": 2, "batch_size": 16},
                norm={"obs": norm_obs, "reward": True, "clip": 10.0}).build()
    kinds = ["term"] if norm_obs else ["term", "trunc"]
    run(monkeypatch, pair, np.array([actions]), updates=len(kinds), check=_one_end_per_rollout(pair, kinds))


A2C_HP = {"learning_rate": 7e-4, "gamma": 0.99, "gae_lambda": 1.0, "ent_coef": 0.01, "vf_coef": 0.5,
          "max_grad_norm": 0.5, "normalize_advantage": False}


def test_a2c_rmsprop_discrete(monkeypatch):
    """A2C (RMSprop, n-step returns) on CartPole, 4 copies x 5 steps, two updates."""
    actions = [cartpole_actions(seed, 500, 10, fall_first=False, noise=0.3) for seed in range(4)]
    assert not any(ends for _, ends in actions)
    pair = Pair("a2c", CARTPOLE, n_envs=4, n_steps=5, hp=A2C_HP).build()
    run(monkeypatch, pair, np.array([a for a, _ in actions]))


def test_a2c_rmsprop_box_as_the_zoo_pendulum(monkeypatch):
    """A2C (RMSprop) on Pendulum as the RL Zoo trains it: gSDE, torch's default init, log std -2, GAE
    0.9, vf_coef 0.4, observation and reward normalisation clipped at 10; 4 copies x 8 steps."""
    pair = Pair("a2c", "Pendulum-v1", n_envs=4, n_steps=8, hp={**A2C_HP, "gae_lambda": 0.9, "vf_coef": 0.4},
                policy={"use_sde": True, "log_std_init": -2.0, "ortho_init": False},
                norm={"obs": True, "reward": True, "clip": 10.0}).build()
    run(monkeypatch, pair, pendulum_actions(2, 4, 16))
