"""CUDA paths: exercised where a GPU exists, skipped elsewhere (docs/architecture.md §8, §10)."""

import numpy as np
import pytest
import torch

from agents.ppo import PPO
from rlkit.networks import resolve_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def test_auto_keeps_mlps_on_cpu():
    import gymnasium as gym

    assert resolve_device("auto", gym.spaces.Box(-1, 1, (4,))) == torch.device("cpu")


@cuda
@pytest.mark.gpu
def test_ppo_cnn_on_cuda_end_to_end(tmp_path):
    """Catch-v0 from pixels: rollout tensors, update and predict all on the GPU."""
    cfg = PPO.Config(n_envs=4, n_steps=32, n_epochs=1, batch_size=64)
    agent = PPO("rlkit/Catch-v0", cfg, seed=0, device="auto")
    assert agent.device.type == "cuda" and agent.parts.collector.rollout.buf.obs.device.type == "cuda"
    agent.learn(256)
    obs, _ = agent.parts.collector.venv.reset(seed=0)
    actions = agent.predict(obs)
    assert actions.shape == (4,)
    agent.save(tmp_path / "c.pt")
    again = PPO.load(tmp_path / "c.pt", device="cuda")
    np.testing.assert_array_equal(actions, again.predict(obs))
