"""World Models: V, M and C maths, artifacts and their checks, the staged pipeline on Catch."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from agents.world_models import WorldModels  # noqa: E402
from agents.world_models import artifacts as art  # noqa: E402
from agents.world_models.controller import CMAES, ActionCodec, linear_outputs, n_params  # noqa: E402
from agents.world_models.frameskip import fast_road_drawing, step_held  # noqa: E402
from agents.world_models.mdrnn import MDNRNN, mdrnn_loss, mixture_nll, sample_mixture  # noqa: E402
from agents.world_models.rollouts import PolicyState, dream_rollouts, real_rollouts  # noqa: E402
from agents.world_models.stages import write_dream_gif  # noqa: E402
from agents.world_models.vae import ConvVAE, to_tensor, vae_loss  # noqa: E402
from rlkit.environments import make_env  # noqa: E402
from rlkit.errors import UsageError  # noqa: E402

ENV = "rlkit/Catch-v0"

# Tiny sizes: the whole pipeline on Catch in a few seconds.
TINY = dict(collect_episodes=4, episodes_per_file=2, z_dim=4, vae_channels=4, vae_epochs=1, vae_batch_size=32,
            vae_lr=3e-3, vae_recon_loss="bce", vae_norm="batch", mdrnn_hidden=8, mdrnn_gaussians=2,
            mdrnn_epochs=1, mdrnn_seq_len=16, cma_popsize=4, cma_rollouts=1, cma_generations=2,
            controller_max_steps=40, dream_max_steps=30, workers=1, threads=1, progress=False)


def tiny_config(**overrides):
    return replace(WorldModels.Config(**TINY), **overrides)


# --- V --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,blur,encoder", [("none", 0.0, "conv"), ("batch", 2.0, "conv"), ("group", 0.0, "conv"),
                                               ("none", 0.0, "keypoints"), ("batch", 0.0, "keypoints")])
def test_vae_shapes(norm, blur, encoder):
    vae = ConvVAE(z_dim=6, channels=4, norm=norm, blur=blur, encoder=encoder)
    x = torch.rand(5, 3, 64, 64)
    logits, mu, logvar = vae(x)
    assert logits.shape == (5, 3, 64, 64) and mu.shape == (5, 6) and logvar.shape == (5, 6)
    assert vae.decode(mu).min() >= 0 and vae.decode(mu).max() <= 1
    assert vae.prepare(x).shape == x.shape


@pytest.mark.parametrize("recon", ["mse", "bce"])
def test_vae_loss_decreases_on_synthetic_frames(recon):
    torch.manual_seed(0)
    # Four fixed "frames" (a bright square at four places): a VAE must learn to tell them apart.
    x = torch.zeros(4, 3, 64, 64)
    for i in range(4):
        x[i, :, 8 + 12 * i: 20 + 12 * i, 8 + 12 * i: 20 + 12 * i] = 1.0
    vae = ConvVAE(z_dim=4, channels=4, norm="batch")
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        logits, mu, logvar = vae(x)
        loss, _, _ = vae_loss(x, logits, mu, logvar, free_bits=0.5, recon_loss=recon)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_keypoints_torso_is_the_expected_position_of_each_map():
    # With a torso whose only map is "how bright is this pixel", times a large gain, the soft-argmax
    # is the centre of a white square, exactly, and moves linearly with it.
    vae = ConvVAE(z_dim=4, channels=4, encoder="keypoints")
    kp = vae.encoder
    kp.net = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Conv2d(3, 1, 1, bias=False))  # (B, 1, 16, 16)
    torch.nn.init.constant_(kp.net[1].weight, 20.0)
    xs = []
    cols = (0, 2, 4, 8, 36, 60)  # 2: half in cell 0, half in cell 1
    for col in cols:
        x = torch.zeros(1, 3, 64, 64)
        x[0, :, 20:24, col:col + 4] = 1.0  # a Catch-sized ball: one cell of the 16 x 16 grid
        out = kp(x)[0]
        assert out.shape == (2,)
        spacing = 2.0 / 15  # 16 grid cells span [-1, 1]
        assert out[0].item() == pytest.approx(-1 + spacing * col / 4, abs=1e-4)
        assert out[1].item() == pytest.approx(-1 + spacing * 20 / 4, abs=1e-4)
        xs.append(out[0].item())
    steps = np.diff(xs) / np.diff(cols)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-4)


def test_keypoints_v_places_the_ball_linearly_where_the_papers_v_does_not():
    # The reason the option exists (docs/world_models.md): after the same short training on random
    # Catch frames, a least-squares read-out of the ball's column from V's mean is far more precise
    # for the keypoints torso than for the paper's flattening one.
    env = make_env(ENV)  # pixels by default
    rng = np.random.default_rng(0)
    frames, cols = [], []
    for episode in range(16):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            frames.append(obs)
            cols.append(env.unwrapped.state[0])
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
            done = terminated or truncated
    env.close()
    frames, cols = np.stack(frames), np.asarray(cols, float)
    train, test = slice(0, 1800), slice(1800, None)

    def readout_error(encoder: str) -> float:
        torch.manual_seed(0)
        vae = ConvVAE(z_dim=8, channels=4, encoder=encoder)
        opt = torch.optim.Adam(vae.parameters(), lr=4e-3)
        order = np.random.default_rng(1)
        for _ in range(2):
            for idx in np.array_split(order.permutation(1800), 1800 // 16):
                x = to_tensor(frames[train][idx], "cpu")
                logits, mu, logvar = vae(x)
                loss, _, _ = vae_loss(x, logits, mu, logvar, free_bits=0.5, recon_loss="bce")
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            z = vae.encode(to_tensor(frames, "cpu"))[0].numpy()
        a = np.c_[z, np.ones(len(z))]
        w = np.linalg.lstsq(a[train], cols[train], rcond=None)[0]
        return float(np.abs(a[test] @ w - cols[test]).mean())

    keypoints, conv = readout_error("keypoints"), readout_error("conv")
    # Measured: 0.08 against 3.81 columns (of 16) after two epochs on 1,800 frames, batches of 16.
    assert keypoints < 0.5, keypoints
    assert conv > 3 * keypoints, (conv, keypoints)


def test_vae_free_bits_floor():
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = torch.zeros(2, 8), torch.zeros(2, 8)  # KL = 0 exactly
    loss, recon, kl = vae_loss(x, torch.zeros_like(x), mu, logvar, free_bits=0.5)
    assert kl.item() == pytest.approx(0.0)
    assert loss.item() == pytest.approx(recon.item() + 0.5 * 8)  # the floor, not the KL, is paid


def test_vae_kl_weight_scales_only_the_kl_term():
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = torch.full((2, 8), 2.0), torch.zeros(2, 8)  # KL = 0.5 * 8 * 4 = 16 nats per frame
    full, recon, kl = vae_loss(x, torch.zeros_like(x), mu, logvar, free_bits=0.5)
    beta, recon_b, kl_b = vae_loss(x, torch.zeros_like(x), mu, logvar, free_bits=0.5, kl_weight=0.25)
    assert kl.item() == pytest.approx(16.0) and kl_b.item() == pytest.approx(16.0)
    assert full.item() == pytest.approx(recon.item() + 16.0)
    assert beta.item() == pytest.approx(recon_b.item() + 0.25 * 16.0)


# --- M --------------------------------------------------------------------------------------
def test_mixture_nll_matches_hand_computation():
    # One latent dimension, two components: pi = (0.3, 0.7), mu = (0, 1), sigma = (1, 0.5), z = 0.5.
    def normal(z, m, s):
        return math.exp(-0.5 * ((z - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    expected = -math.log(0.3 * normal(0.5, 0.0, 1.0) + 0.7 * normal(0.5, 1.0, 0.5))
    logpi = torch.log(torch.tensor([[[0.3, 0.7]]]))
    mu = torch.tensor([[[0.0, 1.0]]])
    logsigma = torch.log(torch.tensor([[[1.0, 0.5]]]))
    got = mixture_nll(torch.tensor([[0.5]]), logpi, mu, logsigma)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)

    # Shared mixture over two dimensions: -log sum_k pi_k N(z1; mu_1k, s_1k) N(z2; mu_2k, s_2k).
    z = (0.5, -1.0)
    mus, sigmas = ((0.0, 1.0), (-1.0, 0.0)), ((1.0, 0.5), (0.5, 2.0))  # [dim][component]
    expected = -math.log(sum(pk * normal(z[0], mus[0][k], sigmas[0][k]) * normal(z[1], mus[1][k], sigmas[1][k])
                             for k, pk in enumerate((0.3, 0.7))))
    got = mixture_nll(torch.tensor([z]), torch.log(torch.tensor([[[0.3, 0.7]]])), torch.tensor([mus]),
                      torch.log(torch.tensor([sigmas])))
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mixture", ["per_dim", "shared"])
def test_mdrnn_shapes_and_loss_decreases(mixture):
    torch.manual_seed(0)
    b, t, z_dim, a_dim = 8, 12, 3, 2
    model = MDNRNN(z_dim, a_dim, hidden=16, gaussians=3, mixture=mixture)
    # A deterministic toy world: z_{t+1} = 0.9 z_t + action-dependent shift; reward = z[0].
    z = torch.zeros(b, t + 1, z_dim)
    z[:, 0] = torch.randn(b, z_dim)
    a = torch.nn.functional.one_hot(torch.randint(0, a_dim, (b, t)), a_dim).float()
    for k in range(t):
        z[:, k + 1] = 0.9 * z[:, k] + 0.5 * (a[:, k, :1] - 0.5)
    r, d = z[:, :-1, 0].clone(), torch.zeros(b, t)
    d[:, -1] = 1
    mask = torch.ones(b, t, dtype=torch.bool)
    out = model(z[:, :-1], a)
    groups = z_dim if mixture == "per_dim" else 1
    assert out[0].shape == (b, t, groups, 3) and out[1].shape == (b, t, z_dim, 3)
    assert out[3].shape == (b, t) and out[4].shape == (b, t)
    assert torch.allclose(out[0].exp().sum(-1), torch.ones(b, t, groups), atol=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = mdrnn_loss(model(z[:, :-1], a), z[:, 1:], r, d, mask)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    # One-step interface agrees with the sequence interface.
    state = model.initial_state(b)
    step_out = model.step(z[:, 0], a[:, 0], state)
    seq_out = model(z[:, :1], a[:, :1])
    assert torch.allclose(step_out[1], seq_out[1][:, 0], atol=1e-6)


def test_shared_mixture_samples_coherent_latents():
    # Two equally likely joint modes (-3, -3) and (3, 3): a shared mixture never mixes them.
    logpi = torch.log(torch.tensor([0.5, 0.5])).expand(500, 1, 2)
    mu = torch.tensor([[-3.0, 3.0], [-3.0, 3.0]]).expand(500, 2, 2)
    z = sample_mixture(logpi, mu, torch.full((500, 2, 2), -3.0), generator=torch.Generator().manual_seed(0))
    assert (torch.sign(z[:, 0]) == torch.sign(z[:, 1])).all()


def test_sample_mixture_temperature_and_shapes():
    gen = torch.Generator().manual_seed(0)
    logpi = torch.log(torch.tensor([0.5, 0.5])).expand(2000, 1, 2)
    mu = torch.tensor([-3.0, 3.0]).expand(2000, 1, 2)
    logsigma = torch.log(torch.tensor([0.1, 0.1])).expand(2000, 1, 2)
    z = sample_mixture(logpi, mu, logsigma, 1.0, generator=gen)
    assert z.shape == (2000, 1)
    assert abs((z > 0).float().mean().item() - 0.5) < 0.05  # both modes are drawn
    z_hot = sample_mixture(logpi, mu, logsigma, 4.0, generator=gen)
    near = (z_hot.abs() - 3).abs()
    assert near.std() > (z.abs() - 3).abs().std()  # tau > 1 widens each component



def test_sample_mixture_mean_is_the_drawn_component_without_noise():
    logpi = torch.log(torch.tensor([0.5, 0.5])).expand(400, 3, 2)
    mu = torch.tensor([-3.0, 3.0]).expand(400, 3, 2)
    logsigma = torch.full((400, 3, 2), math.log(0.5))
    noise = (torch.rand(400, 3, generator=torch.Generator().manual_seed(1)),
             torch.randn(400, 3, generator=torch.Generator().manual_seed(2)))
    z, mean = sample_mixture(logpi, mu, logsigma, 0.5, noise=noise, with_mean=True)
    assert set(mean.unique().tolist()) == {-3.0, 3.0}  # a component's mean, never a blend
    torch.testing.assert_close(z - mean, 0.5 * math.sqrt(0.5) * noise[1])  # z = mean + sigma sqrt(tau) eps
    torch.testing.assert_close(z, sample_mixture(logpi, mu, logsigma, 0.5, noise=noise))

# --- C and CMA-ES ---------------------------------------------------------------------------
def test_action_codec_discrete_and_box():
    from gymnasium import spaces

    disc = ActionCodec(spaces.Discrete(3))
    out = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert disc.to_env(disc.squash(out)).tolist() == [1, 0]
    assert disc.to_m(torch.tensor([2])).tolist() == [[0.0, 0.0, 1.0]]
    box = ActionCodec(spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32)))
    a = box.squash(torch.tensor([[0.0, 0.0, -100.0]]))
    assert torch.allclose(a, torch.tensor([[0.0, 0.5, 0.0]]), atol=1e-6)  # tanh steer, (tanh+1)/2 pedals
    # The paper's CarRacing C: the brake is clip(tanh(o), 0, 1), off for every o <= 0.
    paper = ActionCodec(box_space := spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32)),
                        "tanh,tanh,clip")
    o = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 1.0, -2.0], [0.0, -1.0, 0.7]])
    t = torch.tanh(o)
    expect = torch.stack([t[:, 0], (t[:, 1] + 1) / 2, t[:, 2].clamp(0, 1)], dim=1)
    torch.testing.assert_close(paper.squash(o), expect)
    assert paper.squash(o)[:, 2].tolist()[:2] == [0.0, 0.0]
    clipped = t.clamp(torch.tensor([-1.0, 0, 0]), torch.ones(3))
    torch.testing.assert_close(ActionCodec(box_space, "clip").squash(o), clipped)
    for bad in ("tanh,clip", "sigmoid"):
        with pytest.raises(UsageError, match="controller_squash"):
            ActionCodec(box_space, bad)


def test_controller_squash_is_saved_with_the_agent(tmp_path):
    agent = WorldModels("CarRacing-v3", tiny_config(controller_squash="tanh,tanh,clip"), device="cpu")
    agent.save(tmp_path / "agent.pt")
    assert WorldModels.load(tmp_path / "agent.pt").codec.clip.tolist() == [False, False, True]
    with pytest.raises(UsageError, match="controller_squash"):
        WorldModels("CarRacing-v3", tiny_config(controller_squash="tanh,clip"), device="cpu")


def test_linear_outputs_per_row_parameters():
    in_dim, out_dim = 3, 2
    p = torch.randn(4, n_params(in_dim, out_dim))
    x = torch.randn(4, in_dim)
    got = linear_outputs(p, x)
    for i in range(4):
        w = p[i, : out_dim * in_dim].view(out_dim, in_dim)
        assert torch.allclose(got[i], w @ x[i] + p[i, out_dim * in_dim:], atol=1e-6)


def test_cmaes_finds_quadratic_optimum_through_controller_params():
    # Maximise -||W - W*||^2 over the flat parameters of a 2x3 linear controller (+ bias).
    target = np.linspace(-1, 1, n_params(3, 2))
    es = CMAES(dim=target.size, popsize=12, sigma0=0.5, seed=1)
    for _ in range(150):
        x = es.ask()
        es.tell(x, -((x - target) ** 2).sum(axis=1))
    assert np.abs(es.mean - target).max() < 1e-2


def test_cmaes_state_round_trip_continues_exactly(tmp_path):
    from rlkit.checkpoint import load_checkpoint, save_checkpoint

    def f(x):
        return -((x - 1.0) ** 2 * np.arange(1, 6)).sum(axis=1)

    es = CMAES(dim=5, popsize=8, sigma0=0.5, seed=3)
    for _ in range(7):
        x = es.ask()
        es.tell(x, f(x))
    save_checkpoint(tmp_path / "es.pt", {"es": es.state()}, {})  # plain tensors, weights-only loadable
    for _ in range(4):
        x = es.ask()
        es.tell(x, f(x))
    state, _ = load_checkpoint(tmp_path / "es.pt")
    resumed = CMAES.from_state(state["es"])
    assert resumed.generation == 7
    for _ in range(4):
        x = resumed.ask()
        resumed.tell(x, f(x))
    np.testing.assert_allclose(resumed.mean, es.mean)
    assert resumed.sigma == pytest.approx(es.sigma)
    assert not Path("outcmaes").exists()


# --- artifacts ------------------------------------------------------------------------------
def test_artifacts_record_sizes_and_refuse_mismatched_stage(tmp_path):
    meta = art.save_vae(tmp_path / "vae.pt", ConvVAE(32, 4), {"vae_id": "v1", "env_id": ENV})
    assert meta["z_dim"] == 32 and meta["channels"] == 4
    vae, _ = art.load_vae(tmp_path / "vae.pt", expect={"z_dim": 32})
    assert vae.z_dim == 32
    with pytest.raises(UsageError, match="vae.pt has z_dim=32 but mdrnn expects 16"):
        art.load_vae(tmp_path / "vae.pt", expect={"z_dim": 16}, consumer="mdrnn")
    m = MDNRNN(32, 3, 8, 2)
    art.save_mdrnn(tmp_path / "mdrnn.pt", m, torch.zeros(2, 32), torch.zeros(2, 32), {"vae_id": "v1", "mdrnn_id": "m1"})
    with pytest.raises(UsageError, match="mdrnn.pt has vae_id=v1 but controller expects v2"):
        art.load_mdrnn(tmp_path / "mdrnn.pt", expect={"vae_id": "v2"}, consumer="controller")
    with pytest.raises(UsageError, match="not a world-models vae artifact"):
        art.load_vae(tmp_path / "mdrnn.pt")
    # The torso is recorded and rebuilt; an artifact from before the option loads as the paper's.
    art.save_vae(tmp_path / "kp.pt", ConvVAE(8, 4, encoder="keypoints"), {"vae_id": "v3", "env_id": ENV})
    assert art.load_vae(tmp_path / "kp.pt", expect={"encoder": "keypoints"})[0].encoder_kind == "keypoints"
    old_sizes = {k: v for k, v in ConvVAE(8, 4).sizes().items() if k != "encoder"}
    assert ConvVAE.from_sizes(old_sizes).encoder_kind == "conv"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError):
        art.load_vae(tmp_path / "junk.pt")


def test_config_errors_are_usage_errors():
    with pytest.raises(UsageError, match="stage 'vea'"):
        WorldModels(ENV, tiny_config(stage="vea"))
    with pytest.raises(UsageError, match="controller_env"):
        WorldModels(ENV, tiny_config(controller_env="sim"))
    with pytest.raises(UsageError, match="RGB uint8 frames"):
        WorldModels(ENV, tiny_config(), env_kwargs={"obs_type": "vector"})


def test_stage_vae_without_data_says_what_is_missing(tmp_path):
    agent = WorldModels(ENV, tiny_config(stage="vae"), run_dir=tmp_path)
    with pytest.raises(UsageError, match="run stage=collect first"):
        agent.learn(0)


# --- the pipeline ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One tiny run of every stage on Catch-v0 (real-env controller), shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("wm_run")
    calls = []

    class Callback:
        def on_step(self, n, agent):
            calls.append(n)
            return True

    agent = WorldModels(ENV, tiny_config(), seed=0, device="cpu", run_dir=run_dir)
    agent.learn(10**9, callback=Callback())
    return agent, run_dir, calls


def test_pipeline_smoke_writes_every_artifact(pipeline):
    agent, run_dir, calls = pipeline
    for name in ("data/manifest.json", "vae.pt", "mdrnn.pt", "controller.pt", "videos/dream.gif"):
        assert (run_dir / name).is_file(), name
    import imageio.v2 as imageio

    # V's frames (top row) over its reconstructions (bottom), each pixel drawn 2 x 2, after a label column.
    png = imageio.imread(run_dir / "videos" / "vae_reconstruction.png")
    assert png.shape[0] == 2 * 2 * 64 and png.shape[1] > 8 * 2 * 64 and png.shape[2] == 3
    assert len(list((run_dir / "data").glob("rollouts_*.npz"))) == 2
    assert not (run_dir / "stages" / "vae_last.pt").exists()  # partial checkpoints are cleaned up
    assert calls and calls == sorted(calls) and calls[-1] == agent.num_timesteps
    assert agent.num_timesteps == 4 * 150 + agent.metas["controller"]["real_steps"]
    assert (run_dir / "checkpoints" / "latest").is_file()  # `--resume` has something to load
    with np.load(run_dir / "data" / "rollouts_00000.npz") as f:
        assert f["obs"].shape[1:] == (64, 64, 3) and f["obs"].dtype == np.uint8
        assert len(f["obs"]) == len(f["actions"]) + len(f["lengths"])  # the final frame is kept
        assert f["dones"].sum() == len(f["lengths"])  # Catch ends by termination


def test_pipeline_predict_is_batched_and_recurrent(pipeline):
    agent, _, _ = pipeline
    import gymnasium as gym

    env = gym.make(ENV)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    a1 = agent.predict(obs, episode_start=np.ones(3, dtype=bool))
    assert a1.shape == (3,) and a1.dtype.kind == "i" and set(a1.tolist()) <= {0, 1, 2}
    h_before = agent._policy.state[0].clone()
    agent.predict(obs, episode_start=np.array([True, False, False]))
    h_after = agent._policy.state[0]
    assert not torch.equal(h_before[0, 1], h_after[0, 1])  # rows that continue carry memory


def test_policy_runs_v_c_and_m_on_the_active_rows_only_and_m_only_for_an_h_reading_c(pipeline, monkeypatch):
    """Rows that ended or hold their action (frame_skip) cost nothing: V encodes only the active rows,
    whose actions and h are those of a full batch; the others keep their h. A z-only C never steps M."""
    agent, _, _ = pipeline
    frames = np.stack([make_env(ENV).reset(seed=s)[0] for s in range(4)])
    params = torch.randn(4, n_params(agent.cfg.controller_in_dim(), agent.codec.out_dim))
    encoded = []
    encode = agent.vae.encode
    monkeypatch.setattr(agent.vae, "encode", lambda x: (encoded.append(len(x)), encode(x))[1])
    full, masked = PolicyState(agent.vae, agent.mdrnn, agent.codec, "cpu"), PolicyState(agent.vae, agent.mdrnn,
                                                                                          agent.codec, "cpu")
    for policy in (full, masked):
        policy.reset(4)
        policy.act(frames, params)  # some memory in every row first
    before = tuple(s.clone() for s in masked.state)
    active = np.array([True, False, True, False])
    a_full, a_masked = full.act(frames, params), masked.act(frames, params, active)
    assert encoded[-2:] == [4, 2]
    np.testing.assert_array_equal(a_masked[active], a_full[active])
    for s_full, s_masked, s_before in zip(full.state, masked.state, before):
        torch.testing.assert_close(s_masked[:, active], s_full[:, active])
        assert torch.equal(s_masked[:, ~active], s_before[:, ~active])
    z_only = torch.randn(4, n_params(agent.cfg.z_dim, agent.codec.out_dim))
    monkeypatch.setattr(agent.mdrnn, "step", lambda *a: pytest.fail("a z-only controller stepped M"))
    assert masked.act(frames, z_only, active).shape == a_full.shape


def test_a_stage_run_commits_its_run_state_and_scores_no_zero_controller(tmp_path):
    """`rlkit train --algo world-models --set stage=collect`: no evaluation and no final score of the
    zero controller (they would mean nothing), even with an evaluation due; the stage's checkpoint is
    a commit that carries the run state, as every other agent's, before the driver's last one; and
    eval_every defaults to world-models' own."""
    from rlkit import runs, training

    committed_at_hook = []

    def on_step(num_timesteps, agent):  # right after the stage, before learn returns to the driver
        committed_at_hook.append(runs.committed_state(runs.committed_checkpoint(run_dir)))

    run_dir = tmp_path / "run"
    training.train("world-models", ENV, seed=0, device="cpu", sets={**TINY, "stage": "collect"}, run_dir=run_dir,
                   eval_every=100, progress=False, quiet=True, on_step=on_step)
    info = runs.load_run_info(run_dir)
    assert info["status"] == "finished" and info["steps"] == 4 * 150
    assert "evals" not in info and "final_eval" not in info and "best" not in info
    assert [state and state["steps"] for state in committed_at_hook] == [4 * 150]
    other = training.train("world-models", ENV, seed=0, device="cpu", sets={**TINY, "stage": "collect"},
                           run_dir=tmp_path / "default", progress=False, quiet=True)
    assert runs.read_config(other)["eval_every"] == WorldModels.default_eval_every


