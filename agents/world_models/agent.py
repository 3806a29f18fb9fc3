"""World Models (Ha & Schmidhuber 2018): V (conv VAE) + M (MDN-RNN) + C (linear, CMA-ES).

    collect --data/--> V: z_t = enc(x_t) --vae.pt--> M: p(z_{t+1} | z_t, a_t, h_t) --mdrnn.pt-->
    C: a_t = W [z_t, h_t] + b, searched by CMA-ES in the real env or in M's dream --controller.pt

``learn`` runs the stages named by ``Config.stage`` (``all`` = the missing ones in order) in the
work directory (the run directory unless ``work_dir`` is set); see stages.py. ``predict`` runs
V, C and M online on a batch of frames, keeping one LSTM state per row (``recurrent = True``).

``total_timesteps`` caps real env steps: the controller stage stops after the generation in which
the run's real steps (collect + real-env controller rollouts) reach it. Collection is never cut
(its size is ``collect_episodes``) and dream training uses no real steps, so the cap never binds
there; generations are set by ``cma_generations``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agents.world_models import artifacts as art
from agents.world_models.controller import ActionCodec, n_params, squash_modes
from agents.world_models.mdrnn import MDNRNN
from agents.world_models.rollouts import PolicyState
from agents.world_models.stages import (
    STAGES,
    StageContext,
    collect_stage,
    controller_stage,
    mdrnn_stage,
    vae_stage,
    write_dream_gif,
)
from agents.world_models.vae import ENCODERS, SIZE_DEFAULTS, ConvVAE
from rlkit.checkpoint import check_spaces, load_checkpoint, save_checkpoint, space_signature
from rlkit.environments import make_env, seed_everything
from rlkit.errors import UsageError
from rlkit.logger import NullLogger


@dataclass
class Config:
    stage: str = "all"  # all | collect | vae | mdrnn | controller
    work_dir: str = ""  # where data/ and vae.pt, mdrnn.pt, controller.pt live; "" = the run directory
    n_timesteps: int = 100_000_000  # the CLI's default --steps: cap on real env steps (see module doc)
    progress: bool = True
    workers: int = 0  # parallel rollout processes / Ray actors; 0 = min(4, CPU count)
    threads: int = 0  # torch threads for V/M training in the main process; 0 = torch's default
    # collect: random (or given-policy) rollouts
    collect_episodes: int = 10_000
    episodes_per_file: int = 50
    collect_policy: str = "random"  # random | path to a world-models checkpoint (iterative training)
    collect_action_repeat: int = 1  # a random action is held this many steps
    collect_max_steps: int = 1000  # env frames
    frame_skip: int = 1  # env frames per decision of V, M and C, the action held (frameskip.py)
    # V: convolutional VAE
    z_dim: int = 32
    vae_channels: int = 32  # width of the first conv layer (paper: 32)
    vae_epochs: int = 10
    vae_batch_size: int = 100
    vae_lr: float = 1e-4
    vae_free_bits: float = 0.5  # KL floor in nats per latent dimension (the paper's kl_tolerance)
    vae_kl_weight: float = 1.0  # beta: weight of the KL term (below 1: a more precise z)
    vae_recon_loss: str = "mse"  # mse (paper) | bce (small objects on black: see vae.py)
    vae_norm: str = "none"  # none (paper) | batch | group | decoder (batch norm in the decoder only): see vae.py
    vae_blur: float = 0.0  # Gaussian blur (pixels) of V's input and target; smooth z for tiny objects (vae.py)
    vae_encoder: str = "conv"  # conv (paper) | keypoints (spatial soft-argmax: z linear in object positions; vae.py)
    vae_buffer_frames: int = 200_000  # frames held in memory while streaming the data set
    # M: MDN-RNN
    mdrnn_hidden: int = 256
    mdrnn_gaussians: int = 5
    mdrnn_mixture: str = "per_dim"  # per_dim (paper) | shared: one mixture weight per component (mdrnn.py)
    mdrnn_epochs: int = 20
    mdrnn_seq_len: int = 100
    mdrnn_batch_size: int = 32
    mdrnn_lr: float = 1e-3
    mdrnn_reward_weight: float = 1.0
    mdrnn_done_weight: float = 1.0
    mdrnn_sample_z: bool = True  # train M on z ~ q(z|x) (paper) rather than on the mean
    dream_init_bank: int = 10_000  # first-frame latents stored in mdrnn.pt to start dreams from
    # C: linear controller + CMA-ES
    controller_env: str = "real"  # real | dream
    controller_squash: str = "tanh"  # Box actions, per dimension: tanh (whole range) | clip (controller.py)
    controller_inputs: str = "z_h"  # z_h: C reads [z, h] (paper's V+M+C) | z: z alone (paper's V-only C)
    cma_popsize: int = 64
    cma_sigma0: float = 0.1
    cma_generations: int = 300
    cma_rollouts: int = 16  # episodes per candidate (the same seeds for every candidate of a generation)
    cma_eval_every: int = 25  # score the search mean on held-out episodes every this many generations
    cma_eval_rollouts: int = 32  # held-out episodes; the kept controller is the best-scoring mean
    controller_max_steps: int = 1000  # cap on a real episode, in env frames
    controller_patience: int = 0  # end a search rollout after this many decisions without a positive reward; 0 = off
    dream_temperature: float = 1.15
    dream_max_steps: int = 0  # 0 = the longest episode in the collected data
    dream_done_threshold: float = 0.5
    dream_controller_input: str = "mean"  # mean (V's posterior-mean counterpart) | sample (paper): rollouts.py

    def vae_sizes(self) -> dict:
        """V's architecture as ConvVAE.sizes() records it (the V stage checks a partial V against it)."""
        return {"z_dim": self.z_dim, "channels": self.vae_channels, "norm": self.vae_norm, "blur": self.vae_blur,
                "encoder": self.vae_encoder}

    def controller_in_dim(self) -> int:
        return self.z_dim + (self.mdrnn_hidden if self.controller_inputs == "z_h" else 0)

    def validate(self) -> None:
        if self.stage not in ("all", *STAGES):
            raise ValueError(f"stage '{self.stage}' is not one of all, {', '.join(STAGES)}")
        if self.vae_norm not in ("none", "batch", "group", "decoder"):
            raise ValueError(f"vae_norm '{self.vae_norm}' is not one of none, batch, group, decoder")
        if not 0 <= self.vae_blur <= 16:  # in pixels of a 64 x 64 frame: more would blur it flat
            raise ValueError(f"vae_blur must lie in [0, 16] (pixels), got {self.vae_blur}")
        if self.vae_encoder not in ENCODERS:
            raise ValueError(f"vae_encoder '{self.vae_encoder}' is not one of {', '.join(ENCODERS)}")
        if self.vae_recon_loss not in ("mse", "bce"):
            raise ValueError(f"vae_recon_loss '{self.vae_recon_loss}' is not one of mse, bce")
        if self.mdrnn_mixture not in ("per_dim", "shared"):
            raise ValueError(f"mdrnn_mixture '{self.mdrnn_mixture}' is not one of per_dim, shared")
        if self.dream_controller_input not in ("mean", "sample"):
            raise ValueError(f"dream_controller_input '{self.dream_controller_input}' is not one of mean, sample")
        squash_modes(self.controller_squash)  # ValueError for an unknown mode
        if self.controller_inputs not in ("z_h", "z"):
            raise ValueError(f"controller_inputs '{self.controller_inputs}' is not one of z_h, z")
        if self.controller_env not in ("real", "dream"):
            raise ValueError(f"controller_env '{self.controller_env}' is not one of real, dream")
        positive = ("collect_episodes", "episodes_per_file", "collect_action_repeat", "collect_max_steps", "z_dim",
                    "vae_channels", "vae_batch_size", "vae_buffer_frames", "mdrnn_hidden", "mdrnn_gaussians",
                    "mdrnn_seq_len", "mdrnn_batch_size", "dream_init_bank", "cma_rollouts",
                    "cma_eval_every", "cma_eval_rollouts", "controller_max_steps", "frame_skip")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vae_epochs", "mdrnn_epochs", "cma_generations", "workers", "threads", "dream_max_steps",
                     "controller_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cma_popsize < 2:
            raise ValueError(f"cma_popsize must be >= 2, got {self.cma_popsize}")
        for name in ("vae_lr", "vae_kl_weight", "mdrnn_lr", "cma_sigma0", "dream_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def resolve_device(device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device '{device}' is not one of auto, cpu, cuda[:i]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{device}' requested but CUDA is not available")
    return dev


