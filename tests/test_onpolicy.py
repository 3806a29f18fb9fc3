"""The on-policy parts (rlkit.onpolicy): collectors composed around a given model, worker seeds,
learner-owned normaliser statistics, and loading that leaves the process's RNGs alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.actor_critic import ActorCritic
from agents.ppo import PPO
from rlkit.onpolicy import Collector


def _cfg(cls, **over):
    return cls.Config(**{"n_envs": 2, "n_steps": 8, **over})


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "CartPole-v1"])  # SyncVectorEnv / native vector env
def test_worker_seeds_do_not_overlap(env_id):
    """The collector of rank r seeds its vector env with seed + r * n_envs: on a SyncVectorEnv copy i
    then starts like a fresh env reset with seed + r * n_envs + i; on any env no two workers start alike."""
    agent = ActorCritic(env_id, _cfg(ActorCritic), seed=5, device="cpu")
    p = agent.parts
    workers = [Collector(p.env_factory, p.model, p.normalizers, n_envs=2, n_steps=8, seed=5, rank=r)
               for r in (1, 2)]
    try:
        starts = {0: p.collector.rollout.obs.numpy()}
        starts.update({r: w.rollout.obs.numpy() for r, w in zip((1, 2), workers)})
        if gym.spec(env_id).vector_entry_point is None:
            for r, obs in starts.items():
                for i in range(2):
                    env = gym.make(env_id)
                    want, _ = env.reset(seed=5 + r * 2 + i)
                    env.close()
                    np.testing.assert_array_equal(obs[i], want)
        flat = np.concatenate(list(starts.values()))
        assert len({tuple(row) for row in flat}) == 6  # six different start states
    finally:
        for w in workers:
            w.close()
        agent.close()


def test_learn_loop_takes_the_collector_it_is_given():
    """A collector built around the learner's model and normalisers (as a worker's would be)
    feeds the update, and its observations update the learner's own statistics."""
    agent = PPO("CartPole-v1", _cfg(PPO, n_steps=16, batch_size=32, n_epochs=1, norm_obs=True), seed=0, device="cpu")
    p = agent.parts
    worker = Collector(p.env_factory, p.model, p.normalizers, n_envs=2, n_steps=16, seed=0, rank=1)
    calls, ends = [], []

    class Counting:
        def collect(self):
            calls.append(1)
            batch = worker.collect()
            ends.append(int((batch.terminated | batch.truncated).sum()))
            return batch

    try:
        own_obs = p.collector.rollout.obs.clone()
        count_before = p.normalizers.obs_rms.count
        from rlkit.onpolicy import learn_loop

        learn_loop(agent, Counting(), 3 * 32)
        assert len(calls) == 3 and agent.num_timesteps == 96
        assert torch.equal(p.collector.rollout.obs, own_obs)  # the agent's own envs never stepped
        # the learner owns them; an ended episode's final observation is not counted (as VecNormalize)
        assert p.normalizers.obs_rms.count == pytest.approx(count_before + 3 * 32 - sum(ends))
    finally:
        worker.close()
        agent.close()


def test_load_leaves_global_rng_alone_until_training(tmp_path):
    """eval/render load a checkpoint without reseeding the process; training on restores its RNG."""
    agent = PPO("CartPole-v1", _cfg(PPO, n_steps=16, batch_size=32, n_epochs=1), seed=3, device="cpu")
    agent.learn(32)
    agent.save(tmp_path / "a.pt")
    saved_next = torch.rand(3)  # what the saved run would draw next
    agent.close()

    torch.manual_seed(1234)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    loaded = PPO.load(tmp_path / "a.pt")
    try:
        assert torch.equal(torch.get_rng_state(), before)
        np.testing.assert_array_equal(np.random.get_state()[1], np_before)
        loaded.learn(32)  # num_timesteps is already 32: no update, but the saved RNG state is back
        assert torch.equal(torch.rand(3), saved_next)
    finally:
        loaded.close()


def test_reward_rate_in_env_units_under_norm_reward():
    """NormalizeReward rescales the rewards the loss sees, never the logged reward rate."""
    agent = PPO("CartPole-v1", _cfg(PPO, n_steps=32, norm_reward=True), seed=0, device="cpu")
    try:
        b = agent.parts.collector.collect()
        assert not torch.allclose(b.rewards[b.valid], torch.ones(()))  # the loss sees scaled rewards
        assert torch.equal(b.env_rewards[b.valid], torch.ones(int(b.valid.sum())))
        assert b.reward_rate() == 1.0  # CartPole pays 1 per step
    finally:
        agent.close()


