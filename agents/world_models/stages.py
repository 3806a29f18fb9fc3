"""The four stages. Each reads only its predecessor's artifact from the work directory, writes its
own, and resumes from its own last checkpoint if it was interrupted (docs/architecture.md §9):

    collect     -> data/rollouts_*.npz + data/manifest.json
    vae         data/  -> vae.pt          (epoch checkpoints in stages/vae_last.pt)
    mdrnn       vae.pt + data/ -> mdrnn.pt (epoch checkpoints in stages/mdrnn_last.pt)
    controller  vae.pt + mdrnn.pt -> controller.pt (CMA-ES state in stages/controller_last.pt)

Randomness is derived from (seed, stage, epoch / generation) rather than carried along, so a
resumed stage draws exactly what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.world_models import artifacts as art
from agents.world_models import data as wmdata
from agents.world_models.controller import CMAES, ActionCodec
from agents.world_models.mdrnn import MDNRNN, mdrnn_loss
from agents.world_models.rollouts import Worker
from agents.world_models.vae import ConvVAE, side_by_side, to_tensor, vae_loss
from rlkit.checkpoint import save_checkpoint, space_signature
from rlkit.errors import UsageError
from rlkit.logger import Logger
from rlkit.workers import WorkerGroup

STAGES = ("collect", "vae", "mdrnn", "controller")


@dataclass
class StageContext:
    cfg: object  # WorldModels.Config
    env_id: str
    env_kwargs: dict
    work_dir: Path  # data/ and artifacts
    run_dir: Path  # logs and videos
    seed: int
    device: torch.device
    workers: int
    backend: str
    observation_space: object
    action_space: object
    logger: Logger
    extra: dict = field(default_factory=dict)
    ray_address: str | None = None  # backend ray: join this cluster instead of starting a local Ray

    def bar(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        disable = not (self.cfg.progress and sys.stdout.isatty())
        return tqdm(total=total, desc=f"world-models {desc}", unit=unit, disable=disable, dynamic_ncols=True)

    def spaces(self) -> dict:
        return {"env_id": self.env_id, "observation_space": space_signature(self.observation_space),
                "action_space": space_signature(self.action_space)}

    def rng(self, *tags: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *tags])

    def seed_torch(self, *tags: int) -> None:
        """Seed torch's global RNG from (seed, tags) only. Without it a model's initial weights
        would depend on whatever ran earlier in the process (a one-command run vs one stage)."""
        torch.manual_seed(int(self.rng(*tags).integers(2**63 - 1)))

    def workers_for(self, spec: dict, tasks: int) -> WorkerGroup:
        """Rollout workers (rollouts.Worker on ``spec``): at most one per task, on the run's backend."""
        return WorkerGroup(Worker, (spec,), n_workers=min(self.workers, tasks), backend=self.backend,
                           ray_address=self.ray_address)


