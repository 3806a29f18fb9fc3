"""Frame stacking (rlkit.framestack): contents, the NEXT_STEP reset step, single = vector, agents."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers rlkit/ envs)
from rlkit.environments import make_vec_env
from rlkit.framestack import FrameStack, VectorFrameStack, stacked_space


def test_vector_stack_holds_the_last_k_frames_and_restarts_cleanly():
    k, n = 3, 4
    raw = make_vec_env("CartPole-v1", n, record_stats=False)
    stacked = VectorFrameStack(make_vec_env("CartPole-v1", n, record_stats=False), k)
    assert stacked.single_observation_space.shape == (4 * k,)
    obs_raw, _ = raw.reset(seed=0)
    obs, _ = stacked.reset(seed=0)
    history = [obs_raw] * k  # per step: the raw obs of every copy
    starts = np.zeros(n, dtype=int)  # index in history where each copy's current episode began
    done_prev = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(0)
    restarts = 0
    for _ in range(200):
        actions = rng.integers(0, 2, n)
        obs_raw, _, term, trunc, _ = raw.step(actions)
        obs, _, term_s, trunc_s, _ = stacked.step(actions)
        np.testing.assert_array_equal(term, term_s)
        history.append(obs_raw)
        t = len(history) - 1
        starts[done_prev] = t  # NEXT_STEP: this step's obs is a new episode's first frame
        restarts += int(done_prev.sum())
        for i in range(n):
            # frames older than the episode's first one are replaced by that first frame
            want = [history[max(t - j, starts[i])][i] for j in reversed(range(k))]
            np.testing.assert_array_equal(obs[i], np.concatenate(want))
        done_prev = term | trunc
    assert restarts > 0  # the reset step was exercised


def test_single_and_vector_stacks_agree():
    kwargs = {"obs_type": "pixels"}
    single = FrameStack(gym.make("rlkit/Catch-v0", **kwargs), 2)
    vector = make_vec_env("rlkit/Catch-v0", 1, env_kwargs=kwargs, record_stats=False, frame_stack=2)
    assert single.observation_space == vector.single_observation_space
    assert single.observation_space.shape == (64, 64, 6)
    o1, _ = single.reset(seed=5)
    o2, _ = vector.reset(seed=5)
    episode_over = False
    for step in range(160):  # past the end of a 150-step episode
        np.testing.assert_array_equal(o1, o2[0])
        a = step % 3
        if episode_over:  # the vector env's NEXT_STEP reset step matches a reset of the single env
            (o1, _), episode_over = single.reset(), False
        else:
            o1, _, episode_over, _, _ = single.step(a)
        o2, _, _, _, _ = vector.step(np.array([a]))


def test_stacked_space_rejects_non_box():
    with pytest.raises(ValueError, match="Box"):
        stacked_space(gym.spaces.Discrete(3), 2)


def test_ppo_with_frame_stack_evaluates_and_reloads(tmp_path):
    from agents.ppo import PPO
    from rlkit.evaluation import evaluate

    env_kwargs = {"obs_type": "vector"}
    agent = PPO("rlkit/Catch-v0", PPO.Config(n_envs=2, n_steps=16, frame_stack=2), seed=0, env_kwargs=env_kwargs)
    assert agent.observation_space.shape == (4,)  # the env's own space (checkpoint checks)
    agent.learn(64)
    agent.save(tmp_path / "a.pt")
    again = PPO.load(tmp_path / "a.pt")
    venv = make_vec_env("rlkit/Catch-v0", 3, env_kwargs=env_kwargs, frame_stack=2)
    obs, _ = venv.reset(seed=1)
    np.testing.assert_array_equal(agent.predict(obs), again.predict(obs))
    result = evaluate(again, "rlkit/Catch-v0", episodes=2, env_kwargs=env_kwargs)
    assert result["mean_ep_length"] == 150


@pytest.mark.parametrize("arch", ["nature", "compact"])
def test_cnn_torsos_take_stacked_frames(arch):
    import torch

    from rlkit.networks import CNN, CNNS

    net = CNN((64, 64, 6), arch)
    out = net(torch.zeros(5, 64, 64, 6, dtype=torch.uint8))
    assert out.shape == (5, CNNS[arch][1])


def test_unknown_cnn_is_rejected():
    from agents.ppo import PPO

    with pytest.raises(ValueError, match="cnn 'resnet'"):
        PPO.Config(cnn="resnet").validate()


def _unseen_pixels(net, frames, channel_axis: int) -> int:
    """How many pixels of ``frames`` get no gradient from ``net``'s features (never reach them)."""
    import torch

    frames = frames.requires_grad_(True)
    (grad,) = torch.autograd.grad(net(frames).sum(), frames)
    return int((grad.abs().sum(dim=(0, channel_axis)) == 0).sum())


@pytest.mark.parametrize("arch", ["nature", "compact"])
@pytest.mark.parametrize("shape", [(64, 64, 6), (84, 84, 4), (96, 96, 3), (16, 16, 3)])
def test_every_pixel_reaches_the_cnn_features(arch, shape):
    """An unpadded conv drops the trailing rows its windows do not reach: the Nature CNN on
    64 x 64 frames never saw the bottom 4 pixel rows (60-63), where Catch-v0 draws the paddle."""
    import torch

    from rlkit.networks import CNN

    torch.manual_seed(0)
    unseen = _unseen_pixels(CNN(shape, arch), torch.rand(4, *shape) * 255, channel_axis=3)
    assert unseen == 0, f"{unseen} pixels never reach the features"


@pytest.mark.parametrize("algo", ["sb3-ppo", "sb3-a2c"])
def test_sb3_catch_baselines_see_every_pixel(algo, tmp_path):
    """The committed SB3 Catch configs use PaddedNatureCNN (SB3's NatureCNN misses rows and
    columns 60-63 of a 64 x 64 frame, the paddle row), and their checkpoints load back."""
    import torch

    from rlkit import registry
    from rlkit.config import resolve

    cls = registry.load_algo(algo)
    cfg, env_kwargs = resolve(cls.Config, algo, "rlkit/Catch-v0", sets={"n_envs": 2})
    agent = cls("rlkit/Catch-v0", cfg, seed=0, device="cpu", env_kwargs=env_kwargs)
    try:
        frames = torch.rand(4, *agent.model.observation_space.shape)  # (C, H, W) in [0, 1], as SB3 feeds it
        unseen = _unseen_pixels(agent.model.policy.features_extractor, frames, channel_axis=1)
        assert unseen == 0, f"{unseen} pixels never reach the features"
        agent.save(tmp_path / "sb3.pt")
        obs = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
        again = cls.load(tmp_path / "sb3.pt")
        try:
            assert np.array_equal(agent.predict(obs), again.predict(obs))
        finally:
            again.close()
    finally:
        agent.close()