def test_norm_clip_bounds_normalised_observations_and_rewards_as_vecnormalize_does():
    """norm_clip c: what the loss sees (and what predict feeds the policy) lies in [-c, c]; without
    it the same collection goes beyond. The logged rewards stay in env units."""
    clip = 0.5
    seen = {}
    for norm_clip in (None, clip):
        agent = PPO("CartPole-v1", _cfg(PPO, n_steps=32, norm_obs=True, norm_reward=True, norm_clip=norm_clip),
                    seed=0, device="cpu")
        try:
            b = agent.parts.collector.collect()
            seen[norm_clip] = (b.obs[b.valid].abs().max().item(), b.rewards[b.valid].abs().max().item())
            assert torch.equal(b.env_rewards[b.valid], torch.ones(int(b.valid.sum())))
            far = np.full((1, 4), 1e3, dtype=np.float32)
            predicted = np.abs(agent.parts.normalizers.normalize_obs(far)).max()
            assert predicted == clip if norm_clip else predicted > 100
        finally:
            agent.close()
    assert seen[clip] == (clip, clip)
    assert min(seen[None]) > clip


def test_learning_rate_decays_to_zero_at_the_runs_own_budget():
    """anneal_lr decays over learn()'s total (the CLI's --steps), not the config's n_timesteps."""
    cfg = _cfg(PPO, n_steps=16, batch_size=32, n_epochs=1, anneal_lr=True, n_timesteps=10**6)
    agent = PPO("CartPole-v1", cfg, seed=0, device="cpu")
    try:
        agent.learn(4 * 32)  # 4 updates: lr at update k is (1 - k/4) * lr0
        assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.25 * cfg.learning_rate)
    finally:
        agent.close()


def test_average_reward_estimate_starts_at_the_first_batch_rate():
    from rlkit.returns import differential_rewards

    rewards = torch.tensor([[2.0, 4.0], [0.0, 6.0]])
    valid = torch.tensor([[True, True], [False, True]])  # the 0 is an autoreset step
    out, rho = differential_rewards(rewards, valid, None, step_size=0.05)
    assert rho == pytest.approx(4.0)
    torch.testing.assert_close(out, rewards - 4.0)
    _, rho = differential_rewards(rewards, valid, rho, step_size=0.5)
    assert rho == pytest.approx(4.0)
    _, rho = differential_rewards(rewards + 2, valid, rho, step_size=0.5)
    assert rho == pytest.approx(5.0)


@pytest.mark.parametrize("cls,env_id,over,native", [
    (PPO, "CartPole-v1", {}, True),                              # gymnasium's native vector env
    (PPO, "Pendulum-v1", {"norm_obs": True, "norm_reward": True}, True),  # envs/classic_vector.py, both normalisers
    (PPO, "Pendulum-v1", {"norm_obs": True, "norm_reward": True}, False),  # SyncVectorEnv (RLKIT_NATIVE_VECTOR=0)
    (ActorCritic, "rlkit/GridWorld-v0", {}, True),               # rlkit's native vector env
    (PPO, "rlkit/Catch-v0", {"frame_stack": 2, "cnn": "compact"}, True),  # pixels, frame stack
], ids=["ppo-cartpole", "ppo-pendulum-norm", "ppo-pendulum-sync", "a2c-gridworld", "ppo-catch-stack"])
def test_exact_resume(cls, env_id, over, native, tmp_path, monkeypatch):
    """Stopped at N of 2N, saved, loaded and run on to 2N == 2N uninterrupted, bit for bit."""
    if not native:
        monkeypatch.setenv("RLKIT_NATIVE_VECTOR", "0")
    small = {PPO: {"n_steps": 16, "batch_size": 32, "n_epochs": 2}, ActorCritic: {"n_steps": 8}}[cls]
    cfg = _cfg(cls, **small, **over)
    per_update = cfg.n_envs * cfg.n_steps
    whole = cls(env_id, cfg, seed=4, device="cpu")
    whole.learn(6 * per_update)
    first = cls(env_id, cfg, seed=4, device="cpu")

    class KillAtHalf:  # stops where a kill would land, inside a learn(6N) call (same LR schedule)
        def on_step(self, num_timesteps, agent):
            return num_timesteps < 3 * per_update

    first.learn(6 * per_update, callback=KillAtHalf())
    assert first.num_timesteps == 3 * per_update
    first.save(tmp_path / "half.pt")
    first.close()
    torch.manual_seed(999)  # whatever ran in between must not matter
    np.random.seed(999)
    resumed = cls.load(tmp_path / "half.pt")
    resumed.learn(6 * per_update)
    try:
        assert resumed.num_timesteps == whole.num_timesteps
        for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
            assert torch.equal(p, q)
    finally:
        whole.close()
        resumed.close()


