"""rlkit: shared machinery for rlkit's agents, baselines and commands.

Kept import-light on purpose: `rlkit --help` must not import torch, gymnasium or ray.
"""

__version__ = "0.1.0"
