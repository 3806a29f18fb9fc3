"""V: a convolutional variational auto-encoder that compresses a 64x64 RGB frame into z.

The architecture is the paper's (Ha & Schmidhuber 2018, appendix A.1) with the channel width
as a parameter so small games can use a thinner network:

    encoder  x (3x64x64) -conv4 s2-> c x31x31 -conv4 s2-> 2c x14x14 -conv4 s2-> 4c x6x6
             -conv4 s2-> 8c x2x2 -flatten-> (mu, log sigma^2) in R^z
    decoder  z -linear-> 32c x1x1 -deconv5 s2-> 4c x5x5 -deconv5 s2-> 2c x13x13
             -deconv6 s2-> c x30x30 -deconv6 s2-> 3x64x64 -sigmoid-> x_hat

With c = 32 this is exactly the paper's network (dense 1024, deconv 128/64/32/3).
``encoder="keypoints"`` swaps the encoder's torso for a spatial soft-argmax (Keypoints below):
z is then linear in where the objects are, which a linear controller needs on sprite games.

Loss per frame (the paper's, with its "KL tolerance" = free bits):

    L = sum_pixels (x - x_hat)^2 + max(KL(q(z|x) || N(0, I)), free_bits * z_dim)
    KL = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)

``recon_loss="bce"`` swaps the squared error for the Bernoulli log-likelihood
sum_pixels BCE(x, sigmoid(logits)). On mostly-black frames with tiny objects (Catch) the squared
error through a sigmoid has a vanishing gradient where the net predicts black over a white ball
(d/dlogit = (x_hat - x) x_hat (1 - x_hat) ~ 0), and V stays stuck at the empty frame; the
cross-entropy gradient on the logits is x_hat - x and does not vanish.

The floor stops the optimiser from squeezing the KL below a budget of ``free_bits`` nats per
latent dimension, so the code keeps enough information about small objects (a ball) instead of
collapsing to the blurry mean frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 64  # the pipeline's frame size; other frame sizes are resized to it (data.py)


NORMS = ("none", "batch", "group", "decoder")
ENCODERS = ("conv", "keypoints")
# What a V recorded before an option existed was built with (ConvVAE.sizes() keys).
SIZE_DEFAULTS = {"norm": "none", "blur": 0.0, "encoder": "conv"}


class Keypoints(nn.Module):
    """Encoder torso that outputs where things are: the expected (x, y) of each feature map.

    Three convolutions end on a 16 x 16 grid (4 x 4 pixels a cell: Catch's own grid; a 32 x 32
    grid cost 5 times as much for the same precision); each of the k output maps becomes a
    probability map over the grid (a softmax), and its expected coordinates in [-1, 1] are the
    torso's output (a spatial soft-argmax, as in deep spatial autoencoders, Finn et al. 2016). A small object
    that one map responds to is then located *linearly*: its column is a coordinate of the
    output, not a code the decoder learned. The paper's torso flattens its last feature map
    instead, and on Catch a linear read-out of the ball's column from its z was off by 1.3-2.6
    cells; from this torso's z it is exact (docs/world_models.md). It keeps positions only,
    not textures or colours, so it suits games of a few sprites, not CarRacing's road.
    """

    def __init__(self, channels: int, keypoints: int, block):
        super().__init__()
        c = channels
        self.net = nn.Sequential(*block(nn.Conv2d(3, c, 4, stride=2, padding=1), c),
                                 *block(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), 2 * c),
                                 nn.Conv2d(2 * c, keypoints, 3, padding=1))
        g = torch.linspace(-1.0, 1.0, IMAGE_SIZE // 4)
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        self.register_buffer("grid", torch.stack([xx.flatten(), yy.flatten()], dim=1), persistent=False)
        self.out_dim = 2 * keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(self.net(x).flatten(2), dim=2)  # (B, k, 16 * 16)
        return (attention @ self.grid).flatten(1)  # (B, 2k): x1, y1, x2, y2, ...


class ConvVAE(nn.Module):
    def __init__(self, z_dim: int = 32, channels: int = 32, norm: str = "none", blur: float = 0.0,
                 encoder: str = "conv"):
        super().__init__()
        c = channels
        self.z_dim, self.channels, self.norm, self.blur = z_dim, channels, norm, float(blur)
        self.encoder_kind = encoder

        def block(layer: nn.Module, out_ch: int, decoder: bool = False) -> list[nn.Module]:
            # A norm layer (not in the paper) lets V escape the "empty frame" plateau on sparse
            # frames in a few hundred steps instead of an unpredictable thousand or more.
            # "decoder" normalises the decoder only: as reliable on Catch, and it leaves the
            # encoder's (and so z's) geometry closer to the paper's plain network.
            kind = "batch" if norm == "decoder" and decoder else norm
            extra = {"none": [], "decoder": [], "batch": [nn.BatchNorm2d(out_ch)],
                     "group": [nn.GroupNorm(math.gcd(4, out_ch), out_ch)]}[kind]
            return [layer, *extra, nn.ReLU()]

        if encoder == "keypoints":
            self.encoder = Keypoints(c, 4 * c, block)
            enc_out = self.encoder.out_dim
        else:
            self.encoder = nn.Sequential(
                *block(nn.Conv2d(3, c, 4, stride=2), c),
                *block(nn.Conv2d(c, 2 * c, 4, stride=2), 2 * c),
                *block(nn.Conv2d(2 * c, 4 * c, 4, stride=2), 4 * c),
                *block(nn.Conv2d(4 * c, 8 * c, 4, stride=2), 8 * c),
                nn.Flatten(),
            )
            enc_out = 8 * c * 2 * 2
        self.fc_mu = nn.Linear(enc_out, z_dim)
        self.fc_logvar = nn.Linear(enc_out, z_dim)
        self.fc_dec = nn.Linear(z_dim, 32 * c)
        self.decoder = nn.Sequential(
            *block(nn.ConvTranspose2d(32 * c, 4 * c, 5, stride=2), 4 * c, decoder=True),
            *block(nn.ConvTranspose2d(4 * c, 2 * c, 5, stride=2), 2 * c, decoder=True),
            *block(nn.ConvTranspose2d(2 * c, c, 6, stride=2), c, decoder=True),
            nn.ConvTranspose2d(c, 3, 6, stride=2),  # logits; decode() applies the sigmoid
        )
        if self.blur > 0:  # separable Gaussian kernel, fixed (not learned, not saved)
            r = int(math.ceil(3 * self.blur))
            t = torch.arange(-r, r + 1, dtype=torch.float32)
            k = torch.exp(-0.5 * (t / self.blur) ** 2)
            self.register_buffer("kernel", (k / k.sum()), persistent=False)

    @classmethod
    def from_sizes(cls, sizes: dict) -> ConvVAE:
        """The network ``sizes()`` (or Config.vae_sizes()) describes; keys missing from artifacts
        written before an option existed take that option's old behaviour (SIZE_DEFAULTS)."""
        s = {**SIZE_DEFAULTS, **sizes}
        return cls(int(s["z_dim"]), int(s["channels"]), s["norm"], float(s["blur"]), s["encoder"])

    def sizes(self) -> dict:
        """What a checkpoint must record to rebuild this network."""
        return {"z_dim": self.z_dim, "channels": self.channels, "norm": self.norm, "blur": self.blur,
                "encoder": self.encoder_kind, "image_size": IMAGE_SIZE}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The frame V actually sees and reconstructs: x, optionally Gaussian-blurred.

        A 4x4-pixel ball that jumps 4 pixels per step shares no pixel with its neighbouring
        positions, so the reconstruction loss gives V no reason to put neighbouring positions
        near each other in z, and C (linear) cannot read "where is the ball" off z. Blurring
        makes neighbouring positions overlap, and z becomes smooth in position.
        """
        if self.blur <= 0:
            return x
        k, r, ch = self.kernel, self.kernel.numel() // 2, x.shape[1]
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(ch, 1, 1, -1), padding=(0, r), groups=ch)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(ch, 1, -1, 1), padding=(r, 0), groups=ch)

    @torch.no_grad()
    def init_output_bias(self, mean_pixel: torch.Tensor) -> None:
        """Start the decoder at the data's mean colour (per channel) instead of grey.

        From a grey start the first few hundred steps only learn "the frame is mostly black",
        and on sparse frames V can then sit for thousands of steps on the empty-frame plateau.
        Starting there, it learns where the objects are within a couple of hundred steps.
        """
        p = mean_pixel.clamp(1e-3, 1 - 1e-3).to(self.decoder[-1].bias.device)
        self.decoder[-1].bias.copy_(torch.log(p / (1 - p)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float (B, 3, 64, 64) in [0, 1] -> (mu, logvar), each (B, z_dim)."""
        h = self.encoder(self.prepare(x))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fc_dec(z)[:, :, None, None])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> frames (B, 3, 64, 64) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor):
        """-> (decoder logits, mu, logvar) for a sampled z; the target is prepare(x)."""
        mu, logvar = self.encode(x)
        # Reparameterisation: z = mu + sigma * eps keeps the sample differentiable in (mu, sigma).
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode_logits(z), mu, logvar


