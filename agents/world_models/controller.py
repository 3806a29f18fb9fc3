"""C: a linear controller a = W [z, h] + b (or W z + b), and the CMA-ES that searches its parameters.

The controller is deliberately tiny (the paper: 867 parameters for CarRacing) so that all the
capacity sits in V and M and C can be optimised by a derivative-free evolution strategy.

Action squashing:
- Discrete(n) (Catch): C outputs n logits, the action is their argmax; M gets it one-hot.
- Box(low, high), per dimension (``controller_squash``, one mode for all dimensions or one per
  dimension, comma-separated):
  ``tanh``: a = low + (tanh(o) + 1) / 2 * (high - low), the whole range, its midpoint at o = 0;
  ``clip``: a = clip(tanh(o), low, high), so on a [0, 1] range every o <= 0 is 0.
  The paper's CarRacing controller is ``tanh,tanh,clip``: tanh steering, (tanh + 1) / 2 gas, and
  a brake that is off for half of all outputs. With ``tanh`` everywhere the search starts at
  brake 0.5 (the midpoint), and its first generations crawl.

CMA-ES runs through the `cma` package. Its state is saved as plain arrays (mean, sigma, the
covariance C with its eigen-decomposition B, D, evolution paths, counters, and the sampling
RNG) so a checkpoint never pickles a Python object and a resumed search continues exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from rlkit.errors import UsageError


SQUASH_MODES = ("tanh", "clip")


def squash_modes(squash: str) -> list[str]:
    """'tanh,tanh,clip' -> ['tanh', 'tanh', 'clip']; ValueError for a mode that is not one of SQUASH_MODES."""
    modes = [m.strip() for m in str(squash).split(",")]
    if any(m not in SQUASH_MODES for m in modes):
        raise ValueError(f"controller_squash '{squash}': each mode must be one of {', '.join(SQUASH_MODES)}")
    return modes


class ActionCodec:
    """How controller outputs become env actions and how env actions are fed to M."""

    def __init__(self, action_space, squash: str = "tanh"):
        try:
            modes = squash_modes(squash)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if isinstance(action_space, spaces.Discrete):
            self.discrete, self.n = True, int(action_space.n)
            self.out_dim = self.m_dim = self.n
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            self.out_dim = self.m_dim = int(action_space.shape[0])
            low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            bounded = np.isfinite(low) & np.isfinite(high)
            # Unbounded dimensions fall back to [-1, 1]; every env we target is bounded.
            self.low = torch.as_tensor(np.where(bounded, low, -1.0))
            self.high = torch.as_tensor(np.where(bounded, high, 1.0))
            if len(modes) not in (1, self.out_dim):
                raise UsageError(f"controller_squash '{squash}' names {len(modes)} modes; the action space "
                                 f"{action_space} has {self.out_dim} dimensions (give 1 or {self.out_dim})")
            self.clip = torch.as_tensor([m == "clip" for m in (modes * self.out_dim)[: self.out_dim]])
        else:
            raise UsageError(f"world-models supports Discrete or 1-D Box actions, not {action_space}")

    def squash(self, out: torch.Tensor) -> torch.Tensor:
        """Controller output (B, out_dim) -> action tensor (B,) long or (B, A) float."""
        if self.discrete:
            return out.argmax(dim=-1)
        low, high = self.low.to(out.device), self.high.to(out.device)
        t = torch.tanh(out)
        return torch.where(self.clip.to(out.device), torch.minimum(torch.maximum(t, low), high),
                           low + (t + 1.0) * 0.5 * (high - low))

    def to_m(self, action: torch.Tensor) -> torch.Tensor:
        """Env action tensor -> M's input (B, m_dim): one-hot for discrete actions."""
        if self.discrete:
            return torch.nn.functional.one_hot(action.long(), self.n).float()
        return action.float()

    def from_env(self, actions: np.ndarray) -> torch.Tensor:
        """Stored env actions (N,) or (N, A) -> M's input (N, m_dim)."""
        return self.to_m(torch.as_tensor(np.asarray(actions)))

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        a = action.cpu().numpy()
        return a.astype(np.int64) if self.discrete else a.astype(np.float32)


def n_params(in_dim: int, out_dim: int) -> int:
    return out_dim * in_dim + out_dim