def test_save_load_identical_predictions(pipeline, tmp_path):
    agent, _, _ = pipeline
    import gymnasium as gym

    env = gym.make(ENV)
    agent.save(tmp_path / "wm.pt")
    loaded = WorldModels.load(tmp_path / "wm.pt")
    assert loaded.vae.z_dim == 4 and loaded.mdrnn.hidden == 8  # sizes from the checkpoint
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    start = np.ones(4, dtype=bool)
    for step in range(5):
        np.testing.assert_array_equal(agent.predict(obs, episode_start=start),
                                      loaded.predict(obs, episode_start=start))
        start = np.zeros(4, dtype=bool)
        obs = np.roll(obs, step + 1, axis=2)


def test_load_refuses_other_env(pipeline, tmp_path):
    from rlkit.checkpoint import check_spaces

    agent, _, _ = pipeline
    agent.save(tmp_path / "wm.pt")
    from rlkit.checkpoint import load_checkpoint

    _, meta = load_checkpoint(tmp_path / "wm.pt")
    from gymnasium import spaces

    with pytest.raises(UsageError, match="action space"):
        check_spaces(meta, agent.observation_space, spaces.Discrete(4))


def test_stage_all_skips_finished_stages(pipeline):
    agent, run_dir, _ = pipeline
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "vae.pt", run_dir / "mdrnn.pt", run_dir / "controller.pt")}
    again = WorldModels(ENV, tiny_config(), run_dir=run_dir)
    again.learn(10**9)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert torch.equal(again.params, agent.params)
    assert again.metas["controller"]["mdrnn_id"] == agent.metas["mdrnn"]["mdrnn_id"]


