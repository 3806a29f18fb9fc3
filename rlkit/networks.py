"""Networks shared by the hand-written agents: torsos chosen from the observation space, heads from the
action space, and an actor-critic module that composes them.

- vector observations -> MLP; image observations (H, W, C uint8 Box) -> CNN (``cnn``: nature | compact).
- Discrete, MultiDiscrete, MultiBinary, Dict and Tuple observations arrive flattened (rlkit.spaces):
  an MLP on the flat vector, or, when a Dict / Tuple has image parts, ``MultiInputTorso`` (SB3's
  CombinedExtractor: a CNN per image part, the other parts as they are, concatenated, then the MLP).
- Discrete -> categorical, MultiDiscrete -> independent categoricals, MultiBinary -> independent
  Bernoullis, Box -> diagonal Gaussian with a state-independent log std (as in SB3 / CleanRL);
  samples are clipped to the Box by the rollout.
- Box with ``sde=True``: generalized state-dependent exploration (gSDE, Raffin et al. 2021, SB3's
  ``use_sde``): the noise is ``features @ W``, with one random matrix W per env copy drawn by
  ``reset_noise`` and held between draws, so exploration is smooth in time instead of white.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal

from rlkit.spaces import flat_space, has_image, is_image_space, leaves

# Argument validation in torch.distributions costs ~10% of a small-MLP rollout; our inputs are
# produced by our own networks, so our distributions skip it. Per instance, never globally: a
# global switch would also change SB3's distributions in the same process.
NO_CHECKS = {"validate_args": False}

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU}


def init_layer(layer: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal init (the PPO implementation details every strong baseline uses)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden: list[int], activation: str = "tanh") -> tuple[nn.Module, int]:
    layers, dim = [], in_dim
    for h in hidden:
        layers += [init_layer(nn.Linear(dim, h)), ACTIVATIONS[activation]()]
        dim = h
    return nn.Sequential(*layers), dim


# (out_channels, kernel, stride) per conv layer, then one dense layer of `features` units.
CNNS = {
    # Mnih et al. 2015, the Atari default.
    "nature": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512),
    # Patchify then one conv: 4x cheaper than "nature" on 64x64 frames. The first layer's 4x4
    # stride-4 patches line up with the cells of grid games drawn 4 px per cell (Catch), so each
    # cell becomes one feature vector and no filter straddles two cells.
    "compact": ([(32, 4, 4), (64, 3, 2)], 256),
}


def cover_padding(size: int, kernel: int, stride: int) -> int:
    """Zeros to add after the last row (column) so that a conv's windows reach every input row.

    Without it a conv drops the ``(size - kernel) % stride`` trailing rows: the Nature CNN on
    64 x 64 frames never sees the bottom 4 pixel rows, 60-63 (the paddle row of Catch-v0).
    """
    if size <= kernel:
        return kernel - size
    return -(size - kernel) % stride


class CNN(nn.Module):
    """Conv torso for (H, W, C) uint8 frames; scales to [0, 1] itself. ``arch`` is a key of CNNS.

    Each conv is zero-padded on the bottom and right where needed (``cover_padding``), so every
    input pixel reaches the features whatever the frame size.
    """

    def __init__(self, obs_shape: tuple[int, int, int], arch: str = "nature"):
        super().__init__()
        h, w, c = obs_shape
        convs, features = CNNS[arch]
        layers, channels = [], c
        for out, kernel, stride in convs:
            pad_h, pad_w = cover_padding(h, kernel, stride), cover_padding(w, kernel, stride)
            if pad_h or pad_w:
                layers.append(nn.ZeroPad2d((0, pad_w, 0, pad_h)))
            layers += [init_layer(nn.Conv2d(channels, out, kernel, stride=stride)), nn.ReLU()]
            h, w = (h + pad_h - kernel) // stride + 1, (w + pad_w - kernel) // stride + 1
            channels = out
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(init_layer(nn.Linear(channels * h * w, features)), nn.ReLU())
        self.out_dim = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.permute(0, 3, 1, 2).float() / 255.0
        return self.fc(self.conv(x))


class VectorTorso(nn.Module):
    def __init__(self, obs_space: spaces.Box, hidden: list[int], activation: str):
        super().__init__()
        self.net, self.out_dim = mlp(int(np.prod(obs_space.shape)), hidden, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float().flatten(1))


class MultiInputTorso(nn.Module):
    """A Dict / Tuple observation with image parts, given flattened (rlkit.spaces): each image part is
    cut out of the flat vector, reshaped to (H, W, C) and read by a CNN of its own; the other parts
    are taken as they are; everything is concatenated and goes through the MLP (SB3's
    CombinedExtractor followed by its net_arch)."""

    def __init__(self, obs_space: spaces.Space, hidden: list[int], activation: str, cnn: str):
        super().__init__()
        self.parts = [(leaf.start, leaf.size, leaf.space.shape if is_image_space(leaf.space) else None)
                      for leaf in leaves(obs_space)]
        self.cnns = nn.ModuleList(CNN(shape, cnn) for _, _, shape in self.parts if shape is not None)
        dim = sum(c.out_dim for c in self.cnns) + sum(size for _, size, shape in self.parts if shape is None)
        self.net, self.out_dim = mlp(dim, hidden, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs, pieces, cnns = obs.float(), [], iter(self.cnns)
        for start, size, shape in self.parts:
            part = obs[:, start:start + size]
            pieces.append(part if shape is None else next(cnns)(part.reshape(-1, *shape)))
        return self.net(torch.cat(pieces, dim=1))


def make_torso(obs_space: spaces.Space, hidden: list[int], activation: str = "tanh", cnn: str = "nature") -> nn.Module:
    """The torso for an env's observation space (a non-Box one arrives flattened, rlkit.spaces)."""
    if is_image_space(obs_space):
        return CNN(obs_space.shape, cnn)
    if not isinstance(obs_space, spaces.Box) and has_image(obs_space):
        return MultiInputTorso(obs_space, hidden, activation, cnn)
    return VectorTorso(flat_space(obs_space), hidden, activation)


