"""Stage artifacts (vae.pt, mdrnn.pt, controller.pt): save with their sizes, load with checks.

Each artifact records the sizes needed to rebuild its network (never module constants), the
env's spaces, and the identity of the artifact it was trained on (M records V's ``vae_id``, C
records both), so a stage refuses a predecessor that does not fit with a one-line UsageError
such as "vae.pt has z_dim=32 but mdrnn expects 16". ``load_policy`` rebuilds V, M and C from a
whole agent checkpoint, for collection with a trained policy.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from agents.world_models.mdrnn import MDNRNN
from agents.world_models.vae import SIZE_DEFAULTS, ConvVAE
from rlkit.checkpoint import check_spaces, load_checkpoint, save_checkpoint
from rlkit.errors import UsageError

VAE_FILE, MDRNN_FILE, CONTROLLER_FILE = "vae.pt", "mdrnn.pt", "controller.pt"
PARTIAL_DIR = "stages"  # per-stage resume checkpoints (epoch / generation), removed when a stage completes
# What an artifact written before an option existed was made with.
DEFAULTS = {"mixture": "per_dim", **SIZE_DEFAULTS}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def check_meta(meta: dict, kind: str, expect: dict | None, name: str, consumer: str) -> None:
    if meta.get("kind") != kind:
        raise UsageError(f"{name} is not a world-models {kind} artifact (it holds kind={meta.get('kind')!r})")
    if not meta.get("complete", False):
        raise UsageError(f"{name} is incomplete; rerun its stage")
    for key, want in (expect or {}).items():
        if want is None:
            continue
        got = meta.get(key, DEFAULTS.get(key))
        if got != want:
            raise UsageError(f"{name} has {key}={got} but {consumer} expects {want}")


def _load(path: Path, device) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path.name} not found in {path.parent}; run the stage that makes it first")
    return load_checkpoint(path, device)


# --- V ------------------------------------------------------------------------------------
def save_vae(path: Path, vae: ConvVAE, info: dict) -> dict:
    meta = {"kind": "vae", **vae.sizes(), "complete": True, **info}
    save_checkpoint(path, {"vae": vae.state_dict()}, meta)
    return meta


def load_vae(path: Path, device="cpu", expect: dict | None = None, consumer: str = "this stage"):
    state, meta = _load(path, device)
    check_meta(meta, "vae", expect, Path(path).name, consumer)
    return build_vae(meta, state["vae"], device), meta


def build_vae(sizes: dict, state_dict: dict, device="cpu") -> ConvVAE:
    """V rebuilt from its recorded sizes (ConvVAE.sizes()) and weights, in eval mode."""
    vae = ConvVAE.from_sizes(sizes)
    vae.load_state_dict(state_dict)
    return vae.to(device).eval()


# --- M ------------------------------------------------------------------------------------
def save_mdrnn(path: Path, mdrnn: MDNRNN, init_mu: torch.Tensor, init_logvar: torch.Tensor, info: dict) -> dict:
    meta = {"kind": "mdrnn", **mdrnn.sizes(), "complete": True, **info}
    save_checkpoint(path, {"mdrnn": mdrnn.state_dict(), "init_mu": init_mu.cpu(), "init_logvar": init_logvar.cpu()},
                    meta)
    return meta


def load_mdrnn(path: Path, device="cpu", expect: dict | None = None, consumer: str = "this stage"):
    state, meta = _load(path, device)
    check_meta(meta, "mdrnn", expect, Path(path).name, consumer)
    extra = {"init_mu": state["init_mu"].to(device).float(), "init_logvar": state["init_logvar"].to(device).float()}
    return build_mdrnn(meta, state["mdrnn"], device), extra, meta


def build_mdrnn(sizes: dict, state_dict: dict, device="cpu") -> MDNRNN:
    """M rebuilt from its recorded sizes (MDNRNN.sizes()) and weights, in eval mode."""
    mdrnn = MDNRNN(int(sizes["z_dim"]), int(sizes["action_dim"]), int(sizes["hidden"]), int(sizes["gaussians"]),
                   sizes.get("mixture", DEFAULTS["mixture"]))
    mdrnn.load_state_dict(state_dict)
    return mdrnn.to(device).eval()


# --- C ------------------------------------------------------------------------------------
def save_controller(path: Path, params, info: dict) -> dict:
    meta = {"kind": "controller", "complete": True, **info}
    save_checkpoint(path, {"params": torch.as_tensor(params, dtype=torch.float32).cpu()}, meta)
    return meta


def load_controller(path: Path, device="cpu", expect: dict | None = None, consumer: str = "this stage"):
    state, meta = _load(path, device)
    check_meta(meta, "controller", expect, Path(path).name, consumer)
    params = state["params"].float().to(device)
    if params.numel() != int(meta["out_dim"]) * (int(meta["in_dim"]) + 1):
        raise UsageError(f"{Path(path).name} holds {params.numel()} parameters, not the recorded sizes")
    return params, meta


# --- a whole agent -------------------------------------------------------------------------
def load_policy(path: Path, observation_space, action_space, device="cpu"):
    """(V, M, C's parameters, C's controller_squash) of a world-models agent checkpoint, e.g. the policy that collects
    the next round of data in iterative training; refused if it was trained on other spaces."""
    state, meta = _load(path, "cpu")
    if meta.get("algo") != "world-models":
        raise UsageError(f"{path} is not a world-models checkpoint (algo={meta.get('algo')!r})")
    check_spaces(meta, observation_space, action_space, where=f"checkpoint {path}")
    params = state["controller"].float().to(device)
    squash = (meta.get("config") or {}).get("controller_squash", "tanh")  # how its C's outputs become actions
    return (build_vae(meta["vae"], state["vae"], device), build_mdrnn(meta["mdrnn"], state["mdrnn"], device), params,
            squash)


# --- partial (resume) checkpoints ---------------------------------------------------------
def partial_path(work_dir: Path, stage: str) -> Path:
    return Path(work_dir) / PARTIAL_DIR / f"{stage}_last.pt"


def drop_partial(work_dir: Path, stage: str) -> None:
    """A stage finished: its resume checkpoint (and the folder, once empty) is no longer needed."""
    path = partial_path(work_dir, stage)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # other stages' checkpoints are still there, or it never existed
        pass


def load_partial(work_dir: Path, stage: str, device, expect: dict) -> tuple[dict, dict] | None:
    """The stage's own last checkpoint if it matches the current settings, else None (start over)."""
    path = partial_path(work_dir, stage)
    if not path.is_file():
        return None
    state, meta = load_checkpoint(path, device)
    for key, want in expect.items():
        got = meta.get(key, DEFAULTS.get(key))
        if got != want:
            raise UsageError(f"{path} was made with {key}={got} but the config says {want}; "
                             f"delete it to restart stage {stage}")
    return state, meta