def test_stage_run_alone_matches_one_command_run(pipeline, tmp_path):
    """M trained by `--set stage=mdrnn` on the same data and V equals M from the all-stages run,
    whatever used torch's global RNG before it (initial weights depend on (seed, stage) only)."""
    agent, run_dir, _ = pipeline
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    for f in (run_dir / "data").iterdir():
        (work / "data" / f.name).write_bytes(f.read_bytes())
    (work / "vae.pt").write_bytes((run_dir / "vae.pt").read_bytes())
    torch.manual_seed(12345)
    torch.rand(1000)  # unrelated RNG use in the same process
    alone = WorldModels(ENV, tiny_config(stage="mdrnn", work_dir=str(work)), seed=0, device="cpu")
    alone.learn(0)
    for name, value in agent.mdrnn.state_dict().items():
        assert torch.equal(alone.mdrnn.state_dict()[name], value), name


def test_dream_rollout_finite_latents_and_gif(pipeline, tmp_path):
    agent, _, _ = pipeline
    traj = write_dream_gif(tmp_path / "dream.gif", agent.vae, agent.mdrnn, agent.init_latents, agent.codec,
                           agent.params, seed=0, temperature=1.2, max_steps=20)
    assert traj.ndim == 2 and traj.shape[1] == 4 and np.isfinite(traj).all()
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "dream.gif")
    assert len(frames) == len(traj) and frames[0].shape[:2] == (128, 128)
    params = np.random.default_rng(0).normal(size=(3, agent.params.numel()))
    returns = dream_rollouts(agent.mdrnn, agent.codec, params, agent.init_latents["init_mu"],
                             agent.init_latents["init_logvar"], seeds=[1, 2], temperature=1.0, max_steps=15)
    assert returns.shape == (3, 2) and np.isfinite(returns).all()