class ActionHead(nn.Module):
    """features -> a torch distribution over actions with summed per-dimension log-probs."""

    def __init__(self, action_space: spaces.Space, in_dim: int, log_std_init: float = 0.0,
                 sde: bool = False, sde_sample_freq: int = -1):
        super().__init__()
        self.space = action_space
        self.sde, self.sde_sample_freq = sde, sde_sample_freq
        if sde and not isinstance(action_space, spaces.Box):
            from rlkit.errors import UsageError

            raise UsageError(f"use_sde needs a continuous (Box) action space; this env's is {action_space}")
        self.exploration: torch.Tensor | None = None  # gSDE: (copies, in_dim, dim) matrices W
        if isinstance(action_space, spaces.Discrete):
            self.logits = init_layer(nn.Linear(in_dim, int(action_space.n)), gain=0.01)
        elif isinstance(action_space, spaces.MultiDiscrete):
            self.nvec = [int(n) for n in action_space.nvec.ravel()]
            self.logits = init_layer(nn.Linear(in_dim, sum(self.nvec)), gain=0.01)
        elif isinstance(action_space, spaces.MultiBinary):
            self.logits = init_layer(nn.Linear(in_dim, int(np.prod(action_space.shape))), gain=0.01)
        elif isinstance(action_space, spaces.Box):
            dim = int(np.prod(action_space.shape))
            self.mean = init_layer(nn.Linear(in_dim, dim), gain=0.01)
            # gSDE learns one std per (feature, action) pair: W[j, k] ~ N(0, exp(log_std[j, k])^2).
            shape = (in_dim, dim) if sde else (dim,)
            self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        else:
            raise ValueError(f"unsupported action space {action_space}")

    def forward(self, features: torch.Tensor) -> ActionDist:
        if isinstance(self.space, spaces.Discrete):
            return ActionDist([Categorical(logits=self.logits(features), **NO_CHECKS)], kind="discrete")
        if isinstance(self.space, spaces.MultiDiscrete):
            chunks = torch.split(self.logits(features), self.nvec, dim=-1)
            return ActionDist([Categorical(logits=c, **NO_CHECKS) for c in chunks], kind="multidiscrete",
                              shape=self.space.shape)
        if isinstance(self.space, spaces.MultiBinary):
            return ActionDist([Bernoulli(logits=self.logits(features), **NO_CHECKS)], kind="multibinary",
                              shape=self.space.shape)
        mean = self.mean(features)
        if not self.sde:
            return ActionDist([Normal(mean, self.log_std.expand_as(mean).exp(), **NO_CHECKS)], kind="box",
                              shape=self.space.shape)
        # The noise features @ W is Gaussian given the features, with variance sum_j f_j^2 std_jk^2:
        # that Normal gives the log-probs and entropy. The features are detached (SB3's default,
        # learn_features=False): the std, not the torso, learns how much to explore.
        latent = features.detach()
        variance = latent.pow(2) @ self.log_std.exp().pow(2)
        dist = Normal(mean, (variance + 1e-6).sqrt(), **NO_CHECKS)
        return ActionDist([dist], kind="box", shape=self.space.shape, noise=lambda: self.noise(latent))

    def reset_noise(self, copies: int) -> None:
        """Draw a new exploration matrix W for each of ``copies`` env copies (gSDE)."""
        std = self.log_std.detach().exp()
        self.exploration = torch.normal(torch.zeros(copies, *std.shape, device=std.device), std)

    def noise(self, latent: torch.Tensor) -> torch.Tensor:
        """features @ W for each row; a batch of another size than the last draw's gets its own draw."""
        if self.exploration is None or self.exploration.shape[0] != latent.shape[0]:
            self.reset_noise(latent.shape[0])
        return torch.bmm(latent.unsqueeze(1), self.exploration).squeeze(1)