def reads_h(params: torch.Tensor, z_dim: int, out_dim: int) -> bool:
    """Whether a C of ``params`` (B, P) reads [z, h] rather than z alone (the paper's V-only controller)."""
    return params.shape[1] != n_params(z_dim, out_dim)


def controller_features(params: torch.Tensor, z: torch.Tensor, h: torch.Tensor, out_dim: int) -> torch.Tensor:
    """C's input: z alone or [z, h], whichever ``params`` (B, P) was sized for."""
    return torch.cat([z, h], dim=-1) if reads_h(params, z.shape[1], out_dim) else z


def linear_outputs(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-row linear maps: params (B, P) flat [W (out x in) row-major, b (out)], x (B, in) -> (B, out)."""
    b, in_dim = x.shape
    out_dim = params.shape[1] // (in_dim + 1)
    w = params[:, : out_dim * in_dim].reshape(b, out_dim, in_dim)
    bias = params[:, out_dim * in_dim:]
    return torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + bias


class CMAES:
    """A thin, checkpointable wrapper around cma.CMAEvolutionStrategy that *maximises* fitness."""

    def __init__(self, dim: int, popsize: int, sigma0: float, seed: int, x0: np.ndarray | None = None):
        import cma

        self.dim, self.popsize, self.sigma0 = dim, popsize, sigma0
        self.rng = np.random.RandomState(seed % 2**32)  # cma samples with our RNG so we can save it
        x0 = np.zeros(dim) if x0 is None else np.asarray(x0, dtype=float)
        self.es = cma.CMAEvolutionStrategy(x0, sigma0, {
            "popsize": popsize, "randn": self.rng.randn, "seed": np.nan,
            "verbose": -9, "verb_log": 0, "verb_disp": 0,  # no outcmaes/ files, no console output
        })
        self.es.ask(0)  # creates cma's lazily-initialised attributes, so from_state can overwrite them
        self.generation = 0

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.es.mean, dtype=float)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def ask(self) -> np.ndarray:
        return np.asarray(self.es.ask(), dtype=float)

    def tell(self, solutions: np.ndarray, fitness: np.ndarray) -> None:
        self.es.tell(list(solutions), [-float(f) for f in fitness])  # cma minimises
        self.generation += 1

    def state(self) -> dict:
        """Plain tensors and numbers only (saved with rlkit.checkpoint, loaded weights-only)."""
        es, sm = self.es, self.es.sm
        _, keys, pos, has_gauss, cached = self.rng.get_state()
        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64))
        return {
            "dim": self.dim, "popsize": self.popsize, "sigma0": self.sigma0, "generation": self.generation,
            "mean": t(es.mean), "sigma": float(es.sigma), "C": t(sm.C), "B": t(sm.B), "D": t(sm.D),
            "count_tell": int(sm.count_tell), "last_update": int(sm.last_update),
            "count_eigen": int(sm.count_eigen), "pc": t(es.pc), "ps": t(es.adapt_sigma.ps),
            "countiter": int(es.countiter), "countevals": int(es.countevals),
            "rng_keys": torch.as_tensor(keys.astype(np.int64)), "rng_pos": int(pos),
            "rng_has_gauss": int(has_gauss), "rng_cached": float(cached),
        }

    @classmethod
    def from_state(cls, st: dict) -> CMAES:
        def n(k):
            return st[k].cpu().numpy().astype(float)
        self = cls(int(st["dim"]), int(st["popsize"]), float(st["sigma0"]), seed=0, x0=n("mean"))
        es, sm = self.es, self.es.sm
        es.sigma = float(st["sigma"])
        sm.C, sm.B, sm.D = n("C"), n("B"), n("D")
        sm.count_tell, sm.last_update, sm.count_eigen = int(st["count_tell"]), int(st["last_update"]), int(
            st["count_eigen"])
        es.pc, es.adapt_sigma.ps = n("pc"), n("ps")
        es.countiter, es.countevals = int(st["countiter"]), int(st["countevals"])
        es.mean_old = n("mean")
        keys = st["rng_keys"].cpu().numpy().astype(np.uint32)
        self.rng.set_state(("MT19937", keys, int(st["rng_pos"]), int(st["rng_has_gauss"]), float(st["rng_cached"])))
        self.generation = int(st["generation"])
        return self