def test_dream_scores_do_not_depend_on_batching(pipeline):
    """Common random numbers per dream episode: a controller's dream returns are the same whatever
    other controllers share its batch and however the episode seeds are split over workers."""
    agent, _, _ = pipeline
    params = np.random.default_rng(0).normal(size=(3, agent.params.numel()))

    def dream(p, seeds):
        return dream_rollouts(agent.mdrnn, agent.codec, p, agent.init_latents["init_mu"],
                              agent.init_latents["init_logvar"], seeds=seeds, temperature=1.0, max_steps=25)

    together = dream(params, [5, 6, 7])
    np.testing.assert_allclose(dream(params[1:2], [5, 6, 7]), together[1:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.hstack([dream(params, [5]), dream(params, [6, 7])]), together, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[:, 0], together[:, 1])  # different seeds, different episodes


def test_dream_controller_sees_noise_free_latents(pipeline, monkeypatch):
    """controller_input=mean: C's z input is the start frame's posterior mean, then the drawn
    components' means (what V's mean is in the real env); sample: the sampled z (the paper)."""
    import agents.world_models.rollouts as rollouts

    agent, _, _ = pipeline
    seen = []
    real_linear = rollouts.linear_outputs
    monkeypatch.setattr(rollouts, "linear_outputs", lambda p, x: seen.append(x[:, :4].clone()) or real_linear(p, x))
    params = np.random.default_rng(0).normal(size=(1, agent.params.numel()))
    bank = agent.init_latents["init_mu"]
    for mode in ("mean", "sample"):
        seen.clear()
        dream_rollouts(agent.mdrnn, agent.codec, params, bank, agent.init_latents["init_logvar"], seeds=[3, 4],
                       temperature=1.0, max_steps=3, controller_input=mode)
        first_is_bank_row = [(bank == row).all(dim=1).any().item() for row in seen[0]]
        assert all(first_is_bank_row) == (mode == "mean"), mode


@pytest.mark.parametrize("mode", ["real", "dream"])
def test_z_only_controller_shapes_and_save_load(pipeline, tmp_path, mode):
    """controller_inputs=z: C = W z + b (the paper's V-only controller), searched in either env,
    saved and reloaded with its size; a [z, h] config refuses the file."""
    agent, run_dir, _ = pipeline
    for name in ("vae.pt", "mdrnn.pt"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    cfg = tiny_config(stage="controller", controller_env=mode, controller_inputs="z", work_dir=str(tmp_path))
    z_only = WorldModels(ENV, cfg, device="cpu")
    z_only.learn(0)
    z_dim, out = cfg.z_dim, agent.codec.out_dim
    assert z_only.params.shape == (n_params(z_dim, out),) and z_only.metas["controller"]["in_dim"] == z_dim
    z_only.params = torch.randn_like(z_only.params)
    z_only.save(tmp_path / "agent.pt")
    loaded = WorldModels.load(tmp_path / "agent.pt")
    assert torch.equal(loaded.params, z_only.params) and loaded.cfg.controller_inputs == "z"
    frames = np.stack([make_env(ENV).reset(seed=s)[0] for s in range(3)])
    np.testing.assert_array_equal(loaded.predict(frames), z_only.predict(frames))
    # h does not reach a z-only C: its action is W z + b whatever M remembers.
    z, _ = loaded.vae.encode(to_tensor(frames, "cpu"))
    expect = loaded.codec.squash(linear_outputs(loaded.params.expand(3, -1), z)).numpy()
    np.testing.assert_array_equal(loaded.predict(frames), expect)
    with pytest.raises(UsageError, match="in_dim"):
        WorldModels(ENV, tiny_config(stage="controller", work_dir=str(tmp_path))).learn(0)


def test_dream_controller_stage_and_mismatch(pipeline, tmp_path):
    agent, run_dir, _ = pipeline
    work = tmp_path / "dream"
    work.mkdir()
    for name in ("vae.pt", "mdrnn.pt"):
        (work / name).write_bytes((run_dir / name).read_bytes())
    dream = WorldModels(ENV, tiny_config(stage="controller", controller_env="dream", work_dir=str(work)))
    dream.learn(0)
    meta = dream.metas["controller"]
    assert meta["mode"] == "dream" and meta["real_steps"] == 0 and meta["generations"] == 2
    with pytest.raises(UsageError, match="mdrnn.pt has hidden=8 but"):
        WorldModels(ENV, tiny_config(stage="controller", mdrnn_hidden=16, work_dir=str(tmp_path / "dream"))).learn(0)


@pytest.mark.parametrize("mode", ["real", "dream"])
def test_controller_keeps_the_mean_with_the_best_held_out_score(pipeline, tmp_path, monkeypatch, mode):
    from agents.world_models import rollouts

    agent, run_dir, _ = pipeline
    for name in ("vae.pt", "mdrnn.pt"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    held_out = []  # (params, score) of every held-out evaluation: one params row, cma_eval_rollouts seeds
    evaluate = rollouts.Worker.evaluate

    def recording(self, params, seeds, patience=0):
        ret, steps = evaluate(self, params, seeds, patience)
        if len(params) == 1:
            held_out.append((params[0].copy(), ret))
        return ret, steps

    monkeypatch.setattr(rollouts.Worker, "evaluate", recording)
    cfg = tiny_config(stage="controller", controller_env=mode, work_dir=str(tmp_path), cma_generations=6,
                      cma_eval_every=2, cma_eval_rollouts=3, cma_sigma0=1.0)
    WorldModels(ENV, cfg).learn(0)
    assert len(held_out) == 3  # generations 2, 4 and 6
    scores = [float(ret.mean()) for _, ret in held_out]
    assert all(ret.shape == (1, 3) for _, ret in held_out)
    params, meta = art.load_controller(tmp_path / art.CONTROLLER_FILE)
    best = int(np.argmax(scores[::-1]))  # ties go to the later mean
    best = len(scores) - 1 - best
    assert meta["score"] == pytest.approx(scores[best])
    np.testing.assert_allclose(np.asarray(params, dtype=np.float64), held_out[best][0], rtol=1e-6)


def test_vae_stage_resumes_from_its_epoch_checkpoint(pipeline, tmp_path, monkeypatch):
    _, run_dir, _ = pipeline
    work = tmp_path / "resume"
    (work / "data").mkdir(parents=True)
    for p in (run_dir / "data").iterdir():
        (work / "data" / p.name).write_bytes(p.read_bytes())
    from agents.world_models import data as wmdata
    from rlkit.checkpoint import load_checkpoint

    real = wmdata.iterate_frame_batches
    epochs_started = []

    def flaky(files, batch_size, buffer_frames, rng):
        epochs_started.append(1)
        if len(epochs_started) == 2:
            raise KeyboardInterrupt  # killed during the second epoch
        yield from real(files, batch_size, buffer_frames, rng)

    monkeypatch.setattr(wmdata, "iterate_frame_batches", flaky)
    cfg = tiny_config(stage="vae", vae_epochs=3, work_dir=str(work))
    with pytest.raises(KeyboardInterrupt):
        WorldModels(ENV, cfg).learn(0)
    _, meta = load_checkpoint(work / "stages" / "vae_last.pt")
    assert meta["epoch"] == 1 and not (work / "vae.pt").exists()
    WorldModels(ENV, cfg).learn(0)
    assert len(epochs_started) == 4  # epochs 2 and 3 only, not a restart from zero
    assert (work / "vae.pt").is_file() and not (work / "stages" / "vae_last.pt").exists()


def test_dream_search_refuses_to_resume_with_other_controller_inputs(pipeline, tmp_path):
    """A dream search interrupted with C reading component means is not continued on sampled latents."""
    _, run_dir, _ = pipeline
    for name in ("vae.pt", "mdrnn.pt"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())

    class Interrupt:
        def on_step(self, n, agent):
            raise KeyboardInterrupt

    cfg = tiny_config(stage="controller", controller_env="dream", cma_generations=4, work_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        WorldModels(ENV, cfg).learn(0, callback=Interrupt())
    assert (tmp_path / "stages" / "controller_last.pt").is_file()
    with pytest.raises(UsageError, match="dream_input=mean but the config says sample"):
        WorldModels(ENV, replace(cfg, dream_controller_input="sample")).learn(0)
    WorldModels(ENV, cfg).learn(0)  # the same inputs resume
    assert (tmp_path / art.CONTROLLER_FILE).is_file()


# --- frame skip and early ending (CarRacing's levers, issue 19) ----------------------------
def test_step_held_skips_only_pixels_nobody_sees(monkeypatch):
    """CarRacing held for k frames with only the last one drawn, by the workers' faster road
    drawing = the unmodified env stepped k times: the same frames (through the zoom-in, turns and
    visited tiles changing colour), rewards and endings; one _render per decision instead of k."""
    import gymnasium as gym
    from gymnasium.envs.box2d.car_racing import CarRacing

    draws = []
    render = CarRacing._render
    monkeypatch.setattr(CarRacing, "_render", lambda self, mode: draws.append(mode) or render(self, mode))
    plain = gym.wrappers.TimeLimit(make_env("CarRacing-v3"), 42)
    held = gym.wrappers.TimeLimit(make_env("CarRacing-v3"), 42)
    fast_road_drawing(held)
    plain.reset(seed=3)
    held.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(11):  # 42 frames: the last decision ends on its 2nd frame (truncation)
        action = rng.uniform([-1, 0, 0], [1, 1, 0.2]).astype(np.float32)
        total, frames = 0.0, 0
        for _ in range(4):
            obs, reward, term, trunc, _ = plain.step(action)
            total, frames = total + reward, frames + 1
            if term or trunc:
                break
        draws.clear()
        got_obs, got_reward, got_term, got_trunc, got_frames = step_held(held, action, 4)
        np.testing.assert_array_equal(got_obs, obs)
        assert got_reward == pytest.approx(total) and (got_term, got_trunc, got_frames) == (term, trunc, frames)
        assert len(draws) == 1  # also when the episode ends in between: the returned frame is drawn
    assert trunc and frames == 2
    catch_plain, catch_held = make_env(ENV), make_env(ENV)  # other envs: stepped as they are
    catch_plain.reset(seed=1)
    catch_held.reset(seed=1)
    for _ in range(3):
        catch_plain.step(2)
    np.testing.assert_array_equal(step_held(catch_held, 2, 3)[0], catch_plain.unwrapped._obs())


def test_patience_ends_search_rollouts_without_reward(pipeline):
    """controller_patience: a rollout ends after that many decisions without a positive reward;
    on Catch no reward comes before the first ball lands (step 14), so 5 decisions of 2 frames."""
    agent, _, _ = pipeline
    envs = [make_env(ENV) for _ in range(4)]
    params = np.random.default_rng(0).normal(size=(2, agent.params.numel()))
    policy = PolicyState(agent.vae, agent.mdrnn, agent.codec, "cpu")
    returns, frames = real_rollouts(envs, policy, params, [0, 1], 150, frame_skip=2, patience=5)
    assert returns.shape == (2, 2) and (returns == 0).all() and frames == 4 * 5 * 2
    returns, frames = real_rollouts(envs, policy, params, [0, 1], 150, frame_skip=2)
    assert frames == 4 * 150 and (returns != 0).any()


def test_patience_spares_held_out_scoring(pipeline, tmp_path):
    """The search's rollouts end early; the held-out scoring of the mean plays every episode to its end."""
    _, run_dir, _ = pipeline
    for name in ("vae.pt", "mdrnn.pt"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    cfg = tiny_config(stage="controller", controller_patience=3, cma_eval_rollouts=2, work_dir=str(tmp_path))
    agent = WorldModels(ENV, cfg, device="cpu")
    agent.learn(0)
    # 2 generations x 4 candidates x 1 rollout x 3 decisions, then 2 held-out episodes of 40 frames.
    assert agent.metas["controller"]["real_steps"] == 2 * 4 * 3 + 2 * 40


def test_frame_skip_pipeline_and_held_actions(tmp_path):
    """frame_skip=3: data holds every 3rd frame, M records it, C is searched on 3-frame decisions,
    predict holds each action for 3 frames and advances M only on decision frames."""
    cfg = tiny_config(frame_skip=3, cma_eval_rollouts=2)
    agent = WorldModels(ENV, cfg, seed=0, device="cpu", run_dir=tmp_path)
    agent.learn(10**9)
    with np.load(tmp_path / "data" / "rollouts_00000.npz") as f:
        assert f["lengths"].tolist() == [50, 50]  # 150-frame episodes
    assert agent.metas["mdrnn"]["frame_skip"] == 3
    assert agent.metas["controller"]["real_steps"] == (2 * 4 * 1 + 2) * 40  # frames, not decisions
    agent.params = torch.randn_like(agent.params)
    env = make_env(ENV)
    frames = [env.reset(seed=4)[0]]
    for _ in range(6):
        frames.append(env.step(1)[0])
    actions = [agent.predict(f[None], episode_start=np.array([t == 0]))[0] for t, f in enumerate(frames)]
    assert actions[0] == actions[1] == actions[2] and actions[3] == actions[4] == actions[5]
    replay = PolicyState(agent.vae, agent.mdrnn, agent.codec, "cpu")
    replay.reset(1)
    expect = [replay.act(frames[t][None], agent.params[None])[0] for t in (0, 3, 6)]
    assert [actions[0], actions[3], actions[6]] == expect
    torch.testing.assert_close(agent._policy.state[0], replay.state[0])
    other = tmp_path / "other"
    other.mkdir()
    for name in ("vae.pt", "mdrnn.pt"):
        (other / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(UsageError, match="frame_skip=3"):
        WorldModels(ENV, tiny_config(stage="controller", work_dir=str(other))).learn(0)


def test_mdrnn_stage_refuses_vae_of_other_size(pipeline, tmp_path):
    _, run_dir, _ = pipeline
    work = tmp_path / "mismatch"
    (work / "data").mkdir(parents=True)
    for p in (run_dir / "data").iterdir():
        (work / "data" / p.name).write_bytes(p.read_bytes())
    (work / "vae.pt").write_bytes((run_dir / "vae.pt").read_bytes())  # z_dim = 4
    with pytest.raises(UsageError, match="vae.pt has z_dim=4 but mdrnn expects 6"):
        WorldModels(ENV, tiny_config(stage="mdrnn", z_dim=6, work_dir=str(work))).learn(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_step_and_predict(tmp_path):
    dev = torch.device("cuda")
    vae = ConvVAE(8, 4).to(dev)
    x = torch.rand(4, 3, 64, 64, device=dev)
    logits, mu, logvar = vae(x)
    vae_loss(x, logits, mu, logvar, 0.5)[0].backward()
    m = MDNRNN(8, 3, 16, 2).to(dev)
    out = m(torch.randn(2, 5, 8, device=dev), torch.zeros(2, 5, 3, device=dev))
    assert out[0].device.type == "cuda"
    agent = WorldModels(ENV, tiny_config(), device="cuda", run_dir=tmp_path)
    import gymnasium as gym

    obs = np.stack([gym.make(ENV).reset(seed=s)[0] for s in range(2)])
    assert agent.predict(obs, episode_start=np.ones(2, dtype=bool)).shape == (2,)


@pytest.mark.slow
def test_parallel_workers_spawn_and_ray(tmp_path):
    """The same tiny pipeline with spawn-process workers, then the controller with Ray actors."""
    agent = WorldModels(ENV, tiny_config(workers=2), run_dir=tmp_path)
    agent.learn(10**9)
    assert (tmp_path / "controller.pt").is_file()
    pytest.importorskip("ray")
    work = tmp_path / "ray"
    work.mkdir()
    for name in ("vae.pt", "mdrnn.pt"):
        (work / name).write_bytes((tmp_path / name).read_bytes())
    ray_agent = WorldModels(ENV, tiny_config(stage="controller", work_dir=str(work)), backend="ray", workers=2)
    ray_agent.learn(10**9)
    assert (work / "controller.pt").is_file()


@pytest.mark.slow
def test_catch_real_controller_beats_random(tmp_path):
    """A shortened Catch pipeline (100 episodes of data, 30 CMA-ES generations): far above random play.

    Random play scores about -6.4 of a possible 10; the full yaml pipeline reaches about 10 (docs).
    """
    from rlkit import config
    from rlkit.evaluation import evaluate

    cfg, env_kwargs = config.resolve(WorldModels.Config, "world-models", ENV, None,
                                     {"collect_episodes": 100, "episodes_per_file": 10, "vae_epochs": 10,
                                      "cma_popsize": 16, "cma_rollouts": 8, "cma_generations": 30, "mdrnn_epochs": 10,
                                      "progress": False})
    agent = WorldModels(ENV, cfg, seed=0, run_dir=tmp_path, env_kwargs=env_kwargs)
    agent.learn(10**9)
    result = evaluate(agent, ENV, episodes=100, env_kwargs=env_kwargs)
    assert result["mean_return"] > -4.0  # measured 0.20 (seed 0); random play -6.4


# --- pictures (issue 34) ---------------------------------------------------------------------
def test_vae_reconstruction_png_labels_its_rows(pipeline):
    """videos/vae_reconstruction.png: a column on the left names the rows, "frame" over "V's
    reconstruction"; the frames themselves follow it unchanged."""
    import imageio.v2 as imageio

    from agents.world_models.stages import RECONSTRUCTION_ROWS, label_rows

    assert RECONSTRUCTION_ROWS == ("frame", "V's reconstruction")
    _, run_dir, _ = pipeline
    png = imageio.imread(run_dir / "videos" / "vae_reconstruction.png")
    width = png.shape[1] - 8 * 2 * 64
    column = png[:, :width]
    top, bottom = column[: 2 * 64], column[2 * 64:]
    assert (top == 255).all(axis=-1).any() and (bottom == 255).all(axis=-1).any()  # white text in each row
    assert not np.array_equal(top, bottom)  # two different labels
    # label_rows only adds the column: the image it is given follows it as it was
    image = np.random.default_rng(0).integers(0, 256, (128, 300, 3), dtype=np.uint8)
    labelled = label_rows(image, RECONSTRUCTION_ROWS)
    assert labelled.shape[0] == 128 and np.array_equal(labelled[:, -300:], image)
    assert labelled.shape[1] - 300 == width  # the same column as the picture's


def test_dream_gif_scales_a_dim_clip_to_be_visible(pipeline, tmp_path):
    """A small V decodes Catch's objects as faint blurs (its output is a sigmoid in [0, 1]; the tiny
    pipeline's brightest pixels are ~0.2-0.5), so dream.gif looked black: the clip is scaled by one
    factor, 1 / its 99.9th percentile (at most DREAM_MAX_GAIN), and a bright clip is left alone."""
    import imageio.v2 as imageio

    from agents.world_models.stages import DREAM_MAX_GAIN, dream_gain

    agent, _, _ = pipeline
    traj = write_dream_gif(tmp_path / "dream.gif", agent.vae, agent.mdrnn, agent.init_latents, agent.codec,
                           agent.params, seed=0, temperature=1.0, max_steps=20)
    with torch.no_grad():
        decoded = agent.vae.decode(torch.as_tensor(traj))
    assert float(decoded.max()) < 0.9  # the tiny V is dim: this is the case being fixed
    gain = dream_gain(decoded)
    assert 1.0 < gain <= DREAM_MAX_GAIN
    frames = np.array(imageio.mimread(tmp_path / "dream.gif"))
    assert frames.max() >= 250 and frames.max() > 255 * float(decoded.max()) * 1.1

    bright = torch.zeros(2, 3, 64, 64)
    bright[:, :, 10:20, 10:20] = 1.0
    assert dream_gain(bright) == 1.0 and dream_gain(torch.zeros(1, 3, 64, 64)) == 1.0
    faint = torch.full((1, 3, 64, 64), 0.001)
    assert dream_gain(faint) == DREAM_MAX_GAIN
