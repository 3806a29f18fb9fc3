"""Names -> algorithm classes, as lazy "module:Class" strings so `rlkit --help` imports nothing heavy."""

from __future__ import annotations

import importlib

from rlkit.errors import UsageError, did_you_mean

ALGOS: dict[str, str] = {
    "reinforce": "agents.reinforce:Reinforce",
    "actor-critic": "agents.actor_critic:ActorCritic",
    "ppo": "agents.ppo:PPO",
    "a3c": "agents.a3c:A3C",
    "world-models": "agents.world_models:WorldModels",
    "sb3-ppo": "rlkit.baselines.sb3:SB3PPO",
    "sb3-a2c": "rlkit.baselines.sb3:SB3A2C",
    "sb3-dqn": "rlkit.baselines.sb3:SB3DQN",
    "sb3-sac": "rlkit.baselines.sb3:SB3SAC",
    "rllib-ppo": "rlkit.baselines.rllib:RLlibPPO",
}

DESCRIPTIONS: dict[str, str] = {
    "reinforce": "Monte-Carlo policy gradient, optional learned baseline",
    "actor-critic": "synchronous advantage actor-critic (A2C), n-step or GAE",
    "ppo": "proximal policy optimisation, clipped surrogate + GAE",
    "a3c": "asynchronous advantage actor-critic (Hogwild workers)",
    "world-models": "VAE + MDN-RNN + CMA-ES controller (Ha & Schmidhuber 2018)",
    "sb3-ppo": "Stable-Baselines3 PPO, RL Zoo hyperparameters",
    "sb3-a2c": "Stable-Baselines3 A2C, RL Zoo hyperparameters",
    "sb3-dqn": "Stable-Baselines3 DQN, RL Zoo hyperparameters (discrete actions)",
    "sb3-sac": "Stable-Baselines3 SAC, RL Zoo hyperparameters (continuous actions)",
    "rllib-ppo": "RLlib PPO (new API stack)",
}


def check_algo(name: str) -> str:
    if name not in ALGOS:
        raise UsageError(f"unknown algorithm '{name}'{did_you_mean(name, ALGOS)}; "
                         f"accepted: {', '.join(ALGOS)}")
    return name


def available(name: str) -> bool:
    module, _, _ = ALGOS[name].partition(":")
    return importlib.util.find_spec(module) is not None


def load_algo(name: str):
    check_algo(name)
    module_name, _, cls_name = ALGOS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(f"algorithm '{name}' is not available in this version of rlkit") from None
        raise
    return getattr(module, cls_name)


def check_env(env_id: str) -> str:
    import gymnasium as gym

    import envs  # noqa: F401

    if env_id not in gym.registry:
        raise UsageError(f"unknown env '{env_id}'{did_you_mean(env_id, gym.registry)}; "
                         "see `rlkit list` for registered ids")
    return env_id
