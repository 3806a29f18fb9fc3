"""Rollout workers for the on-policy agents (rlkit.onpolicy.ParallelCollector): ``--workers N`` on
spawn processes, ``--backend ray`` on Ray actors (the session's local Ray, tests/conftest.py), and
a two-node cluster on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import fields

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.ppo import PPO
from rlkit.normalization import Normalizers
from rlkit.onpolicy import ParallelCollector
from rlkit.rollout import Batch
from rlkit.workers import WorkerError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every Pendulum episode is truncated at 200 steps whatever the actions: masks do not depend on the
# policy's samples, so a local and a remote batch must agree on them exactly.
FIXED_LENGTH_ENV = "Pendulum-v1"


def test_worker_moments_merge_into_the_learners_statistics_exactly():
    """Two recording workers start each round from the learner's statistics; merging what they saw
    gives the mean and variance of every observation, as one process seeing them all would."""
    space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    learner = Normalizers(space, norm_obs=True, norm_reward=True, gamma=0.99)
    workers = [Normalizers(space, norm_obs=True, norm_reward=True, gamma=0.99, record=True) for _ in range(2)]
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(3):
        updates = []
        for w in workers:
            w.load_state(learner.state())
            for _ in range(4):
                x = rng.normal(3.0, 2.0, (5, 3))
                seen.append(x)
                w.obs_rms.update(x)
            updates.append(w.take_updates())
        for u in updates:
            learner.merge_updates(u)
    everything = np.concatenate(seen)
    np.testing.assert_allclose(learner.obs_rms.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(learner.obs_rms.var, everything.var(0), rtol=1e-4)
    assert learner.obs_rms.count == pytest.approx(len(everything), abs=1e-3)
    assert learner.return_rms.count == pytest.approx(1e-4)  # nothing seen: nothing merged
    assert workers[0].take_updates() == {"obs_rms": None, "return_rms": None}  # taken once only


def _batch(agent: PPO, backend: str | None, n_workers: int = 2) -> Batch:
    if backend is None:
        return agent.parts.collector.collect()
    collector = ParallelCollector(agent.parts, agent.config, seed=agent.seed, backend=backend, n_workers=n_workers)
    try:
        return collector.collect()
    finally:
        collector.close()


def test_ray_and_local_batches_have_the_same_shapes_and_masks(ray_session):
    """Same seed, same n_envs: one process, two spawn processes and two Ray actors give batches of the
    same shapes, dtypes and masks (truncation at step 200, the autoreset step after it), the same
    first observations (copy i of worker r is env copy r * n_envs / N + i), and the two worker
    backends the same batch bit for bit."""
    cfg = PPO.Config(n_envs=4, n_steps=256)
    agent = PPO(FIXED_LENGTH_ENV, cfg, seed=3, device="cpu")
    try:
        local, processes, actors = _batch(agent, None), _batch(agent, "local"), _batch(agent, "ray")
    finally:
        agent.close()
    for f in fields(Batch):
        a, b = getattr(local, f.name), getattr(actors, f.name)
        assert a.shape == b.shape and a.dtype == b.dtype, f.name
        c = getattr(processes, f.name)
        assert (torch.equal(b, c) if isinstance(b, torch.Tensor) else np.array_equal(b, c)), f.name
    for mask in ("valid", "terminated", "truncated"):
        assert torch.equal(getattr(local, mask), getattr(actors, mask)), mask
    assert actors.truncated[199].all() and not actors.valid[200].any() and actors.valid[201].all()
    assert torch.equal(local.obs[0], actors.obs[0])
    assert len(actors.episode_returns) == 4


def test_normaliser_statistics_count_every_worker_observation(ray_session):
    cfg = PPO.Config(n_envs=4, n_steps=16, norm_obs=True, norm_reward=True)
    agent = PPO(FIXED_LENGTH_ENV, cfg, seed=0, device="cpu", backend="ray", workers=2)
    try:
        agent.learn(2 * 4 * 16)
        stats = agent.parts.normalizers
        # the reset observations of 4 copies, then 4 per step; the return statistics: 4 per step
        assert stats.obs_rms.count == pytest.approx(4 + 2 * 4 * 16, abs=1e-3)
        assert stats.return_rms.count == pytest.approx(2 * 4 * 16, abs=1e-3)
        assert agent.rollout_workers is None  # stopped when learn returned
    finally:
        agent.close()


class KillWorker:
    """A training callback that SIGKILLs the process of rollout worker ``rank`` at the given
    on_step calls (all of them with ``every=True``) and records the worker pids it saw."""

    def __init__(self, at: set[int], rank: int = 1, every: bool = False):
        self.at, self.rank, self.every, self.calls, self.pids = at, rank, every, 0, []

    def on_step(self, num_timesteps, agent) -> bool:
        self.calls += 1
        pid = agent.rollout_workers.group.call(self.rank, "pid")
        self.pids.append(pid)
        if self.every or self.calls in self.at:
            os.kill(pid, signal.SIGKILL)
        return True


def test_a_killed_ray_worker_is_restarted_and_training_goes_on(ray_session):
    agent = PPO("CartPole-v1", PPO.Config(n_envs=4, n_steps=32), seed=0, device="cpu", backend="ray", workers=2)
    killer = KillWorker(at={2})
    try:
        agent.learn(6 * 4 * 32, callback=killer)
    finally:
        agent.close()
    assert agent.num_timesteps == 6 * 4 * 32
    assert killer.pids[1] != killer.pids[2] and len(set(killer.pids[2:])) == 1  # one new process, kept


def test_a_worker_that_keeps_dying_ends_learn_with_one_error(ray_session):
    agent = PPO("CartPole-v1", PPO.Config(n_envs=4, n_steps=8), seed=0, device="cpu", backend="ray", workers=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(WorkerError, match=r"worker 1 \(RolloutWorker"):
            agent.learn(100 * 4 * 8, callback=KillWorker(at=set(), every=True))
    finally:
        agent.close()
    # The point is that learn ends instead of retrying forever: it took 62 s once in `make test` beside a
    # CarRacing run on 2 cores. The bound catches a hang, not a slow machine.
    assert time.monotonic() - t0 < 300


def test_workers_must_divide_n_envs():
    from rlkit.errors import UsageError

    with pytest.raises(UsageError, match="--workers 3 must divide n_envs"):
        PPO("CartPole-v1", PPO.Config(n_envs=4, n_steps=8), seed=0, device="cpu", backend="ray", workers=3)


def test_unreachable_ray_address_fails_in_seconds(rlkit_cli, tmp_path):
    t0 = time.monotonic()
    proc = rlkit_cli("train", "--algo", "ppo", "--env", "CartPole-v1", "--backend", "ray", "--workers", "2",
                     "--ray-address", "127.0.0.1:1", "--steps", "2000", timeout=120)
    assert time.monotonic() - t0 < 30
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "127.0.0.1:1" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run.json"))


CLUSTER_SCRIPT = textwrap.dedent("""
    import subprocess, sys
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 200 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    try:
        proc = subprocess.run([sys.executable, "-m", "cli", "train", "--algo", "ppo", "--env", "CartPole-v1",
                               "--backend", "ray", "--workers", "2", "--ray-address", cluster.address,
                               "--steps", "2048", "--eval-every", "1024", "--runs-root", sys.argv[1]],
                              capture_output=True, text=True, timeout=240)
        print("RC", proc.returncode)
        print(proc.stderr[-2000:])
    finally:
        cluster.shutdown()