@pytest.mark.parametrize("env_id", ["LunarLander-v3", "CarRacing-v3"])
def test_a_physics_engine_env_saves_without_env_state_and_resumes(env_id, tmp_path):
    """Box2D keeps the env's state in C++ (and CarRacing's contact listener refers back to its env):
    no plain-data snapshot exists, so the checkpoint holds none and a loaded agent starts new
    episodes, instead of failing to save or restoring half an env."""
    from rlkit.checkpoint import load_checkpoint

    cfg = _cfg(PPO, n_steps=4, batch_size=8, n_epochs=1, cnn="compact")
    agent = PPO(env_id, cfg, seed=0, device="cpu")
    try:
        agent.learn(8)
        assert agent.parts.collector.state() is None
        agent.save(tmp_path / "a.pt")
    finally:
        agent.close()
    state, _ = load_checkpoint(tmp_path / "a.pt")
    assert "collector" not in state
    loaded = PPO.load(tmp_path / "a.pt")
    try:
        loaded.learn(16)
        assert loaded.num_timesteps == 16
    finally:
        loaded.close()


def test_env_state_refuses_a_reference_cycle():
    from rlkit.environments import NotPlainData, env_state

    class Holder:  # stands in for an env helper that keeps a reference to its env
        pass

    Holder.__module__ = "envs.fake"
    a, b = Holder(), Holder()
    a.other, b.other = b, a
    with pytest.raises(NotPlainData, match="cycle"):
        env_state(a)


def test_gsde_noise_is_the_features_times_a_held_matrix_with_the_variance_log_probs_use():
    """gSDE: a sample is mean + f @ W with W held until the next draw, and the Normal that gives
    log-probs and entropy has the noise's own variance, sum_j f_j^2 std_jk^2 (checked by sampling)."""
    from gymnasium import spaces

    from rlkit.networks import ActionHead

    torch.manual_seed(0)
    head = ActionHead(spaces.Box(-1, 1, (2,)), in_dim=3, log_std_init=0.0, sde=True)
    with torch.no_grad():
        head.log_std.copy_(torch.tensor([[-1.0, 0.0], [0.5, -2.0], [0.0, 0.3]]))
    features = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    head.reset_noise(2)
    dist = head(features)
    first, again = dist.sample(), head(features).sample()
    assert torch.equal(first, again)  # held between draws
    mean = dist.mode()
    want = mean + torch.einsum("nj,njk->nk", features, head.exploration)
    torch.testing.assert_close(first, want)
    head.reset_noise(2)
    assert not torch.equal(head(features).sample(), first)

    draws = []
    for _ in range(20000):
        head.reset_noise(2)
        draws.append(head(features).sample())
    noise = torch.stack(draws) - mean
    torch.testing.assert_close(noise.var(0), dist.dists[0].variance, rtol=0.05, atol=1e-3)
    torch.testing.assert_close(noise.mean(0), torch.zeros(2, 2), rtol=0, atol=0.05)
    assert dist.log_prob(first).shape == (2,)


@pytest.mark.parametrize("freq, draws_per_rollout", [(-1, 1), (3, 3)])
def test_collector_draws_gsde_noise_per_rollout_and_every_sample_freq_steps(freq, draws_per_rollout):
    """SB3's schedule: new matrices at the start of each rollout and every sde_sample_freq steps;
    between draws each env copy's noise is its features times its own matrix."""
    agent = PPO("Pendulum-v1", _cfg(PPO, use_sde=True, sde_sample_freq=freq, log_std_init=-1.0), seed=0, device="cpu")
    head = agent.model.head
    draws, draw = [], head.reset_noise

    def counting(copies):
        draws.append(copies)
        draw(copies)

    head.reset_noise = counting
    try:
        for rollout in (1, 2):
            batch = agent.parts.collector.collect()
            assert draws == [2] * draws_per_rollout * rollout
        if freq == -1:  # one matrix per copy for the whole second rollout
            with torch.no_grad():
                features = agent.model.actor_torso(batch.obs.flatten(0, 1)).unflatten(0, (8, 2))
                mean = head.mean(features)
            want = mean + torch.einsum("tnj,njk->tnk", features, head.exploration)
            torch.testing.assert_close(batch.actions, want)
    finally:
        agent.close()


