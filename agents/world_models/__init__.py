"""World Models (Ha & Schmidhuber 2018): V (VAE) + M (MDN-RNN) + C (CMA-ES linear controller)."""

from agents.world_models.agent import Config, WorldModels

__all__ = ["Config", "WorldModels"]
