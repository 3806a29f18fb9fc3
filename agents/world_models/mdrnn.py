"""M: an LSTM whose output is a mixture of Gaussians over the next latent (an MDN-RNN).

Given the current latent z_t, the action a_t and the LSTM state, M predicts either

    shared:   p(z_{t+1} | z_t, a_t, h_t) = sum_k pi_k prod_j N(z_{t+1,j}; mu_{jk}, sigma_{jk}^2)
    per_dim:  p(z_{t+1} | z_t, a_t, h_t) = prod_j sum_k pi_{jk} N(z_{t+1,j}; mu_{jk}, sigma_{jk}^2)

"per_dim" is the paper's implementation (one K-component mixture per latent dimension);
"shared" (one mixture weight per component for the whole z) samples *coherent* latents: when a
new Catch ball can appear anywhere, sampling each dimension's component independently mixes
several positions into a z that decodes to no real frame. Both store logpi as (..., G, K) with
G = z_dim (per_dim) or 1 (shared). M also predicts the reward r_t of taking a_t (regression) and
whether the episode ends there (a done logit).
Discrete actions enter one-hot; continuous actions enter as the env's action vector.

Training loss per step, with masking of padded steps:

    L = NLL(z') / z_dim + w_r (r - r_hat)^2 + w_d BCE(d, d_logit)

Sampling with temperature tau (the paper's "dream" temperature): the mixture logits are divided
by tau and the standard deviations multiplied by sqrt(tau); tau > 1 makes the dream harder and
less exploitable by the controller.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNRNN(nn.Module):
    def __init__(self, z_dim: int = 32, action_dim: int = 3, hidden: int = 256, gaussians: int = 5,
                 mixture: str = "per_dim"):
        super().__init__()
        self.z_dim, self.action_dim, self.hidden, self.gaussians = z_dim, action_dim, hidden, gaussians
        self.mixture = mixture
        self.groups = z_dim if mixture == "per_dim" else 1  # how many mixture-weight vectors
        self.lstm = nn.LSTM(z_dim + action_dim, hidden, batch_first=True)
        self.mdn = nn.Linear(hidden, (self.groups + 2 * z_dim) * gaussians)  # log pi, mu, log sigma
        self.reward = nn.Linear(hidden, 1)
        self.done = nn.Linear(hidden, 1)

    def sizes(self) -> dict:
        return {"z_dim": self.z_dim, "action_dim": self.action_dim, "hidden": self.hidden,
                "gaussians": self.gaussians, "mixture": self.mixture}

    def initial_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.hidden, device=device)
        return zeros, zeros.clone()

    def forward(self, z: torch.Tensor, a: torch.Tensor, state=None):
        """z: (B, T, z_dim), a: (B, T, action_dim) -> mixture params, reward, done logit, state.

        logpi has shape (B, T, G, K), mu and logsigma (B, T, z_dim, K); reward and done (B, T).
        """
        out, state = self.lstm(torch.cat([z, a], dim=-1), state)
        b, t, _ = out.shape
        k, g, zd = self.gaussians, self.groups, self.z_dim
        params = self.mdn(out)
        logpi = F.log_softmax(params[..., : g * k].view(b, t, g, k), dim=-1)
        mu = params[..., g * k: (g + zd) * k].view(b, t, zd, k)
        logsigma = params[..., (g + zd) * k:].view(b, t, zd, k).clamp(-7.0, 5.0)  # keep sigma sane
        return logpi, mu, logsigma, self.reward(out).squeeze(-1), self.done(out).squeeze(-1), state

    def step(self, z: torch.Tensor, a: torch.Tensor, state):
        """One step for a batch: z (B, z_dim), a (B, action_dim); outputs without the T axis."""
        logpi, mu, logsigma, r, d, state = self.forward(z[:, None], a[:, None], state)
        return logpi[:, 0], mu[:, 0], logsigma[:, 0], r[:, 0], d[:, 0], state


def mixture_nll(z: torch.Tensor, logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor) -> torch.Tensor:
    """-log p(z) under the mixture, summed over latent dimensions: shape (...).

    z: (..., z_dim); mu, logsigma: (..., z_dim, K); logpi (log-softmaxed): (..., z_dim, K) for
    per-dimension mixtures or (..., 1, K) for one shared mixture. logsumexp keeps it stable.
    """
    zk = z.unsqueeze(-1)
    log_normal = -0.5 * ((zk - mu) / logsigma.exp()).pow(2) - logsigma - LOG_SQRT_2PI  # (..., z_dim, K)
    if logpi.shape[-2] == 1 and mu.shape[-2] > 1:  # shared: log sum_k pi_k prod_j N_jk
        return -torch.logsumexp(logpi[..., 0, :] + log_normal.sum(-2), dim=-1)
    return -torch.logsumexp(logpi + log_normal, dim=-1).sum(-1)  # per dim: sum_j log sum_k pi_jk N_jk


def mdrnn_loss(model_out, z_next, reward, done, mask, reward_weight: float = 1.0, done_weight: float = 1.0,
               done_pos_weight: float = 1.0):
    """Masked losses over a batch of sequences. Returns (total, gmm, reward_mse, done_bce)."""
    logpi, mu, logsigma, r_hat, d_logit, _ = model_out
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    gmm = (mixture_nll(z_next, logpi, mu, logsigma) / z_next.shape[-1] * m).sum() / n
    rew = ((r_hat - reward).pow(2) * m).sum() / n
    pos_weight = torch.tensor(done_pos_weight, device=d_logit.device)
    bce = F.binary_cross_entropy_with_logits(d_logit, done.float(), reduction="none", pos_weight=pos_weight)
    bce = (bce * m).sum() / n
    return gmm + reward_weight * rew + done_weight * bce, gmm, rew, bce


def sample_mixture(logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor, temperature: float = 1.0,
                   generator: torch.Generator | None = None, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
                   with_mean: bool = False):
    """Draw z (B, z_dim) at temperature tau; logpi (B, G, K), mu and logsigma (B, z_dim, K).

    ``noise = (uniform (B, G), normal (B, z_dim))`` supplies the randomness explicitly (the
    dream shares it between candidates); otherwise it is drawn from ``generator``.
    ``with_mean`` also returns the drawn components' means (B, z_dim): z without its Gaussian
    noise, the dream's counterpart of V's posterior mean (rollouts.dream_rollouts).
    """
    tau = max(float(temperature), 1e-6)
    probs = F.softmax(logpi / tau, dim=-1)
    b, g, k = probs.shape
    if noise is None:
        uniform = torch.rand((b, g), generator=generator, device=probs.device, dtype=probs.dtype)
        normal = torch.randn((b, mu.shape[1]), generator=generator, device=mu.device, dtype=mu.dtype)
    else:
        uniform, normal = noise
    # Inverse-CDF draw of each group's component.
    comp = (probs.cumsum(-1) < uniform.unsqueeze(-1)).sum(-1).clamp_(max=k - 1).view(b, g, 1)
    comp = comp.expand(b, mu.shape[1], 1)  # shared mixture: one component for every dimension
    mu_k = mu.gather(-1, comp).squeeze(-1)
    sigma_k = logsigma.gather(-1, comp).squeeze(-1).exp() * math.sqrt(tau)
    z = mu_k + sigma_k * normal
    return (z, mu_k) if with_mean else z