""")


@pytest.mark.slow
def test_ppo_on_a_two_node_cluster_on_this_machine(tmp_path):
    """A head and a second node (ray.cluster_utils, both on 127.0.0.1, one CPU each): ``rlkit train
    --ray-address`` joins it, its two rollout workers land one per node, and the run finishes."""
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback only
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert "RC 0" in proc.stdout, proc.stdout + proc.stderr
    runs = list((tmp_path / "runs").rglob("run.json"))
    assert len(runs) == 1


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def _endless_ray_run(run_dir, stdout) -> subprocess.Popen:
    """`rlkit train` of PPO with two Ray workers that runs until stopped, checkpointing every 2,048 steps."""
    cmd = [sys.executable, "-m", "cli", "train", "--algo", "ppo", "--env", "CartPole-v1", "--backend", "ray",
           "--workers", "2", "--steps", "10000000", "--eval-every", "100000", "--checkpoint-every", "2048",
           "--run-dir", str(run_dir), "--no-progress"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _first_checkpoint(run_dir, proc, timeout: float = 180) -> set[int]:
    """Wait for the run's first checkpoint; the processes seen under the CLI meanwhile."""
    deadline, family = time.time() + timeout, set()
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*.pt")):
        family |= _descendants(proc.pid)
        time.sleep(0.2)
    return family | _descendants(proc.pid)


