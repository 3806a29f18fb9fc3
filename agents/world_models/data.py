"""The rollout data set on disk: data/rollouts_<i>.npz files plus data/manifest.json.

One file holds ``episodes_per_file`` whole episodes, concatenated:

    obs      uint8 (sum_e (T_e + 1), 64, 64, 3)  every frame incl. the one after the last action
    actions  (sum_e T_e,) int64 or (sum_e T_e, A) float32
    rewards  float32 (sum_e T_e,)
    dones    bool (sum_e T_e,)   True only on true termination (a TimeLimit cut is not an end of
                                 the world, so M must not learn to predict "done" there)
    lengths  int64 (n_episodes,) T_e

Keeping the final frame lets M learn the transition into the terminal state. The manifest is
written last, so its presence with ``complete: true`` means the stage finished.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agents.world_models.vae import IMAGE_SIZE, encode_frames
from rlkit.checkpoint import atomic_write_bytes, atomic_write_text
from rlkit.errors import UsageError


def preprocess(frames: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 frames -> (B, 64, 64, 3) uint8 (bilinear, antialiased resize if needed)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise UsageError(f"world-models needs RGB frames (B, H, W, 3), got shape {frames.shape}")
    if frames.shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE):
        return frames.astype(np.uint8, copy=False)
    x = torch.as_tensor(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def file_path(data_dir: Path, index: int) -> Path:
    return Path(data_dir) / f"rollouts_{index:05d}.npz"


def write_file(path: Path, episodes: list[dict]) -> tuple[int, int]:
    """Write whole episodes (dicts of obs/actions/rewards/dones) compressed and atomically."""
    arrays = {
        "obs": np.concatenate([e["obs"] for e in episodes]).astype(np.uint8),
        "actions": np.concatenate([e["actions"] for e in episodes]),
        "rewards": np.concatenate([e["rewards"] for e in episodes]).astype(np.float32),
        "dones": np.concatenate([e["dones"] for e in episodes]).astype(bool),
        "lengths": np.asarray([len(e["rewards"]) for e in episodes], dtype=np.int64),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return len(episodes), int(arrays["lengths"].sum())


def read_file(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("obs", "actions", "rewards", "dones", "lengths")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated or foreign file
        raise UsageError(f"{path} is not a readable world-models data file ({type(exc).__name__}: {exc})") from None


def split_episodes(d: dict) -> list[dict]:
    """A file's arrays -> one dict per episode (views, no copies)."""
    out, o, t = [], 0, 0
    for n in d["lengths"].tolist():
        out.append({"obs": d["obs"][o:o + n + 1], "actions": d["actions"][t:t + n],
                    "rewards": d["rewards"][t:t + n], "dones": d["dones"][t:t + n]})
        o, t = o + n + 1, t + n
    return out


def read_manifest(data_dir: Path) -> dict | None:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def write_manifest(data_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(data_dir) / "manifest.json", json.dumps(manifest, indent=2))


def data_files(data_dir: Path, manifest: dict) -> list[Path]:
    files = [Path(data_dir) / name for name in manifest["files"]]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise UsageError(f"{data_dir} is missing {len(missing)} data file(s) listed in manifest.json "
                         f"(e.g. {missing[0]}); rerun stage=collect")
    return files


def iterate_frame_batches(files: list[Path], batch_size: int, buffer_frames: int, rng: np.random.Generator):
    """Shuffled minibatches of frames, streaming: files are read a buffer (~buffer_frames) at a time.

    The paper's CarRacing data (10k episodes x 1000 frames) does not fit in memory, so V trains
    from a shuffled window of files rather than the whole set at once.
    """
    order = rng.permutation(len(files))
    buf: list[np.ndarray] = []
    size = 0
    for n, i in enumerate(order):
        frames = read_file(files[i])["obs"]
        buf.append(frames)
        size += len(frames)
        if size >= buffer_frames or n == len(order) - 1:
            block = np.concatenate(buf)
            perm = rng.permutation(len(block))
            for s in range(0, len(block) - batch_size + 1 if len(block) >= batch_size else 1, batch_size):
                yield block[perm[s:s + batch_size]]
            buf, size = [], 0


# --- M's training sequences ---------------------------------------------------------------
def encode_dataset(vae, files: list[Path], codec, device) -> list[dict]:
    """Every episode as V's posterior (mu, logvar) per frame, M's action inputs, rewards, dones."""
    episodes = []
    for path in files:
        d = read_file(path)
        mu, logvar = encode_frames(vae, d["obs"], device)
        for e, (ep_mu, ep_lv) in zip(split_episodes(d), _split_frames(mu, logvar, d["lengths"])):
            episodes.append({"mu": ep_mu, "logvar": ep_lv, "actions": codec.from_env(e["actions"]).numpy(),
                             "rewards": e["rewards"], "dones": e["dones"]})
    return episodes


def _split_frames(mu, logvar, lengths):
    o = 0
    for n in lengths.tolist():
        yield mu[o:o + n + 1], logvar[o:o + n + 1]
        o += n + 1


def make_windows(episodes: list[dict], seq_len: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(episode, start) windows covering every transition once, with a random phase per episode.

    M trains on seq_len-step windows whose LSTM state starts at zero; shifting the windows every
    epoch stops it from only ever seeing the same cut points.
    """
    out = []
    for i, ep in enumerate(episodes):
        t = len(ep["rewards"])
        phase = int(rng.integers(0, seq_len)) if t > seq_len else 0
        starts = sorted({max(0, s) for s in range(-phase, t, seq_len)})
        out.extend((i, s) for s in starts)
    return out


def batch_windows(episodes, windows, seq_len, sample_z: bool, rng: np.random.Generator, device):
    """Padded (B, L, .) tensors: z_t, a_t, z_{t+1}, r_t, d_t and a mask of real steps."""
    b = len(windows)
    zd, ad = episodes[0]["mu"].shape[1], episodes[0]["actions"].shape[1]
    z = np.zeros((b, seq_len + 1, zd), np.float32)
    a = np.zeros((b, seq_len, ad), np.float32)
    r = np.zeros((b, seq_len), np.float32)
    d = np.zeros((b, seq_len), np.float32)
    mask = np.zeros((b, seq_len), bool)
    for j, (i, s) in enumerate(windows):
        ep = episodes[i]
        n = min(seq_len, len(ep["rewards"]) - s)
        mu, lv = ep["mu"][s:s + n + 1], ep["logvar"][s:s + n + 1]
        # The paper samples z ~ q(z|x) for M's data rather than using the mean: a cheap augmentation.
        z[j, : n + 1] = mu + np.exp(0.5 * lv) * rng.standard_normal(mu.shape) if sample_z else mu
        a[j, :n], r[j, :n] = ep["actions"][s:s + n], ep["rewards"][s:s + n]
        d[j, :n], mask[j, :n] = ep["dones"][s:s + n], True
    def t(x):
        return torch.as_tensor(x, device=device)
    return t(z[:, :-1]), t(a), t(z[:, 1:]), t(r), t(d), t(mask)
