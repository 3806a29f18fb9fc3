"""rlkit.workers: a toy worker class on the in-process, spawn-process and Ray backends.

The Ray tests share the session's local Ray (two CPUs, tests/conftest.py ``ray_session``);
deselect them with -k "not ray".
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from rlkit.workers import WorkerError, WorkerGroup

N_ENVS = 3


class ToyWorker:
    """Holds a rank, per-env seeds and a call counter: state that must persist between calls."""

    def __init__(self, rank: int, seed: int, scale: int = 1):
        self.rank, self.scale, self.calls = rank, scale, 0
        self.seeds = [seed + rank * N_ENVS + i for i in range(N_ENVS)]  # copy i of worker r

    def square(self, x: int) -> tuple[int, int]:
        self.calls += 1
        return x * x * self.scale, self.rank

    def whoami(self) -> tuple[int, int]:
        return self.rank, os.getpid()

    def count(self) -> int:
        return self.calls

    def get_seeds(self) -> list[int]:
        return self.seeds

    def fail(self, rank: int) -> int:
        if self.rank == rank:
            raise ValueError("boom")
        return self.rank

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def die(self) -> None:
        os._exit(3)


class BrokenWorker:
    def __init__(self, rank: int):
        raise RuntimeError(f"no env for rank {rank}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def ray_session(ray_session):
    from ray import cloudpickle

    # Ray workers cannot import this test module by name: ship its classes by value instead.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_session
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(params=["inprocess", "spawn", "ray"])
def backend(request):
    """(backend, n_workers) for WorkerGroup: one worker in this process, two processes, two actors."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        return "ray", 2
    return "local", 1 if request.param == "inprocess" else 2


def test_map_results_in_order_and_spread_over_workers(backend):
    name, n = backend
    with WorkerGroup(ToyWorker, (0,), {"scale": 2}, n_workers=n, backend=name) as group:
        results = group.map("square", [(x,) for x in range(7)])
        assert [r for r, _ in results] == [2 * x * x for x in range(7)]
        assert [rank for _, rank in results] == [x % n for x in range(7)]  # round robin
        assert sorted(r for r, _ in group.imap_unordered("square", [(x,) for x in range(5)])) == \
            sorted(2 * x * x for x in range(5))
        # The workers kept their state between calls: 7 + 5 calls dealt round robin.
        assert group.broadcast("count") == [len(range(r, 7, n)) + len(range(r, 5, n)) for r in range(n)]
        assert group.call(n - 1, "square", 3) == (18, n - 1)
    assert group.closed


def test_ranks_and_seeds_of_workers_differ(backend):
    name, n = backend
    with WorkerGroup(ToyWorker, (100,), n_workers=n, backend=name) as group:
        ranks = [rank for rank, _ in group.broadcast("whoami")]
        seeds = group.broadcast("get_seeds")
    assert ranks == list(range(n))
    flat = [s for worker in seeds for s in worker]
    assert len(set(flat)) == n * N_ENVS and flat == list(range(100, 100 + n * N_ENVS))


def test_a_worker_that_raises_gives_one_clear_error(backend):
    name, n = backend
    group = WorkerGroup(ToyWorker, (0,), n_workers=n, backend=name)
    pids = [pid for _, pid in group.broadcast("whoami")]
    with pytest.raises(WorkerError) as err:
        group.map("fail", [(n - 1,)] * 3)
    assert str(err.value) == f"worker {n - 1} (ToyWorker.fail) raised ValueError: boom"
    if name == "local" and n == 1:
        assert isinstance(err.value.__cause__, ValueError)  # in-process: the exception itself is chained
    else:
        assert "boom" in err.value.remote_traceback  # the worker's traceback travels with the error
    assert group.closed  # the group shut itself down
    if name == "local" and n > 1:
        assert all(gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        group.map("square", [(1,)])
    group.close()  # idempotent


def test_a_worker_that_fails_to_start_is_named(backend):
    name, n = backend
    with pytest.raises(WorkerError, match=r"worker \d \(BrokenWorker\.__init__\)") as err:
        WorkerGroup(BrokenWorker, n_workers=n, backend=name)
    assert "raised RuntimeError: no env for rank" in str(err.value)


def test_local_workers_keep_their_process():
    with WorkerGroup(ToyWorker, (0,), n_workers=2) as group:
        first = dict(group.broadcast("whoami"))
        assert len(set(first.values())) == 2 and os.getpid() not in first.values()
        for _ in range(3):
            assert dict(group.map("whoami", [()] * 4)) == first  # rank r always answers from one pid
        pids = list(first.values())
    assert all(gone(pid) for pid in pids)


def test_local_worker_death_is_an_error_not_a_hang():
    group = WorkerGroup(ToyWorker, (0,), n_workers=2)
    with pytest.raises(WorkerError, match=r"worker 1 \(ToyWorker\.die\) died \(exit code 3\)"):
        group.call(1, "die")  # dies in the middle of a call
    assert group.closed
    group = WorkerGroup(ToyWorker, (0,), n_workers=2)
    os.kill(group.call(0, "whoami")[1], signal.SIGKILL)  # killed from outside while idle
    with pytest.raises(WorkerError, match=r"worker 0 \(ToyWorker\.square\) died"):
        group.map("square", [(1,), (2,)])
    assert group.closed


def test_interrupt_while_workers_are_busy_closes_the_group_at_once():
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with WorkerGroup(ToyWorker, (0,), n_workers=2) as group:
            pids = [pid for _, pid in group.broadcast("whoami")]
            for _ in group.imap_unordered("sleep", [(0.0,), (60.0,), (60.0,)]):
                raise KeyboardInterrupt  # Ctrl-C while worker 1 is in the middle of a long call
    assert time.monotonic() - start < 30
    assert all(gone(pid) for pid in pids)


def test_ray_actor_killed_is_restarted(ray_session):
    with WorkerGroup(ToyWorker, (0,), n_workers=2, backend="ray", max_restarts=2) as group:
        rank, pid = group.call(1, "whoami")
        os.kill(pid, signal.SIGKILL)
        # The call may reach the dead actor first; Ray restarts it and retries the call.
        assert group.call(1, "whoami")[0] == 1 and group.call(1, "whoami")[1] != pid
        assert group.map("square", [(x,) for x in range(4)]) == [(x * x, x % 2) for x in range(4)]


def test_ray_session_listens_on_loopback(ray_session):
    assert {node["NodeManagerAddress"] for node in ray_session.nodes()} == {"127.0.0.1"}


def test_started_calls_finish_as_they_come_and_a_failure_leaves_the_others_running(backend):
    """start/next_done (the A3C driver's calls): results by rank as they finish, a worker that raises
    names its rank and leaves the group open, and a blocking call on a busy worker is refused."""
    name, n = backend
    with WorkerGroup(ToyWorker, (0,), n_workers=n, backend=name) as group:
        for rank in range(n):
            group.start(rank, "square", rank + 2)
        if n > 1:
            with pytest.raises(RuntimeError, match="still run a call"):
                group.call(0, "count")
        done = {}
        while len(done) < n:
            item = group.next_done(timeout=10)
            assert item is not None
            done[item[0]] = item[1]
        assert done == {r: ((r + 2) ** 2, r) for r in range(n)}
        assert group.next_done(timeout=0.01) is None  # nothing in flight
        group.start(n - 1, "fail", n - 1)
        with pytest.raises(WorkerError) as err:
            group.next_done(timeout=10)
        assert err.value.rank == n - 1 and not group.closed
        assert group.call(n - 1, "square", 3) == (9, n - 1)  # the group goes on