def _stop(proc: subprocess.Popen) -> None:
    """A CLI a failed test left running: SIGTERM (rlkit stops its Ray), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_leaves_no_ray_processes_behind(tmp_path, sig, code):
    """The private Ray of a `--backend ray` run (its GCS, raylet and actor processes, all descendants
    of the CLI) is gone seconds after Ctrl-C or SIGTERM, the exit code is rlkit's own (Ray's
    handler would exit 15), and the run keeps a checkpoint to resume from."""
    run_dir = tmp_path / "run"
    proc = _endless_ray_run(run_dir, subprocess.DEVNULL)
    try:
        family = _first_checkpoint(run_dir, proc)
        assert len(family) >= 4, "Ray's processes and two actors run under the CLI"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == code and "Traceback" not in err, err
    assert list((run_dir / "checkpoints").glob("step_*.pt"))
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in family):
        time.sleep(0.5)
    assert not [p for p in family if _alive(p)], "Ray processes outlived the run"


def test_sigterm_right_after_an_actor_died_exits_143_with_one_line(tmp_path):
    """An actor is killed (Ray restarts it and retries its call) and SIGTERM follows 0.3 s later:
    exit 143 with rlkit's one line, whatever Ray was doing with the signal, and none of Ray's own
    lines ("(raylet) ... Task ... failed") on stdout or stderr."""
    run_dir = tmp_path / "run"
    proc = _endless_ray_run(run_dir, subprocess.PIPE)
    try:
        family = _first_checkpoint(run_dir, proc)
        actors = _actor_pids(family)
        assert actors, family
        os.kill(actors[0], signal.SIGKILL)
        time.sleep(0.3)  # the scenario: SIGTERM 0.3 s after the actor died
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: one CartPole")]
    assert proc.returncode == 143 and lines == ["rlkit: terminated"], (proc.returncode, err)
    assert "(raylet)" not in out and "(raylet)" not in err, out
    assert out.strip().splitlines()[-1] == f"resume with: rlkit train --resume {run_dir}", out


def _session_dir(family: set[int]) -> str | None:
    """The temp dir of the Ray session these processes belong to (GCS and raylet name it on their command line)."""
    import re

    for pid in family:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found = re.search(r"(/\S*?/session_[^/\s]+)", cmd)
        if found:
            return found.group(1)
    return None


def _processes_of_session(session: str) -> dict[int, str]:
    """Every live process that holds a file of the Ray session open (its logs, sockets), with its name."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            targets = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:  # gone, or not ours
            continue
        if any(t.startswith(session + "/") for t in targets) and _alive(int(entry)):
            out[int(entry)] = subprocess.run(["ps", "-o", "args=", "-p", entry], capture_output=True,
                                             text=True).stdout.strip()
    return out


