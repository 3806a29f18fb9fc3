"""Every hand-written agent's yaml entry that says it is the RL Zoo's is the Zoo's, key by key.

An entry is marked as a port by ``# zoo`` on its key line (``Pendulum-v1:  # zoo``) in
agents/hyperparams/ppo.yaml (against sb3-ppo.yaml), actor-critic.yaml and a3c.yaml (against
sb3-a2c.yaml). For each marked entry both sides are resolved as a run resolves them (the Config's
defaults < the yaml's ``default`` < the env's entry; on SB3's side the adapter's Config, i.e. SB3's
own defaults, < sb3-*.yaml), SB3's is translated through ``translate`` (the one table below), and
every translated key must equal rlkit's. The keys rlkit has and SB3 has not must sit where SB3's
behaviour is (``RLKIT_ONLY``).

Translation table (SB3 / RL Zoo -> rlkit):

| SB3 / Zoo | rlkit |
|---|---|
| each key of ``SAME`` (n_envs, n_steps, gamma, vf_coef, use_sde, ...) | the same key (vf_coef x MSE on both) |
| learning_rate: X (a number) | learning_rate: X, anneal_lr: false |
| learning_rate: lin_X | learning_rate: X, anneal_lr: true |
| clip_range: X (a number) | clip_range: X (``lin_X``: no rlkit counterpart, not portable) |
| normalize: true | norm_obs: true, norm_reward: true, norm_clip: 10 (VecNormalize's clip_obs, clip_reward) |
| normalize: false | norm_obs: false, norm_reward: false |
| policy: MlpPolicy | (rlkit picks the MLP for vector observations; other policies: not portable) |
| policy_kwargs.net_arch: [h...] or {pi: [h...], vf: [h...]} with pi == vf | hidden: [h...] (default [64, 64]) |
| policy_kwargs.activation_fn: Tanh / ReLU / GELU / ELU | activation: tanh / relu / gelu / elu (default tanh) |
| policy_kwargs.log_std_init, ortho_init | log_std_init, ortho_init (defaults 0.0, true) |
| PPO: Adam with eps 1e-5 (SB3's ActorCriticPolicy) | adam_eps: 1e-5 |
| A2C: use_rms_prop: true / false | optimizer: rmsprop (rmsprop_alpha 0.99, SB3's) / adam |
| A2C: rms_prop_eps | optim_eps |
| stats_window_size, torch_threads | (logging and threads, not hyperparameters) |

An rlkit entry for an env the Zoo covers that is not marked must say why in ``NOT_PORTED``.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from rlkit.config import HYPERPARAMS_DIR, preset_key, read_yaml, resolve

SAME = ("n_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "vf_coef",
        "max_grad_norm", "normalize_advantage", "use_sde", "sde_sample_freq", "clip_range_vf", "target_kl")
NOT_HYPERPARAMETERS = ("stats_window_size", "torch_threads")
VECNORMALIZE_CLIP = 10.0
ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "GELU": "gelu", "ELU": "elu"}
# The keys rlkit has and SB3 has not, at the value that behaves as SB3 does (shared: a separate
# critic torso for an MLP, which None also gives).
RLKIT_ONLY = {"objective": "discounted", "frame_stack": 1, "train_time_limit": None, "shared": (None, False),
              "async_envs": False}
IGNORED = {"a3c": ("workers",)}  # A3C's own: how many workers run the Zoo's A2C settings
PORTS = {"ppo": "sb3-ppo", "actor-critic": "sb3-a2c", "a3c": "sb3-a2c"}

# Entries for envs the Zoo covers that are rlkit's own, and why.
NOT_PORTED = {
    ("ppo", "CartPole-v1"): "tuned here for time to solve; the Zoo's anneals clip_range (lin_0.2), "
                            "which rlkit's PPO cannot",
    ("actor-critic", "CartPole-v1"): "tuned here (seeds 0-4)",
    ("a3c", "CartPole-v1"): "tuned here (seeds 0-2)",
    ("a3c", "Acrobot-v1"): "tuned here (seed 0), without the Zoo's normalisation",
}


class NotPortable(Exception):
    pass


def _number(value) -> float:
    return float(value)


def translate(algo: str, sb3: dict) -> dict:
    """SB3's effective settings (adapter Config defaults < sb3-*.yaml) as rlkit's keys (module table)."""
    out = {k: sb3[k] for k in SAME if k in sb3}
    lr = sb3["learning_rate"]
    if isinstance(lr, str) and lr.startswith("lin_"):
        out["learning_rate"], out["anneal_lr"] = _number(lr[4:]), True
    else:
        out["learning_rate"], out["anneal_lr"] = _number(lr), False
    if "clip_range" in sb3:
        if isinstance(sb3["clip_range"], str):
            raise NotPortable(f"clip_range {sb3['clip_range']} (a schedule)")
        out["clip_range"] = sb3["clip_range"]
    out["norm_obs"] = out["norm_reward"] = bool(sb3["normalize"])
    if sb3["normalize"]:
        out["norm_clip"] = VECNORMALIZE_CLIP
    if sb3["policy"] != "MlpPolicy":
        raise NotPortable(f"policy {sb3['policy']}")
    kwargs = dict(sb3["policy_kwargs"] or {})
    arch = kwargs.pop("net_arch", [64, 64])
    if isinstance(arch, dict):
        if arch.get("pi") != arch.get("vf"):
            raise NotPortable(f"net_arch {arch}: rlkit's actor and critic torsos have one size")
        arch = arch["pi"]
    out["hidden"] = list(arch)
    act = kwargs.pop("activation_fn", "Tanh")
    out["activation"] = ACTIVATIONS[act.split(".")[-1]]
    out["log_std_init"] = _number(kwargs.pop("log_std_init", 0.0))
    out["ortho_init"] = bool(kwargs.pop("ortho_init", True))
    if kwargs:
        raise NotPortable(f"policy_kwargs {sorted(kwargs)}")
    if algo == "ppo":
        out["adam_eps"] = 1e-5
    else:
        out["optimizer"] = "rmsprop" if sb3["use_rms_prop"] else "adam"
        if sb3["use_rms_prop"]:
            out["rmsprop_alpha"] = 0.99
        out["optim_eps"] = sb3["rms_prop_eps"]
    known = set(SAME) | {"learning_rate", "clip_range", "normalize", "policy", "policy_kwargs", "use_rms_prop",
                         "rms_prop_eps", *NOT_HYPERPARAMETERS}
    unknown = sorted(k for k in sb3 if k not in known)
    if unknown:
        raise NotPortable(f"keys without a translation: {unknown}")
    return out


def marked_entries(algo: str) -> list[str]:
    text = (HYPERPARAMS_DIR / f"{algo}.yaml").read_text()
    found = re.findall(r"^([^\s#][^:#]*):[ \t]*#[ \t]*zoo\b", text, flags=re.M)
    return [key for key in found if preset_key(key) is None]  # `<env>@<preset>` entries are not ports


def rlkit_config(algo: str, env_id: str) -> dict:
    from rlkit.registry import load_algo

    cls = load_algo(algo)
    return dataclasses.asdict(resolve(cls.Config, algo, env_id)[0])


def sb3_config(sb3_algo: str, env_id: str) -> dict:
    from rlkit.baselines import sb3

    cls = {"sb3-ppo": sb3.SB3PPO, "sb3-a2c": sb3.SB3A2C}[sb3_algo]
    return dataclasses.asdict(resolve(cls.Config, sb3_algo, env_id)[0])


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12)
    return a == b


CASES = [(algo, env) for algo in PORTS for env in marked_entries(algo)]


def test_the_ports_are_marked():
    """The marker is read: each agent file marks its ports (the count guards against a marker
    spelt so that no entry is checked at all)."""
    counts = {algo: len(marked_entries(algo)) for algo in PORTS}
    assert counts == {"ppo": 7, "actor-critic": 7, "a3c": 6}, counts


@pytest.mark.parametrize("algo,env_id", CASES, ids=[f"{a}:{e}" for a, e in CASES])
def test_a_zoo_entry_is_the_zoos(algo, env_id):
    sb3_algo = PORTS[algo]
    assert env_id in (read_yaml(HYPERPARAMS_DIR / f"{sb3_algo}.yaml") or {}), f"{sb3_algo}.yaml has no {env_id}"
    theirs = translate(algo, sb3_config(sb3_algo, env_id))
    ours = rlkit_config(algo, env_id)
    wrong = {k: (ours.get(k, "<no such key>"), v) for k, v in theirs.items() if not same(ours.get(k), v)}
    for key, want in RLKIT_ONLY.items():
        if key in ours and ours[key] not in (want if isinstance(want, tuple) else (want,)):
            wrong[key] = (ours[key], want)
    unchecked = set(ours) - set(theirs) - set(RLKIT_ONLY) - set(IGNORED.get(algo, ())) - {
        "torch_threads", "cnn", "avg_reward_lr", "norm_clip", "rmsprop_alpha", "adam_eps", "optim_eps"}
    assert not wrong, f"{algo} {env_id} differs from {sb3_algo}'s (rlkit, Zoo): {wrong}"
    assert not unchecked, f"{algo} keys this test does not account for: {sorted(unchecked)}"


@pytest.mark.parametrize("algo", list(PORTS))
def test_every_entry_for_a_zoo_env_is_a_port_or_says_why_not(algo):
    ours = read_yaml(HYPERPARAMS_DIR / f"{algo}.yaml") or {}
    zoo = read_yaml(HYPERPARAMS_DIR / f"{PORTS[algo]}.yaml") or {}
    marked = set(marked_entries(algo))
    for env_id in ours:
        if env_id == "default" or preset_key(env_id) is not None or env_id.startswith("rlkit/") or env_id not in zoo:
            continue
        assert env_id in marked or (algo, env_id) in NOT_PORTED, \
            f"{algo}.yaml {env_id}: mark it `# zoo` or add it to NOT_PORTED with the reason"


def test_translate_refuses_what_rlkit_cannot_express():
    base = sb3_config("sb3-ppo", "CartPole-v1")
    with pytest.raises(NotPortable, match="clip_range"):
        translate("ppo", base)  # the Zoo's CartPole anneals clip_range
    with pytest.raises(NotPortable, match="net_arch"):
        translate("ppo", {**base, "clip_range": 0.2, "policy_kwargs": {"net_arch": {"pi": [64], "vf": [32]}}})