class WorldModels:
    Config = Config
    recurrent = True  # predict needs episode_start to reset M's state
    supports_ray = True
    # `rlkit train` evaluates every this many env steps unless --eval-every says otherwise: the
    # stages before C take no env steps, and one CMA-ES generation takes tens of thousands (16 x 4
    # CarRacing episodes of up to 1,000 frames), so the CLI's 10,000 scored 10 full episodes after
    # almost every generation.
    default_eval_every = 250_000

    def __init__(self, env_id: str, cfg: Config | None = None, seed: int = 0, device="auto", run_dir=None,
                 logger=None, n_envs: int | None = None, backend: str = "local", workers: int | None = None,
                 env_kwargs: dict | None = None, ray_address: str | None = None):
        self.cfg = cfg = cfg or Config()
        try:
            cfg.validate()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if backend not in ("local", "ray"):
            raise UsageError(f"backend '{backend}' is not one of local, ray")
        self.env_id, self.env_kwargs, self.seed = env_id, dict(env_kwargs or {}), int(seed)
        self.device = resolve_device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger = logger or NullLogger()
        self.backend, self.ray_address = backend, ray_address  # the address is not saved: it names a machine
        self.workers = int(workers or cfg.workers or min(4, os.cpu_count() or 1))
        env = make_env(env_id, self.env_kwargs)  # n_envs is accepted for the CLI but unused here
        self.observation_space, self.action_space = env.observation_space, env.action_space
        env.close()
        shape = getattr(self.observation_space, "shape", None)
        if shape is None or len(shape) != 3 or shape[-1] != 3 or self.observation_space.dtype != np.uint8:
            raise UsageError(f"world-models needs RGB uint8 frames (H, W, 3); {env_id} observes "
                             f"{self.observation_space} (pixel envs may need env_kwargs, e.g. obs_type: pixels)")
        self.codec = ActionCodec(self.action_space, cfg.controller_squash)
        seed_everything(self.seed)
        self.vae = ConvVAE.from_sizes(cfg.vae_sizes()).to(self.device).eval()
        self.mdrnn = MDNRNN(cfg.z_dim, self.codec.m_dim, cfg.mdrnn_hidden, cfg.mdrnn_gaussians,
                            cfg.mdrnn_mixture).to(self.device).eval()
        self.params = torch.zeros(n_params(cfg.controller_in_dim(), self.codec.out_dim), device=self.device)
        self.init_latents: dict | None = None
        self.metas: dict = {"vae": None, "mdrnn": None, "controller": None}
        self.num_timesteps = 0
        self._tmp_dir: str | None = None
        self._policy = PolicyState(self.vae, self.mdrnn, self.codec, self.device)
        self._frame = np.zeros(0, dtype=np.int64)  # predict: frames since each row's episode start
        self._held = None  # predict: each row's current action (held for frame_skip frames)
        self._searching = False  # the controller stage has produced a generation in this process

    @property
    def has_policy(self) -> bool:
        """Whether C exists (trained, or being searched): before that, the policy is a zero
        controller, and training neither evaluates nor confirms it (rlkit.training.has_policy)."""
        return self._searching or self.metas.get("controller") is not None

    # --- training ---------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        if self.cfg.work_dir:
            return Path(self.cfg.work_dir)
        if self.run_dir is None:
            self._tmp_dir = self._tmp_dir or tempfile.mkdtemp(prefix="rlkit-world-models-")
            return Path(self._tmp_dir)
        return self.run_dir

    def learn(self, total_timesteps: int, callback=None) -> WorldModels:
        cfg, work = self.cfg, self.work_dir
        if cfg.work_dir:  # a file there, or a folder that cannot be made, is bad input: one line, exit 2
            from rlkit.runs import check_creatable, make_dirs

            check_creatable(work, "work_dir")
            make_dirs(work, "work_dir")
        work.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ctx = StageContext(cfg, self.env_id, self.env_kwargs, work, self.run_dir or work, self.seed, self.device,
                           self.workers, self.backend, self.observation_space, self.action_space, self.logger,
                           ray_address=self.ray_address)
        self._load_artifacts()  # finished stages (checked against the config before anything runs)
        for stage in (STAGES if cfg.stage == "all" else (cfg.stage,)):
            if self._stage_complete(stage):
                continue  # its artifact exists: delete it to redo the stage
            started = time.perf_counter()
            if stage == "collect":
                collect_stage(ctx)
            elif stage == "vae":
                vae_stage(ctx)
            elif stage == "mdrnn":
                mdrnn_stage(ctx)
            else:
                ctx.extra["steps0"] = self._collect_steps()
                if not self._train_controller(ctx, total_timesteps, callback):
                    self._load_artifacts()
                    return self
            self._load_artifacts()
            # Wall time per stage (this process's share, if the stage was resumed): where a run's time goes.
            wall = time.perf_counter() - started
            self.logger.scalar(f"{stage}/wall_s", wall, self.num_timesteps)
            print(f"world-models: {stage} done in {wall / 60:.1f} min", flush=True)
            commit = getattr(callback, "checkpoint", None)  # rlkit.training's: the agent with the run state
            if callable(commit):
                commit(self.num_timesteps, self)
            else:
                self._stage_checkpoint()
            if callback is not None and not callback.on_step(self.num_timesteps, self):
                return self
        self._write_dream_gif()
        return self

    def _train_controller(self, ctx, total_timesteps, callback) -> bool:
        """Run the controller stage; False if the callback or the step cap stopped it."""
        keep_going = [True]

        def on_generation(real_steps: int, best) -> bool:
            self._searching = True
            self.num_timesteps = ctx.extra["steps0"] + real_steps
            self.params = torch.as_tensor(best, dtype=torch.float32, device=self.device)
            self.logger.advance(self.num_timesteps)
            stop = callback is not None and not callback.on_step(self.num_timesteps, self)
            keep_going[0] = not (stop or (total_timesteps and self.num_timesteps >= total_timesteps))
            return keep_going[0]

        self._load_artifacts()  # V and M for the callback's evaluations
        controller_stage(ctx, on_generation)
        return keep_going[0]

    def _stage_complete(self, stage: str) -> bool:
        if stage == "collect":
            return self._collect_steps() > 0
        path = self.work_dir / {"vae": art.VAE_FILE, "mdrnn": art.MDRNN_FILE, "controller": art.CONTROLLER_FILE}[stage]
        return path.is_file()

    def _collect_steps(self) -> int:
        from agents.world_models.data import read_manifest

        manifest = read_manifest(self.work_dir / "data")
        return int(manifest["steps"]) if manifest and manifest.get("complete") else 0

    def _load_artifacts(self) -> None:
        """Load every finished artifact of the work directory into V, M, C (checked against the config)."""
        cfg, work = self.cfg, self.work_dir
        steps = self._collect_steps()
        if (work / art.VAE_FILE).is_file():
            self.vae, self.metas["vae"] = art.load_vae(work / art.VAE_FILE, self.device,
                                                       {"z_dim": cfg.z_dim, "env_id": self.env_id}, "mdrnn")
        if (work / art.MDRNN_FILE).is_file():
            vae_id = self.metas["vae"]["vae_id"] if self.metas["vae"] else None
            self.mdrnn, self.init_latents, self.metas["mdrnn"] = art.load_mdrnn(
                work / art.MDRNN_FILE, self.device, {"z_dim": cfg.z_dim, "hidden": cfg.mdrnn_hidden,
                                                     "gaussians": cfg.mdrnn_gaussians, "mixture": cfg.mdrnn_mixture,
                                                     "vae_id": vae_id}, "controller")
        if (work / art.CONTROLLER_FILE).is_file():
            mdrnn_id = self.metas["mdrnn"]["mdrnn_id"] if self.metas["mdrnn"] else None
            self.params, self.metas["controller"] = art.load_controller(
                work / art.CONTROLLER_FILE, self.device,
                {"in_dim": cfg.controller_in_dim(), "out_dim": self.codec.out_dim, "mdrnn_id": mdrnn_id},
                "this config")
            steps += int(self.metas["controller"].get("real_steps", 0))
        self.num_timesteps = max(self.num_timesteps, steps)
        self._policy = PolicyState(self.vae, self.mdrnn, self.codec, self.device)

    def _stage_checkpoint(self) -> None:
        """After each stage, when learn was not called by rlkit.training (which commits the agent
        with the run state instead): an agent checkpoint in run_dir/checkpoints."""
        if self.run_dir is None:
            return
        from rlkit import runs

        path = runs.checkpoint_dir(self.run_dir) / f"step_{self.num_timesteps}.pt"
        self.save(path)
        runs.mark_latest(self.run_dir, path)

    def _write_dream_gif(self) -> None:
        if self.metas["vae"] is None or self.metas["mdrnn"] is None:
            return
        out = (self.run_dir or self.work_dir) / "videos" / "dream.gif"
        max_steps = self.cfg.dream_max_steps or int(self.metas["mdrnn"].get("max_episode_len", 300))
        write_dream_gif(out, self.vae, self.mdrnn, self.init_latents, self.codec, self.params, self.seed,
                        self.cfg.dream_temperature, min(max_steps, 500), self.cfg.dream_controller_input)

    # --- acting -----------------------------------------------------------------------------
    def predict(self, obs, deterministic: bool = True, episode_start=None) -> np.ndarray:
        """Actions for a batch of frames (n, H, W, 3). V and C are deterministic (z = mu)."""
        obs = np.asarray(obs)
        single = obs.ndim == 3
        if single:
            obs = obs[None]
        n = len(obs)
        state = self._policy.state
        if state is None or state[0].shape[1] != n:
            self._policy.reset(n)
            self._frame = np.zeros(n, dtype=np.int64)
        elif episode_start is not None and np.any(episode_start):
            starts = np.asarray(episode_start, dtype=bool)
            self._policy.reset(n, starts)
            self._frame[starts] = 0
        # With frame_skip k, V, M and C see every k-th frame of an episode and the action is held
        # in between, exactly as in the rollouts C was trained on (frameskip.py).
        due = self._frame % self.cfg.frame_skip == 0
        if due.all():
            self._held = self._policy.act(obs, self.params.expand(n, -1))
        elif due.any():  # only the rows that decide on this frame are encoded
            self._held[due] = self._policy.act(obs, self.params.expand(n, -1), due)[due]
        self._frame += 1
        actions = self._held.copy()
        return actions[0] if single else actions

    # --- persistence ------------------------------------------------------------------------
    def save(self, path) -> None:
        state = {"vae": self.vae.state_dict(), "mdrnn": self.mdrnn.state_dict(), "controller": self.params.cpu()}
        if self.init_latents is not None:
            state.update({k: v.cpu() for k, v in self.init_latents.items()})
        meta = {"algo": "world-models", "env_id": self.env_id, "env_kwargs": self.env_kwargs, "seed": self.seed,
                "observation_space": space_signature(self.observation_space),
                "action_space": space_signature(self.action_space),
                "vae": self.vae.sizes(), "mdrnn": self.mdrnn.sizes(),
                "controller": {"in_dim": self.cfg.controller_in_dim(), "out_dim": self.codec.out_dim},
                "artifacts": self.metas, "config": asdict(self.cfg), "num_timesteps": int(self.num_timesteps),
                "work_dir": str(self.work_dir.resolve()) if (self.cfg.work_dir or self.run_dir) else "",
                "backend": self.backend, "workers": self.workers}
        save_checkpoint(Path(path), state, meta)

    @classmethod
    def load(cls, path, device="cpu") -> WorldModels:
        from rlkit.config import config_from_dict

        state, meta = load_checkpoint(Path(path), "cpu")
        if meta.get("algo") != "world-models":
            raise UsageError(f"{path} is not a world-models checkpoint (algo={meta.get('algo')!r})")
        cfg = config_from_dict(Config, meta.get("config") or {})
        # Sizes come from the checkpoint, never from defaults: a config edited later cannot break it.
        vae = {**SIZE_DEFAULTS, **meta["vae"]}
        cfg.z_dim, cfg.vae_channels = int(vae["z_dim"]), int(vae["channels"])
        cfg.vae_norm, cfg.vae_blur, cfg.vae_encoder = vae["norm"], float(vae["blur"]), vae["encoder"]
        cfg.mdrnn_hidden, cfg.mdrnn_gaussians = int(meta["mdrnn"]["hidden"]), int(meta["mdrnn"]["gaussians"])
        cfg.mdrnn_mixture = meta["mdrnn"].get("mixture", art.DEFAULTS["mixture"])
        agent = cls(meta["env_id"], cfg, seed=int(meta.get("seed", 0)), device=device,
                    backend=meta.get("backend", "local"), workers=meta.get("workers"),
                    env_kwargs=meta.get("env_kwargs"))
        check_spaces(meta, agent.observation_space, agent.action_space, where=f"checkpoint {path}")
        if agent.mdrnn.action_dim != int(meta["mdrnn"]["action_dim"]):
            raise UsageError(f"checkpoint {path} has action_dim={meta['mdrnn']['action_dim']} "
                             f"but {meta['env_id']} needs {agent.mdrnn.action_dim}")
        agent.vae.load_state_dict(state["vae"])
        agent.mdrnn.load_state_dict(state["mdrnn"])
        agent.params = state["controller"].float().to(agent.device)
        if "init_mu" in state:
            agent.init_latents = {k: state[k].float().to(agent.device) for k in ("init_mu", "init_logvar")}
        agent.metas = meta.get("artifacts") or agent.metas
        agent.num_timesteps = int(meta.get("num_timesteps", 0))
        agent._policy = PolicyState(agent.vae, agent.mdrnn, agent.codec, agent.device)
        return agent

    def close(self) -> None:
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None