def vae_loss(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             free_bits: float, recon_loss: str = "mse", kl_weight: float = 1.0,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, kl), each the mean over the batch of per-frame sums.

    ``kl_weight`` < 1 (a beta-VAE's beta) buys a more precise z at the price of a less regular
    latent space: Catch needs the 4x4 ball's column read linearly from z.
    """
    if recon_loss == "bce":
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3)).mean()
    else:
        recon = (x - torch.sigmoid(logits)).pow(2).sum(dim=(1, 2, 3)).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    floor = torch.tensor(free_bits * mu.shape[1], device=kl.device, dtype=kl.dtype)
    return recon + kl_weight * torch.maximum(kl, floor), recon, kl


def to_tensor(frames_uint8: np.ndarray, device) -> torch.Tensor:
    """(B, 64, 64, 3) uint8 -> (B, 3, 64, 64) float in [0, 1] on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(frames_uint8), device=device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, 64, 64) float in [0, 1] -> (B, 64, 64, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_frames(vae: ConvVAE, frames_uint8: np.ndarray, device, batch_size: int = 1024):
    """Encode many frames in batches -> (mu, logvar) float32 numpy arrays (N, z_dim)."""
    mus, logvars = [], []
    for i in range(0, len(frames_uint8), batch_size):
        mu, logvar = vae.encode(to_tensor(frames_uint8[i:i + batch_size], device))
        mus.append(mu.float().cpu().numpy())
        logvars.append(logvar.float().cpu().numpy())
    if not mus:
        return np.zeros((0, vae.z_dim), np.float32), np.zeros((0, vae.z_dim), np.float32)
    return np.concatenate(mus), np.concatenate(logvars)


def side_by_side(x: torch.Tensor, x_hat: torch.Tensor, n: int = 8) -> np.ndarray:
    """An HWC uint8 image: input frames on the top row, their reconstructions below."""
    top = np.concatenate(list(to_uint8(x[:n])), axis=1)
    bottom = np.concatenate(list(to_uint8(x_hat[:n])), axis=1)
    return np.concatenate([top, bottom], axis=0)