class ActionDist:
    def __init__(self, dists, kind: str, shape=None, noise=None):
        self.dists, self.kind, self.shape = dists, kind, shape
        self.noise = noise  # gSDE: the held exploration noise, used by sample() instead of white noise

    def sample(self) -> torch.Tensor:
        if self.noise is not None:
            return self._pack([self.dists[0].mean + self.noise()])
        return self._pack([d.sample() for d in self.dists])

    def mode(self) -> torch.Tensor:
        if self.kind == "box":
            return self._pack([self.dists[0].mean])
        if self.kind == "multibinary":
            return self._pack([(self.dists[0].logits > 0).float()])
        return self._pack([d.probs.argmax(-1) for d in self.dists])

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        if self.kind == "discrete":
            return self.dists[0].log_prob(actions)
        if self.kind == "multidiscrete":
            flat = actions.flatten(actions.dim() - len(self.shape))  # a 2-D nvec: its cells in a row
            return sum(d.log_prob(flat[..., i]) for i, d in enumerate(self.dists))
        return self.dists[0].log_prob(actions.flatten(1)).sum(-1)  # box, multibinary: independent dims

    def entropy(self) -> torch.Tensor:
        if self.kind in ("box", "multibinary"):
            return self.dists[0].entropy().sum(-1)
        return sum(d.entropy() for d in self.dists)

    def _pack(self, parts):
        if self.kind == "discrete":
            return parts[0]
        if self.kind == "multidiscrete":
            return torch.stack(parts, dim=-1).reshape(-1, *self.shape)
        return parts[0].reshape(-1, *self.shape)


class ActorCritic(nn.Module):
    """Policy and value function over one shared torso, or two separate ones (``shared=False``)."""

    def __init__(self, obs_space, action_space, hidden=(64, 64), activation="tanh", shared=None,
                 log_std_init=0.0, critic=True, cnn="nature", sde=False, sde_sample_freq=-1, ortho_init=True):
        super().__init__()
        hidden = list(hidden)
        self.obs_space = obs_space  # the env's own (non-Box spaces arrive flattened, rlkit.spaces)
        # None: CNNs share one torso (as in Nature DQN / PPO's Atari setup), MLPs get two.
        self.shared = has_image(obs_space) if shared is None else bool(shared)
        self.actor_torso = make_torso(obs_space, hidden, activation, cnn)
        self.critic_torso = None
        if critic and not self.shared:
            self.critic_torso = make_torso(obs_space, hidden, activation, cnn)
        self.head = ActionHead(action_space, self.actor_torso.out_dim, log_std_init, sde, sde_sample_freq)
        self.value = init_layer(nn.Linear(self.actor_torso.out_dim, 1), gain=1.0) if critic else None
        if not ortho_init:  # the RL Zoo's gSDE entries: torch's default init (SB3's ortho_init=False)
            for layer in self.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    layer.reset_parameters()

    def forward(self, obs: torch.Tensor):
        """(action distribution, value or None)."""
        features = self.actor_torso(obs)
        dist = self.head(features)
        if self.value is None:
            return dist, None
        vf = features if self.critic_torso is None else self.critic_torso(obs)
        return dist, self.value(vf).squeeze(-1)

    def actor(self, obs: torch.Tensor):
        """The action distribution alone: acting (predict, evaluation) needs no value."""
        return self.head(self.actor_torso(obs))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        torso = self.critic_torso or self.actor_torso
        return self.value(torso(obs)).squeeze(-1)


def resolve_device(device: str, obs_space: spaces.Space) -> torch.device:
    """``auto``: CUDA for CNN policies when present, CPU for small MLPs (faster there, as SB3 notes)."""
    if device == "auto":
        return torch.device("cuda" if has_image(obs_space) and torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from rlkit.errors import UsageError

        raise UsageError(f"--device {device} asked for, but CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError:
        from rlkit.errors import UsageError

        raise UsageError(f"--device '{device}' is not one of auto, cpu, cuda, cuda:<i>") from None