# --- collect ------------------------------------------------------------------------------
def collect_stage(ctx: StageContext) -> dict:
    cfg, data_dir = ctx.cfg, ctx.work_dir / "data"
    manifest = wmdata.read_manifest(data_dir)
    settings = {"episodes": cfg.collect_episodes, "episodes_per_file": cfg.episodes_per_file,
                "policy": cfg.collect_policy, "action_repeat": cfg.collect_action_repeat,
                "max_steps": cfg.collect_max_steps, "frame_skip": cfg.frame_skip, "seed": ctx.seed, **ctx.spaces()}
    if manifest is not None:
        if manifest.get("complete"):
            return manifest
        if manifest.get("settings") != settings:
            raise UsageError(f"{data_dir} holds an interrupted collection with other settings "
                             f"({manifest.get('settings')}); delete it or use the same config")
    if cfg.collect_policy != "random" and not Path(cfg.collect_policy).is_file():
        raise UsageError(f"collect_policy '{cfg.collect_policy}' is neither 'random' nor a checkpoint file")
    data_dir.mkdir(parents=True, exist_ok=True)
    wmdata.write_manifest(data_dir, {"complete": False, "settings": settings})
    n_files = math.ceil(cfg.collect_episodes / cfg.episodes_per_file)
    missing = [i for i in range(n_files) if not wmdata.file_path(data_dir, i).is_file()]
    spec = {**settings, "env_kwargs": ctx.env_kwargs, "data_dir": str(data_dir)}
    if missing:
        with ctx.workers_for(spec, len(missing)) as group, ctx.bar(cfg.collect_episodes, "collect", "ep") as bar:
            bar.update(cfg.collect_episodes - sum(
                min(cfg.episodes_per_file, cfg.collect_episodes - i * cfg.episodes_per_file) for i in missing))
            for n_eps, _ in group.imap_unordered("collect", [(i,) for i in missing]):
                bar.update(n_eps)
    files, lengths, rewards = [], [], []
    for i in range(n_files):
        d = wmdata.read_file(wmdata.file_path(data_dir, i))
        files.append(wmdata.file_path(data_dir, i).name)
        lengths.extend(d["lengths"].tolist())
        rewards.extend(float(np.sum(e["rewards"])) for e in wmdata.split_episodes(d))
    manifest = {"complete": True, "settings": settings, **ctx.spaces(), "files": files,
                "episodes": len(lengths), "steps": int(sum(lengths)), "max_episode_len": int(max(lengths)),
                "mean_return": float(np.mean(rewards))}
    wmdata.write_manifest(data_dir, manifest)
    ctx.logger.scalar("collect/mean_return", manifest["mean_return"], manifest["steps"])
    return manifest


def _complete_manifest(ctx: StageContext, consumer: str) -> dict:
    manifest = wmdata.read_manifest(ctx.work_dir / "data")
    if manifest is None or not manifest.get("complete"):
        raise UsageError(f"{ctx.work_dir / 'data'} holds no complete rollout data; run stage=collect first")
    if manifest.get("env_id") != ctx.env_id or manifest.get("action_space") != space_signature(ctx.action_space):
        raise UsageError(f"data/ was collected on {manifest.get('env_id')} {manifest.get('action_space')}, "
                         f"but {consumer} runs on {ctx.env_id}")
    return manifest