def test_use_sde_on_a_discrete_action_space_is_a_usage_error():
    from rlkit.errors import UsageError

    with pytest.raises(UsageError, match="use_sde needs a continuous"):
        PPO("CartPole-v1", _cfg(PPO, use_sde=True), seed=0, device="cpu")


def _optimizer_states_equal(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(x.keys() == y.keys() and all(torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])) for k in x)
               for x, y in ((a["state"][i], b["state"][i]) for i in a["state"]))


@pytest.mark.parametrize("algo", ["ppo", "actor-critic", "reinforce", "a3c"])
def test_loaded_agent_builds_its_optimizer_on_first_use_with_the_saved_statistics(algo, tmp_path):
    """Loading leaves the optimizer unbuilt (eval and render never need it, and building one imports
    torch's compiler stack, rlkit.onpolicy.LazyOptimizer); training builds it with the checkpoint's
    statistics, and saving an agent that never built it keeps them."""
    from rlkit.checkpoint import load_checkpoint
    from rlkit.onpolicy import LazyOptimizer
    from rlkit.registry import load_algo

    cls = load_algo(algo)
    agent = cls("CartPole-v1", cls.Config(n_envs=2, n_steps=8), seed=0, device="cpu")
    try:
        assert not LazyOptimizer.is_built(agent)
        for _ in range(2):  # statistics that differ from a fresh optimizer's
            for p in agent.model.parameters():
                p.grad = torch.randn_like(p)
            agent.optimizer.step()
        agent.optimizer.param_groups[0]["lr"] *= 0.5  # as an annealed run leaves it
        agent.save(tmp_path / "a.pt")
        original = agent.optimizer.state_dict()
    finally:
        agent.close()
    saved = load_checkpoint(tmp_path / "a.pt")[0]["optimizer"]
    assert _optimizer_states_equal(saved, original)

    loaded = cls.load(tmp_path / "a.pt")
    try:
        assert not LazyOptimizer.is_built(loaded)
        loaded.save(tmp_path / "b.pt")  # saved again without building it: the statistics travel on
        assert not LazyOptimizer.is_built(loaded)
        assert _optimizer_states_equal(load_checkpoint(tmp_path / "b.pt")[0]["optimizer"], original)
        assert _optimizer_states_equal(loaded.optimizer.state_dict(), original)  # built now, loaded
        assert LazyOptimizer.is_built(loaded)
        params = set(map(id, loaded.model.parameters()))
        assert {id(p) for g in loaded.optimizer.param_groups for p in g["params"]} == params
    finally:
        loaded.close()


def test_an_optimizer_state_that_does_not_fit_the_model_is_refused_at_load(tmp_path):
    """The optimizer is built later, but a misfit is still a load error (rlkit.checkpoint: exit 2)."""
    from rlkit.checkpoint import load_checkpoint, save_checkpoint

    agent = PPO("CartPole-v1", _cfg(PPO), seed=0, device="cpu")
    agent.save(tmp_path / "a.pt")
    agent.close()
    state, meta = load_checkpoint(tmp_path / "a.pt")
    state["optimizer"]["param_groups"][0]["params"].pop()
    save_checkpoint(tmp_path / "a.pt", state, meta)
    with pytest.raises(ValueError, match="optimizer state"):
        PPO.load(tmp_path / "a.pt")


def test_a_checkpoint_of_another_vector_env_class_resumes_with_fresh_episodes(tmp_path, monkeypatch):
    """A Pendulum run saved with SyncVectorEnv and resumed with the native vector env (or back): the
    saved env state does not fit, so the resumed run starts new episodes instead of half-restoring."""
    cfg = _cfg(PPO, n_steps=16, batch_size=32, n_epochs=1)
    monkeypatch.setenv("RLKIT_NATIVE_VECTOR", "0")
    agent = PPO("Pendulum-v1", cfg, seed=0, device="cpu")
    agent.learn(cfg.n_envs * cfg.n_steps)
    saved_obs = agent.parts.collector.rollout.obs.clone()
    agent.save(tmp_path / "sync.pt")
    agent.close()
    monkeypatch.delenv("RLKIT_NATIVE_VECTOR")
    resumed = PPO.load(tmp_path / "sync.pt")
    try:
        assert "classic_vector" in resumed.parts.collector.state()["vector_env"]
        assert not torch.equal(resumed.parts.collector.rollout.obs, saved_obs)  # fresh episodes
        resumed.learn(2 * cfg.n_envs * cfg.n_steps)  # and it trains on
    finally:
        resumed.close()