def _ray_names(family: set[int]) -> list[str]:
    names = [subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
             for pid in family]
    return [name for name in names if name.startswith("ray::")]


@pytest.mark.parametrize("algo", ["ppo", pytest.param("rllib-ppo", marks=pytest.mark.slow)])
def test_sigkill_of_the_driver_leaves_no_process_of_its_private_ray(tmp_path, algo):
    """A `--backend ray` or `rllib-ppo` CLI killed by SIGKILL cannot shut its Ray down: nothing of that
    private Ray (GCS, raylet, dashboard and runtime-env agents, actors) may outlive it by more than 20 s."""
    if algo == "ppo":
        proc = _endless_ray_run(tmp_path / "run", subprocess.DEVNULL)
        started = lambda family: len(_actor_pids(family)) >= 2  # noqa: E731  Ray is up, both actors built
    else:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "train", "--algo", "rllib-ppo", "--env", "CartPole-v1",
                                 "--backend", "ray", "--workers", "1", "--steps", "10000000", "--run-dir",
                                 str(tmp_path / "run"), "--no-progress", "--set", "train_batch_size=500",
                                 "--set", "minibatch_size=100"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = lambda family: any("EnvRunner" in name for name in _ray_names(family))  # noqa: E731
    try:
        deadline, family = time.time() + 180, set()
        while time.time() < deadline and not started(family):
            assert proc.poll() is None, proc.stderr.read()
            family |= _descendants(proc.pid)
            time.sleep(0.2)
        family |= _descendants(proc.pid)
        session = _session_dir(family)
        assert session is not None and started(family), _ray_names(family)
        proc.kill()
        proc.wait(timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and (any(_alive(p) for p in family) or _processes_of_session(session)):
            time.sleep(0.5)
        left = {p: "" for p in family if _alive(p)} | _processes_of_session(session)
    finally:
        _stop(proc)
    for pid in left:  # what the test found alive, so that it does not outlive the test either
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes of the driver's private Ray outlived it: {left}"


def test_a_resumed_run_collects_with_the_workers_it_was_started_with(tmp_path, monkeypatch):
    """config.yaml's --workers survive a resume: the loaded agent gets them back (set_backend)."""
    from rlkit import training
    from rlkit.onpolicy import rollout_source

    seen = []

    def spy(agent):
        seen.append((agent.backend, agent.n_workers))
        return rollout_source(agent)

    monkeypatch.setattr("rlkit.onpolicy.rollout_source", spy)
    run = training.train("ppo", "CartPole-v1", steps=512, seed=0, workers=2, sets={"n_envs": 2, "n_steps": 128},
                         runs_root=tmp_path, eval_every=256, final_eval_episodes=0, progress=False, quiet=True)
    training.resume(run, steps=1024, progress=False, quiet=True)
    assert seen == [("local", 2), ("local", 2)]


def _actor_pids(family: set[int]) -> list[int]:
    out = []
    for pid in family:
        cmd = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
        if "_Host" in cmd:  # Ray names an actor's process after its class (rlkit.workers._Host)
            out.append(pid)
    return out


@pytest.mark.slow
def test_a_worker_that_keeps_dying_ends_the_cli_run_with_one_line_and_a_resumable_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = _endless_ray_run(run_dir, subprocess.PIPE)
    try:
        _first_checkpoint(run_dir, proc)
        deadline = time.time() + 90
        while proc.poll() is None and time.time() < deadline:  # kill every actor process, again and again
            for pid in _actor_pids(_descendants(proc.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 1, err
    rlkit_lines = [line for line in err.splitlines() if line.startswith("rlkit:")]
    assert len(rlkit_lines) == 1 and "RolloutWorker" in rlkit_lines[0] and "died" in rlkit_lines[0], err
    assert "Traceback" not in err
    assert f"resume with: rlkit train --resume {run_dir}" in out