# --- V ------------------------------------------------------------------------------------
def vae_stage(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    manifest = _complete_manifest(ctx, "vae")
    files = wmdata.data_files(ctx.work_dir / "data", manifest)
    ctx.seed_torch(1)
    sizes = cfg.vae_sizes()
    vae = ConvVAE.from_sizes(sizes).to(ctx.device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    start, step, vae_id = 0, 0, art.new_id()
    first = wmdata.read_file(files[0])["obs"]
    vae.init_output_bias(vae.prepare(to_tensor(first[:2000], ctx.device)).mean(dim=(0, 2, 3)))
    partial = art.load_partial(ctx.work_dir, "vae", ctx.device, sizes)
    if partial is not None:
        state, meta = partial
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start, step, vae_id = int(meta["epoch"]), int(meta["step"]), meta["vae_id"]
    shown = to_tensor(first[:: max(1, manifest["max_episode_len"] // 4)][:8], ctx.device)

    @torch.no_grad()
    def reconstruction() -> np.ndarray:  # V's input frames over their decoded means
        vae.eval()
        mu, _ = vae.encode(shown)
        return side_by_side(vae.prepare(shown), vae.decode(mu))

    image = None
    batches_per_epoch = max(1, manifest["steps"] // cfg.vae_batch_size)
    with ctx.bar(cfg.vae_epochs * batches_per_epoch, "vae", "batch") as bar:
        bar.update(start * batches_per_epoch)
        for epoch in range(start, cfg.vae_epochs):
            ctx.seed_torch(1, epoch)
            vae.train()
            for frames in wmdata.iterate_frame_batches(files, cfg.vae_batch_size, cfg.vae_buffer_frames,
                                                       ctx.rng(1, epoch)):
                x = to_tensor(frames, ctx.device)
                logits, mu, logvar = vae(x)
                loss, recon, kl = vae_loss(vae.prepare(x), logits, mu, logvar, cfg.vae_free_bits, cfg.vae_recon_loss,
                                           cfg.vae_kl_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
                if step % 20 == 0:
                    ctx.logger.scalars({"vae/loss": loss.item(), "vae/reconstruction": recon.item(),
                                        "vae/kl": kl.item()}, step)
            image = reconstruction()
            ctx.logger.image("vae/input_vs_reconstruction", image, epoch + 1)
            save_checkpoint(art.partial_path(ctx.work_dir, "vae"), {"vae": vae.state_dict(), "opt": opt.state_dict()},
                            {**sizes, "epoch": epoch + 1, "step": step, "vae_id": vae_id})
    write_png(ctx.run_dir / "videos" / "vae_reconstruction.png", reconstruction() if image is None else image,
              row_labels=RECONSTRUCTION_ROWS)
    meta = art.save_vae(ctx.work_dir / art.VAE_FILE, vae.cpu(),
                        {"vae_id": vae_id, "epochs": cfg.vae_epochs, "frames": manifest["steps"], **ctx.spaces()})
    art.drop_partial(ctx.work_dir, "vae")
    return meta


# --- M ------------------------------------------------------------------------------------
def mdrnn_stage(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    vae, vmeta = art.load_vae(ctx.work_dir / art.VAE_FILE, ctx.device,
                              {"z_dim": cfg.z_dim, "env_id": ctx.env_id}, "mdrnn")
    manifest = _complete_manifest(ctx, "mdrnn")
    codec = ActionCodec(ctx.action_space)
    episodes = wmdata.encode_dataset(vae, wmdata.data_files(ctx.work_dir / "data", manifest), codec, ctx.device)
    ctx.seed_torch(2)
    mdrnn = MDNRNN(cfg.z_dim, codec.m_dim, cfg.mdrnn_hidden, cfg.mdrnn_gaussians, cfg.mdrnn_mixture).to(ctx.device)
    opt = torch.optim.Adam(mdrnn.parameters(), lr=cfg.mdrnn_lr)
    sizes = {**mdrnn.sizes(), "vae_id": vmeta["vae_id"]}
    start, step = 0, 0
    partial = art.load_partial(ctx.work_dir, "mdrnn", ctx.device, sizes)
    if partial is not None:
        state, meta = partial
        mdrnn.load_state_dict(state["mdrnn"])
        opt.load_state_dict(state["opt"])
        start, step = int(meta["epoch"]), int(meta["step"])
    with ctx.bar(cfg.mdrnn_epochs, "mdrnn", "epoch") as bar:
        bar.update(start)
        for epoch in range(start, cfg.mdrnn_epochs):
            rng = ctx.rng(2, epoch)
            windows = wmdata.make_windows(episodes, cfg.mdrnn_seq_len, rng)
            order = rng.permutation(len(windows))
            sums = np.zeros(4)
            for k in range(0, len(order), cfg.mdrnn_batch_size):
                batch = wmdata.batch_windows(episodes, [windows[i] for i in order[k:k + cfg.mdrnn_batch_size]],
                                      cfg.mdrnn_seq_len, cfg.mdrnn_sample_z, rng, ctx.device)
                z, a, z_next, r, d, mask = batch
                losses = mdrnn_loss(mdrnn(z, a), z_next, r, d, mask, cfg.mdrnn_reward_weight, cfg.mdrnn_done_weight)
                opt.zero_grad(set_to_none=True)
                losses[0].backward()
                torch.nn.utils.clip_grad_norm_(mdrnn.parameters(), 1.0)  # LSTMs occasionally spike
                opt.step()
                step += 1
                sums += [x.item() for x in losses]
            means = sums / max(1, math.ceil(len(order) / cfg.mdrnn_batch_size))
            ctx.logger.scalars(dict(zip(("mdrnn/loss", "mdrnn/gmm_nll", "mdrnn/reward_mse", "mdrnn/done_bce"),
                                        means)), epoch + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{means[0]:.3f}", refresh=False)
            save_checkpoint(art.partial_path(ctx.work_dir, "mdrnn"),
                            {"mdrnn": mdrnn.state_dict(), "opt": opt.state_dict()},
                            {**sizes, "epoch": epoch + 1, "step": step})
    # A bank of real first-frame posteriors: dreams start from these, so C needs nothing but mdrnn.pt.
    firsts = episodes[: cfg.dream_init_bank]
    init_mu = torch.as_tensor(np.stack([e["mu"][0] for e in firsts]))
    init_logvar = torch.as_tensor(np.stack([e["logvar"][0] for e in firsts]))
    meta = art.save_mdrnn(ctx.work_dir / art.MDRNN_FILE, mdrnn.cpu(), init_mu, init_logvar, {
        "vae_id": vmeta["vae_id"], "mdrnn_id": art.new_id(), "discrete": codec.discrete,
        "max_episode_len": manifest["max_episode_len"], "epochs": cfg.mdrnn_epochs,
        "frame_skip": manifest["settings"].get("frame_skip", 1), **ctx.spaces()})
    art.drop_partial(ctx.work_dir, "mdrnn")
    return meta


# --- C ------------------------------------------------------------------------------------
def controller_stage(ctx: StageContext, on_generation) -> dict:
    """CMA-ES over C's parameters; each candidate scored by its mean return over ``cma_rollouts``.

    ``on_generation(real_steps_so_far) -> bool`` is called after every generation (the agent
    forwards it to the training callback); False stops the search. Every ``cma_eval_every``
    generations and after the last one, the search distribution's mean is scored on
    ``cma_eval_rollouts`` held-out episodes (the same ones each time; in M's dream when
    controller_env is dream; always played to the end, whatever ``controller_patience``), and the
    kept controller is the mean with the best held-out score, as in the paper. Keeping whichever
    candidate or mean scored best on one generation's few episodes picks lucky controllers: on
    Catch a mean that scored 10 on 8 episodes scored 8.5 over 100.
    """
    cfg = ctx.cfg
    vae_path, mdrnn_path = ctx.work_dir / art.VAE_FILE, ctx.work_dir / art.MDRNN_FILE
    _, vmeta = art.load_vae(vae_path, "cpu", {"z_dim": cfg.z_dim, "env_id": ctx.env_id}, "controller")
    _, _, mmeta = art.load_mdrnn(mdrnn_path, "cpu", {"z_dim": cfg.z_dim, "hidden": cfg.mdrnn_hidden,
                                                     "vae_id": vmeta["vae_id"], "env_id": ctx.env_id}, "controller")
    if mmeta.get("frame_skip", 1) != cfg.frame_skip:  # M learnt steps of that many frames
        raise UsageError(f"mdrnn.pt was trained on data with frame_skip={mmeta.get('frame_skip', 1)}, "
                         f"but this config has frame_skip={cfg.frame_skip}")
    codec = ActionCodec(ctx.action_space)
    in_dim, out_dim = cfg.controller_in_dim(), codec.out_dim
    dim = out_dim * in_dim + out_dim
    dream = cfg.controller_env == "dream"
    max_steps = (cfg.dream_max_steps or mmeta["max_episode_len"]) if dream else cfg.controller_max_steps
    sizes = {"in_dim": in_dim, "out_dim": out_dim, "mode": cfg.controller_env, "mdrnn_id": mmeta["mdrnn_id"],
             "popsize": cfg.cma_popsize, "dream_input": cfg.dream_controller_input if dream else None}
    partial = art.load_partial(ctx.work_dir, "controller", "cpu", sizes)
    if partial is not None:
        state, meta = partial
        es = CMAES.from_state(state["es"])
        best, best_score, real_steps = state["best"].numpy(), float(meta["best_score"]), int(meta["real_steps"])
    else:
        es = CMAES(dim, cfg.cma_popsize, cfg.cma_sigma0, seed=ctx.seed)
        best, best_score, real_steps = es.mean.copy(), -math.inf, 0
    first = int(ctx.rng(4).integers(2**31 - cfg.cma_eval_rollouts))
    eval_seeds = [first + k for k in range(cfg.cma_eval_rollouts)]
    spec = {"env_id": ctx.env_id, "env_kwargs": ctx.env_kwargs, "vae_path": str(vae_path),
            "mdrnn_path": str(mdrnn_path), "mode": cfg.controller_env, "temperature": cfg.dream_temperature,
            "max_steps": int(max_steps), "done_threshold": cfg.dream_done_threshold,
            "controller_input": cfg.dream_controller_input, "frame_skip": cfg.frame_skip,
            "squash": cfg.controller_squash}
    stopped = False
    with (ctx.workers_for(spec, ctx.workers) as group,
          ctx.bar(cfg.cma_generations, f"controller ({cfg.controller_env})", "gen") as bar):
        bar.update(es.generation)
        while es.generation < cfg.cma_generations and not stopped:
            gen = es.generation
            solutions = es.ask()
            gen_seed = int(ctx.rng(3, gen).integers(2**31 - 2 * cfg.cma_rollouts))
            seeds = [gen_seed + k for k in range(cfg.cma_rollouts)]
            results = group.map("evaluate", [(c, seeds, cfg.controller_patience)
                                             for c in _split(solutions, group.n_workers)])
            fitness = np.concatenate([r for r, _ in results]).mean(axis=1)
            real_steps += sum(s for _, s in results)
            es.tell(solutions, fitness)
            scalars = {"controller/best": fitness.max(), "controller/mean": fitness.mean(),
                       "controller/sigma": es.sigma}
            if (gen + 1) % cfg.cma_eval_every == 0 or gen + 1 == cfg.cma_generations:
                held_out = group.map("evaluate", [(es.mean[None], list(part))
                                                  for part in _split(eval_seeds, group.n_workers)])
                real_steps += sum(s for _, s in held_out)
                score = float(np.concatenate([r[0] for r, _ in held_out]).mean())
                scalars["controller/mean_held_out"] = score
                if score >= best_score:
                    best, best_score = es.mean.copy(), score
            ctx.logger.scalars(scalars, gen + 1)
            if not dream:
                ctx.logger.scalar("rollout/ep_rew_mean", float(fitness.mean()), ctx.extra["steps0"] + real_steps)
            save_checkpoint(art.partial_path(ctx.work_dir, "controller"),
                            {"es": es.state(), "best": torch.as_tensor(best)},
                            {**sizes, "best_score": best_score, "real_steps": real_steps})
            bar.update(1)
            bar.set_postfix(best=f"{fitness.max():.2f}", kept=f"{best_score:.2f}", refresh=False)
            stopped = not on_generation(real_steps, best)
    meta = art.save_controller(ctx.work_dir / art.CONTROLLER_FILE, best, {
        "in_dim": in_dim, "out_dim": out_dim, "z_dim": cfg.z_dim, "hidden": cfg.mdrnn_hidden,
        "mode": cfg.controller_env, "vae_id": vmeta["vae_id"], "mdrnn_id": mmeta["mdrnn_id"],
        "score": best_score, "generations": es.generation, "real_steps": real_steps, **ctx.spaces()})
    art.drop_partial(ctx.work_dir, "controller")
    return meta


def _split(items, workers: int) -> list:
    """``items`` in at most ``workers`` non-empty consecutive chunks (one task per worker)."""
    return [c for c in np.array_split(items, min(workers, len(items))) if len(c)]


RECONSTRUCTION_ROWS = ("frame", "V's reconstruction")  # vae_reconstruction.png: side_by_side's two rows


def label_rows(image_hwc: np.ndarray, labels, size: int = 14) -> np.ndarray:
    """``image_hwc`` with a column on its left naming each of its ``len(labels)`` equal-height rows
    (white text on dark grey, PIL's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: its fixed bitmap font
        font = ImageFont.load_default()
    height = image_hwc.shape[0]
    row = height // len(labels)
    pad = 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), text, font=font) for text in labels]
    width = max(box[2] - box[0] for box in boxes) + 2 * pad
    column = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(column)
    for i, (text, box) in enumerate(zip(labels, boxes)):
        y = i * row + (row - (box[3] - box[1])) // 2 - box[1]
        draw.text((pad - box[0], y), text, fill=(255, 255, 255), font=font)
    return np.concatenate([np.asarray(column, dtype=np.uint8), image_hwc[..., :3]], axis=1)


def write_png(path: Path, image_hwc: np.ndarray, scale: int = 2, row_labels=None) -> None:
    """Save an HWC uint8 image, each pixel drawn ``scale`` x ``scale`` (64x64 frames are small), with
    ``row_labels`` (one per row of frames) in a column on its left."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    image = image_hwc.repeat(scale, axis=0).repeat(scale, axis=1)
    if row_labels:
        image = label_rows(image, row_labels)
    imageio.imwrite(tmp, image)
    tmp.replace(path)


DREAM_MAX_GAIN = 10.0


def dream_gain(decoded: torch.Tensor) -> float:
    """The factor write_dream_gif scales a clip's decoded pixels by: 1 / their 99.9th percentile,
    within [1, DREAM_MAX_GAIN] (1 for an empty or all-black clip)."""
    if not decoded.numel():
        return 1.0
    level = float(np.percentile(decoded.detach().float().cpu().numpy(), 99.9))
    return float(min(DREAM_MAX_GAIN, 1.0 / level)) if 0.0 < level < 1.0 else 1.0


def write_dream_gif(path: Path, vae, mdrnn, extra: dict, codec: ActionCodec, params, seed: int, temperature: float,
                    max_steps: int, controller_input: str = "mean", fps: int = 15) -> np.ndarray:
    """Dream one episode with controller ``params``, decode every latent with V, save a GIF.

    V decodes to sigmoid outputs in [0, 1], and a small or briefly trained V draws Catch's white
    ball and paddle as faint blurs on black (at the tiny test sizes: median 0.01, 99.9th percentile
    0.15, a frame's brightest pixel 0.1-0.5), so the clip looked black. Its pixel values are
    multiplied by one factor for the whole clip, 1 / its 99.9th percentile (at most DREAM_MAX_GAIN,
    never below 1) and clipped to [0, 1]: the faint objects become visible, brightness within the
    clip stays relative, and a V that already decodes its objects white is left unchanged.
    ``vae_reconstruction.png`` is not scaled: it shows V's reconstructions beside the frames as they are.

    Returns the latent trajectory (T, z_dim) so callers can check it is finite.
    """
    import imageio.v2 as imageio

    from agents.world_models.rollouts import dream_rollouts
    from agents.world_models.vae import to_uint8

    params = np.asarray(torch.as_tensor(params).cpu().float().numpy())[None]
    _, traj = dream_rollouts(mdrnn, codec, params, extra["init_mu"], extra["init_logvar"], [seed],
                             temperature, max_steps, record=True, controller_input=controller_input)
    with torch.no_grad():
        decoded = vae.decode(traj.to(next(vae.parameters()).device))
        frames = to_uint8(decoded * dream_gain(decoded))  # to_uint8 clips to [0, 1]
    frames = frames.repeat(2, axis=1).repeat(2, axis=2)  # 128x128: easier to look at
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.gif")
    imageio.mimsave(tmp, list(frames), duration=1000.0 / fps, loop=0)
    tmp.replace(path)
    return traj.cpu().numpy()
