"""rlkit: shared machinery for rlkit's agents, baselines and commands, and the Python API.

    from rlkit import PPO
    agent = PPO("MlpPolicy", "CartPole-v1").learn(20_000)

Kept import-light on purpose: `rlkit --help` must not import torch, gymnasium or ray, and neither does
`import rlkit` (rlkit/api.py imports them when an agent is made). docs/python_api.md has the API.
"""

__version__ = "0.1.0"

from rlkit.api import A2C, A3C, PPO, REINFORCE, Agent, EvalCallback, load, load_run, make_agent, train  # noqa: E402
from rlkit.errors import UsageError  # noqa: E402

__all__ = ["A2C", "A3C", "PPO", "REINFORCE", "Agent", "EvalCallback", "UsageError", "load", "load_run",
           "make_agent", "train"]
