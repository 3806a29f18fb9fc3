"""A3C (agents/a3c.py): the worker's update against the single-process gradient, Hogwild workers
in spawn processes, faults (a killed worker, Ctrl-C), the Ray backend, and learning CartPole."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import time

import pytest
import torch

from agents.a3c import A3C, A3CWorker, Config, make_optimizer, optimizer_state
from agents.actor_critic import a2c_loss
from tests.conftest import ROOT

ENV = "CartPole-v1"


def _cfg(**over) -> Config:
    return Config(**{"n_envs": 2, "n_steps": 8, "workers": 2, **over})


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_worker_update_applies_the_single_process_gradient(optimizer):
    """Two consecutive worker updates move the shared θ exactly as a single-process optimizer fed
    the gradient of the same batches. Gradients that accumulate across updates (no zeroing) or a
    stale .grad kept from the first update fail it."""
    cfg = _cfg(optimizer=optimizer, ent_coef=0.01)
    agent = A3C(ENV, cfg, seed=0, device="cpu", workers=1)
    shared = agent.model
    shared.share_memory()
    steps, stop, events = mp.RawArray("q", 1), mp.RawValue("b", 0), queue.Queue()
    worker = A3CWorker(0, agent.parts.env_factory, cfg, 0, shared, optimizer_state(agent.optimizer),
                       steps, stop, events)
    reference = copy.deepcopy(shared)
    ref_opt = make_optimizer(reference.parameters(), cfg)
    batches = []
    collect = worker.collector.collect
    worker.collector.collect = lambda: batches.append(collect()) or batches[-1]
    try:
        per_update = cfg.n_envs * cfg.n_steps
        for k in (1, 2):
            worker.run(k * per_update)  # exactly one update: the step count reaches k * per_update
            assert len(batches) == k
            loss, _, _ = a2c_loss(reference, batches[-1], cfg, None)
            ref_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), cfg.max_grad_norm)
            ref_opt.step()
            for p, q in zip(shared.parameters(), reference.parameters()):
                torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
        assert steps[0] == 2 * per_update and events.qsize() == 2
    finally:
        worker.close()
        agent.close()


def test_two_local_workers_both_collect():
    agent = A3C(ENV, _cfg(), seed=0, device="cpu", workers=2)
    try:
        before = [p.detach().clone() for p in agent.model.parameters()]
        agent.learn(2048)
        assert agent.num_timesteps >= 2048
        assert all(steps > 0 for steps in agent.worker_steps), agent.worker_steps
        assert sum(agent.worker_steps) == agent.num_timesteps
        assert any(not torch.equal(p, q) for p, q in zip(before, agent.model.parameters()))
    finally:
        agent.close()


def test_local_workers_update_the_learners_shared_normalisation_and_a_checkpoint_keeps_it(tmp_path):
    """norm_obs / norm_reward: every worker's envs update the learner's one set of statistics (in
    shared memory), which predict uses and a checkpoint restores."""
    agent = A3C(ENV, _cfg(norm_obs=True, norm_reward=True), seed=0, device="cpu", workers=2)
    try:
        obs_rms, return_rms = agent.parts.normalizers.obs_rms, agent.parts.normalizers.return_rms
        agent.learn(2048)
        assert all(steps > 0 for steps in agent.worker_steps), agent.worker_steps
        # the workers' steps, taken in other processes, went into the learner's statistics;
        # lock-free updates that collide lose one of the two (11% of them in one CI run), so most
        # steps are counted, not necessarily all (without sharing the count would stay at 1e-4)
        for rms in (obs_rms, return_rms):
            assert 0.5 * agent.num_timesteps < rms.count <= agent.num_timesteps + 1
        assert obs_rms.var.min() < 0.5  # CartPole's velocities are far from the initial variance 1
        agent.save(tmp_path / "a3c.pt")
        loaded = A3C.load(tmp_path / "a3c.pt")
        try:
            got = loaded.parts.normalizers.obs_rms
            assert got.count == obs_rms.count and (got.mean == obs_rms.mean).all()
        finally:
            loaded.close()
    finally:
        agent.close()


def test_normalisation_on_the_ray_backend_is_a_usage_error():
    from rlkit.errors import UsageError

    with pytest.raises(UsageError, match="local backend"):
        A3C(ENV, _cfg(norm_obs=True), seed=0, device="cpu", backend="ray")


def test_a_killed_worker_does_not_stop_training():
    agent = A3C(ENV, _cfg(), seed=0, device="cpu", workers=2)

    class KillOnce:
        killed = None

        def on_step(self, num_timesteps, a):
            if self.killed is None and num_timesteps > 256:
                self.killed = a.worker_pids[1]
                os.kill(self.killed, signal.SIGKILL)
            return True

    try:
        cb = KillOnce()
        agent.learn(4096, callback=cb)
        assert cb.killed is not None
        assert agent.num_timesteps >= 4096
        assert agent.worker_restarts == 1
        assert agent.worker_pids[1] != cb.killed
    finally:
        agent.close()


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


def test_ctrl_c_leaves_a_checkpoint_and_no_child_processes(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "train", "--algo", "a3c", "--env", ENV, "--workers", "2",
           "--steps", "10000000", "--eval-every", "100000", "--checkpoint-every", "1024",
           "--run-dir", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, children = time.time() + 120, set()
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*.pt")):
        children |= _children(proc.pid)
        time.sleep(0.1)
    children |= _children(proc.pid)
    assert children, "the workers run in child processes"
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 15, "every worker stops within seconds"
    assert proc.returncode != 0 and "Traceback" not in err
    assert list((run_dir / "checkpoints").glob("step_*.pt"))
    deadline = time.time() + 20  # the resource tracker ends once the last holder of its pipe has
    while time.time() < deadline and any(_exists(pid) for pid in children):
        time.sleep(0.1)
    alive = [pid for pid in children if _exists(pid)]
    assert not alive, f"orphan processes {alive}"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_sigkill_of_the_learner_ends_its_workers(tmp_path):
    """SIGKILL leaves the Hogwild workers (and multiprocessing's resource tracker) without their
    learner: they end on their own within seconds instead of training on forever."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "train", "--algo", "a3c", "--env", ENV, "--workers", "2",
           "--steps", "10000000", "--eval-every", "100000", "--checkpoint-every", "1024",
           "--run-dir", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, children = time.time() + 180, set()
        while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*.pt")):
            assert proc.poll() is None, proc.stderr.read()
            children |= _children(proc.pid)
            time.sleep(0.1)
        children |= _children(proc.pid)
        workers = [pid for pid in children if "spawn_main" in _cmdline(pid)]
        assert len(workers) >= 2, {pid: _cmdline(pid) for pid in children}  # training, in two workers
        proc.kill()
        proc.wait(timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and any(_exists(pid) for pid in children):
            time.sleep(0.2)
        alive = {pid: _cmdline(pid) for pid in children if _exists(pid)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # what the test found alive, so that it does not outlive the test either
            if _exists(pid):
                os.kill(pid, signal.SIGKILL)
    assert not alive, f"processes outlived their learner: {alive}"


class GatedWorker(A3CWorker):
    """An A3CWorker whose construction announces itself and waits while RLKIT_TEST_GATE/closed exists,
    so a test can kill a replacement worker during its start-up."""

    def __init__(self, rank, *args, **kwargs):
        gate = os.environ.get("RLKIT_TEST_GATE")
        if gate and os.path.exists(os.path.join(gate, "closed")):
            with open(os.path.join(gate, f"starting-{os.getpid()}"), "w"):
                pass
            deadline = time.time() + 120
            while os.path.exists(os.path.join(gate, "closed")) and time.time() < deadline:
                time.sleep(0.05)
        super().__init__(rank, *args, **kwargs)


def test_a_replacement_killed_during_start_up_counts_against_the_restart_budget(tmp_path, monkeypatch):
    """Worker 1 is killed; its replacement is killed while it starts (in __init__). That is the
    second of the run's three restarts, not the end of the run."""
    import threading

    import agents.a3c as a3c

    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("RLKIT_TEST_GATE", str(gate))  # the spawn workers inherit it
    monkeypatch.setattr(a3c, "A3CWorker", GatedWorker)
    killed = []

    def kill_the_replacement():
        deadline = time.time() + 120
        while time.time() < deadline:
            starting = list(gate.glob("starting-*"))
            if starting:
                pid = int(starting[0].name.split("-")[1])
                (gate / "closed").unlink()  # the next replacement starts normally
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    class KillWorkerOne:
        killed = None

        def on_step(self, num_timesteps, agent):
            if self.killed is None and num_timesteps > 256:
                (gate / "closed").touch()
                threading.Thread(target=kill_the_replacement, daemon=True).start()
                self.killed = agent.worker_pids[1]
                os.kill(self.killed, signal.SIGKILL)
            return True

    agent = A3C(ENV, _cfg(), seed=0, device="cpu", workers=2)
    try:
        cb = KillWorkerOne()
        agent.learn(4096, callback=cb)
        assert cb.killed is not None and killed, "worker 1 and its first replacement were killed"
        assert agent.num_timesteps >= 4096
        assert agent.worker_restarts == 2
        assert agent.worker_pids[1] not in (cb.killed, killed[0])
    finally:
        agent.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers; it is gone for our purpose if its state is Z
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def test_ray_worker_gradients_change_the_learners_weights(ray_session):
    agent = A3C(ENV, _cfg(), seed=0, device="cpu", workers=1, backend="ray")
    try:
        before = [p.detach().clone() for p in agent.model.parameters()]
        agent.learn(256)
        assert agent.num_timesteps >= 256 and agent.worker_steps[0] == agent.num_timesteps
        assert any(not torch.equal(p, q) for p, q in zip(before, agent.model.parameters()))
    finally:
        agent.close()


def test_bad_ray_address_fails_fast_with_exit_2(tmp_path):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "cli", "train", "--algo", "a3c", "--env", ENV, "--backend", "ray",
                           "--workers", "1", "--ray-address", "127.0.0.1:9", "--runs-root", str(tmp_path),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0], proc.stderr
    assert time.time() - t0 < 20


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_workers_solve_cartpole(backend, tmp_path):
    """From the CLI, with the committed config: 475 within 300k steps, 2 workers, seed 0."""
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cli", "train", "--algo", "a3c", "--env", ENV, "--workers", "2",
                           "--backend", backend, "--steps", "300000", "--stop-at-return", "475",
                           "--eval-every", "5120", "--seed", "0", "--run-dir", str(run_dir), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info.get("solved_at_step") is not None, info.get("evals")


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_no_update_lands_after_the_stop_check_passes(backend, tmp_path, request):
    """Issue 34: A3C went on training after its stop check passed (Hogwild workers kept applying the
    gradients they had in flight), printed a worse evaluation after "solved", and committed that θ as
    the latest checkpoint. Now the run ends on the solving evaluation, and the committed checkpoint
    (what `eval` plays) holds the θ that was evaluated, the same as best.pt."""
    from rlkit import training
    from rlkit.runs import committed_checkpoint

    if backend == "ray":
        request.getfixturevalue("ray_session")
    threshold = 50.0
    run_dir = training.train("a3c", ENV, steps=100_000, run_dir=tmp_path / "run", eval_every=1000, eval_episodes=5,
                             stop_at_return=threshold, final_eval_episodes=0, progress=False, quiet=True,
                             workers=2, backend=backend, sets={"n_envs": 1, "n_steps": 5})
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "solved", info
    solved = info["solved_at_step"]
    last_step, _, last_mean = info["evals"][-1]
    assert last_step == solved == info["steps"] and last_mean >= threshold, info["evals"]
    latest = committed_checkpoint(run_dir)
    assert latest.name == f"step_{solved}.pt"
    committed = torch.load(latest, weights_only=True)["state"]["model"]
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["state"]["model"]
    assert committed.keys() == best.keys()
    for name in best:
        assert torch.equal(committed[name], best[name]), name
