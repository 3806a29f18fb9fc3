"""One worker layer for everything that runs in parallel (docs/architecture.md (workers)).

Roles:
  driver   the learner or stage that owns a ``WorkerGroup`` and calls worker methods by name.
  worker   an object of the driver's class, built once per rank as ``worker_cls(rank, *args, **kwargs)``
           and kept for the whole run: the envs, models and RNG streams it holds persist between
           calls (stable identity). The rank is how copy i of worker r seeds its env with
           ``seed + r * n_envs + i``, so no two workers replay the same episodes.
  backend  where the workers live. ``local``: one worker in this process, or n > 1 workers in
           dedicated spawn processes, one pipe each (no task pool: rank r is always the same
           process). ``ray``: Ray actors, restarted up to ``max_restarts`` times if their process
           dies, on a local Ray that ``start_ray`` starts or on the cluster it joins.

Calls: ``call`` (one worker), ``broadcast`` (every worker), ``map`` (argument tuples dealt round
robin, results in order) and ``imap_unordered`` (the same, yielded as they finish, for progress
bars); and, for a driver that works while its workers run (A3C), ``start`` + ``next_done``
(one call in flight per worker, results as they finish) with ``restart`` for a dead worker.
An exception in a worker becomes one ``WorkerError`` in the driver, naming the worker, its
method and the exception, raised after the group is closed. ``close`` is idempotent; use the group
as a context manager so that exceptions and Ctrl-C close it too (no orphan processes).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import traceback
from collections import deque
from multiprocessing.connection import wait

from rlkit.errors import UsageError

OBJECT_STORE_BYTES = 1 << 30  # a local Ray's object store: enough for rollout batches, not a share of RAM


class WorkerError(RuntimeError):
    """A worker raised or died. The message names it: "worker 1 (Cls.method) raised ValueError: ..."."""


def start_ray(num_cpus: int | None = None, address: str | None = None) -> bool:
    """Connect this process to Ray; True if it started a local Ray (its owner shuts it down).

    With ``address`` ("auto", "host:port", "ray://host:port", or RAY_ADDRESS set) it joins that
    cluster. Without, it starts a private Ray with ``num_cpus`` CPUs (default: this machine's),
    listening on 127.0.0.1 only, no dashboard, a bounded object store, worker logs kept off the
    terminal. A Ray this process is already connected to (a test's, another group's) is reused.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    from rlkit.plugins import worker_env_vars

    if worker_env_vars():  # the user's env packages, imported by every worker (rlkit.plugins)
        quiet["runtime_env"] = {"env_vars": worker_env_vars()}
    # Ray keeps its default token authentication; its notice about it is not for our users.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        target = _resolve(address)
        check_reachable(target)
        host = target.removeprefix("ray://").rpartition(":")[0]
        # A head on this machine's loopback (a one-machine cluster): the driver must stay there too.
        local = host in ("127.0.0.1", "localhost") and not target.startswith("ray://")
        # A head started by `ray start` uses Ray's token authentication (~/.ray/auth_token); a driver
        # that joins it must present the token too, which ray.init(address=...) does not arrange.
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        try:
            with _single_node(local), _keep_sigterm_handler(), _quiet_error_listener():
                ray.init(address=target, **({"_node_ip_address": "127.0.0.1"} if local else {}), **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UsageError(f"--ray-address {address}: cannot join a Ray cluster there ({first})") from None
        return False
    # address="local": a new private Ray even while another runs on this machine (without it, Ray
    # joins the cluster it finds recorded in /tmp/ray and refuses num_cpus).
    with _single_node(True), _keep_sigterm_handler(), _quiet_error_listener():
        context = ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                           _node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES, **quiet)
    _start_reaper((getattr(context, "address_info", None) or {}).get("session_dir"))
    return True


def stop_ray() -> None:
    """Shut down the Ray this process started (``start_ray``), and its reaper with it."""
    import ray

    try:
        ray.shutdown()
    finally:
        _release_reaper()


# The reaper of a private Ray (docs/architecture.md §8). Ray ties its GCS, raylet and dashboard to the
# driver (the kernel kills them with it), and actors end when their raylet goes; but the raylet's
# dashboard and runtime-env agents, left without a raylet after a driver was killed (SIGKILL, the OOM
# killer), spend a minute trying to report that to the dead GCS before they exit. The reaper waits on
# a pipe from the driver; when it reads EOF (the driver closed it after shutting Ray down, or died)
# it kills every process of that session still there: the processes named "ray::..." or naming the
# session on their command line that hold one of its files open (logs, sockets).
_REAPER = r"""
import os, signal, sys, time

session, driver = sys.argv[1].rstrip("/") + "/", int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    sys.stdin.buffer.read()
except BaseException:
    pass


def of_session():
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), driver):
            continue
        base = "/proc/" + entry
        try:
            with open(base + "/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            fds = os.listdir(base + "/fd") if cmd.startswith("ray::") or session in cmd else []
        except OSError:  # gone, or not ours
            continue
        for fd in fds:
            try:
                if os.readlink(base + "/fd/" + fd).startswith(session):
                    found.append(int(entry))
                    break
            except OSError:
                pass
    return found


for _ in range(3):  # again, for a process started while the last one was killed
    pids = of_session()
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
"""
_reaper = None
_released: list = []  # reapers at work or done, waited for later (no zombies, no ResourceWarning)


def _start_reaper(session_dir: str | None) -> None:
    """Start the reaper of the private Ray whose temp dir is ``session_dir`` (Linux: it reads /proc)."""
    global _reaper
    import subprocess

    if not session_dir or not os.path.isdir("/proc/self/fd"):
        return
    _release_reaper()  # the reaper of an earlier private Ray of this process: its work is done
    try:
        _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(session_dir), str(os.getpid())],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # not in the driver's process group: Ctrl-C spares it
    except OSError:  # no reaper: the agents end on their own, a minute later
        _reaper = None


def _release_reaper() -> None:
    """Let the reaper do its work and exit (after the Ray it watches was shut down)."""
    global _reaper
    reaper, _reaper = _reaper, None
    if reaper is None:
        return
    try:
        reaper.stdin.close()
    except OSError:
        pass
    _released.append(reaper)
    _released[:] = [r for r in _released if r.poll() is None]


@contextlib.contextmanager
def _keep_sigterm_handler():
    """``ray.init`` replaces the process's SIGTERM handler (with one that exits 1, over a C++ one that
    dumps a stack), so rlkit's own (rlkit/commands.py: the run stops as on Ctrl-C, exit 143,
    resumable) would never run. Put back the handler that was there."""
    import threading

    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed outside Python, left as Ray made it
            signal.signal(signal.SIGTERM, previous)


def _listen_to_errors_quietly(worker, threads_stopped) -> None:
    """The driver thread that reads the errors Ray's processes publish. Ray's own
    (``ray._private.worker.listen_error_messages``) prints each to stdout as "(raylet) Task ...
    failed", "(raylet) A worker died ..." whatever ``log_to_driver`` says. rlkit reports a worker
    that fails itself (one line naming it, docs/architecture.md §4), and its stdout is the run's
    output, so here they go to the debug log."""
    log = logging.getLogger("rlkit.workers.ray")
    try:
        worker.gcs_error_subscriber.subscribe()
        while not threads_stopped.is_set():
            _, error = worker.gcs_error_subscriber.poll()
            if error is not None:
                log.debug("ray: %s", error.get("error_message"))
    except Exception as exc:  # noqa: BLE001  the GCS is gone (shutdown): the thread ends quietly
        log.debug("ray error listener stopped: %s", exc)


@contextlib.contextmanager
def _quiet_error_listener():
    """During ``ray.init``: the driver's error-listening thread is ``_listen_to_errors_quietly``."""
    from ray._private import worker as ray_worker

    original = getattr(ray_worker, "listen_error_messages", None)
    if original is None:  # another Ray version: its own listener
        yield
        return
    ray_worker.listen_error_messages = _listen_to_errors_quietly
    try:
        yield
    finally:
        ray_worker.listen_error_messages = original


@contextlib.contextmanager
def _single_node(on: bool):
    """Ray turns a node address of 127.0.0.1 into this machine's network address, and its servers
    then listen on every interface, unless it believes multi-node clusters are off
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). Switching that flag off for the duration of init keeps
    a private session, or a driver joining a head on loopback, on 127.0.0.1."""
    from ray._private import ray_constants

    if not on:
        yield
        return
    cluster, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster


def _resolve(address: str) -> str:
    """"auto" -> the host:port of the cluster ``ray start`` last started on this machine (as Ray
    resolves it); other addresses unchanged."""
    if address != "auto":
        return address
    from ray._private import services

    try:
        return services.get_ray_address_from_environment("auto", None) or address
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--ray-address auto: no Ray cluster runs on this machine ({exc})") from None


ADDRESS_FORMS = "auto, HOST:PORT or ray://HOST:PORT"
_ADDRESS = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)(:(\d{1,5}))?"
_reachable: set[str] = set()  # addresses already checked in this process


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a --ray-address (a Ray client's port defaults to 10001), None for "auto";
    anything else is refused (UsageError) before Ray is imported."""
    import re

    if address == "auto":
        return None
    client = address.startswith("ray://")
    match = re.fullmatch(_ADDRESS, address.removeprefix("ray://"))
    port = None
    if match is not None:
        port = int(match.group(4)) if match.group(4) else (10001 if client else None)
    if port is None or not 0 < port < 65536:
        raise UsageError(f"--ray-address {address}: not a Ray address (accepted: {ADDRESS_FORMS}; port 1-65535)")
    return match.group(1).strip("[]"), port


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after Ray's minute of retries (or never), unless a Ray head answers at
    ``address``: its syntax (``parse_ray_address``), the host name (resolved within ``timeout``), a
    TCP connection, then one gRPC call a Ray head (GCS) or Ray client server answers and no other
    server does. A port where something else listens (a silent server, an HTTP/2 proxy that answers
    any address) is refused too. "auto" is resolved first, as Ray resolves it."""
    import socket
    import threading

    if address in _reachable:
        return
    parsed = parse_ray_address(address)
    target = address
    if parsed is None:
        target = _resolve(address)
        if target == "auto":
            return  # nothing recorded on this machine: Ray says so itself
        parsed = parse_ray_address(target)
    host, port = parsed
    found: dict = {}

    def lookup():
        try:
            found["addr"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    thread = threading.Thread(target=lookup, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout)
    if "addr" not in found:
        why = (f"{host} did not resolve in {timeout:g} s" if thread.is_alive() else
               f"{host} is not a known host ({getattr(found['error'], 'strerror', None) or found['error']})")
        raise UsageError(f"--ray-address {address}: nothing answers there ({why})")
    try:
        socket.create_connection((found["addr"], port), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc})") from None
    problem = _not_ray(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", target.startswith("ray://"), timeout)
    if problem:
        raise UsageError(f"--ray-address {address}: {problem}")
    _reachable.add(address)


def _not_ray(hostport: str, client: bool, timeout: float) -> str | None:
    """None if a Ray head's GCS (or, ``client``, a Ray client server) answers a gRPC call at
    ``hostport`` within ``timeout`` (an authentication error is an answer too: ``ray.init`` presents
    the token); else what answers there instead."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None  # a TLS head: its certificates are Ray's business
    try:
        import grpc
    except ImportError:  # Ray's own dependency: no Ray either, and start_ray says so
        return None
    what = "a Ray client server" if client else "a Ray head"
    channel = grpc.insecure_channel(hostport)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"something listens there but it is not {what} (no gRPC answer in {timeout:g} s)"
        try:
            if client:
                from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                    ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING), timeout=timeout)
            else:
                from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED):
                details = " ".join(str(exc.details() or "").split())[:100]
                return f"the server there is not {what} ({code.name}: {details})"
        return None
    finally:
        channel.close()


class _Host:
    """What every backend runs in a worker's process: it registers rlkit's envs and imports the user's
    env packages (rlkit.plugins), builds the worker and calls it. A driver-side gym.register is
    invisible to other processes, hence the imports."""

    def __init__(self, worker_cls, rank: int, args: tuple, kwargs: dict, env_packages: tuple | None = None):
        from rlkit.plugins import import_in_worker

        import_in_worker(env_packages)  # what the driver imported when it started this worker
        self.worker = worker_cls(rank, *args, **kwargs)

    def run(self, method: str, args: tuple):
        return getattr(self.worker, method)(*args)

    def ready(self) -> None:
        """Returns once the worker is built (the driver waits on it so construction errors come first)."""

    def close(self) -> None:
        if callable(getattr(self.worker, "close", None)):
            self.worker.close()


def _describe(exc: BaseException) -> tuple[str, str, str]:
    return type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))


def _error(name: str, rank: int, method: str, what: str, remote_traceback: str = "") -> WorkerError:
    err = WorkerError(f"worker {rank} ({name}.{method}) {what}")
    err.rank, err.remote_traceback = rank, remote_traceback
    if remote_traceback and hasattr(err, "add_note"):  # Python >= 3.11 prints notes under the message
        err.add_note(f"worker {rank} traceback:\n{remote_traceback}")
    return err


class _InProcess:
    """n_workers == 1: the worker lives in the driver (no process to start, easiest to debug)."""

    def __init__(self, worker_cls, args, kwargs, n: int):
        self.name, self.done = worker_cls.__name__, deque()  # done: results of start() calls
        try:
            self.host = _Host(worker_cls, 0, args, kwargs)
        except Exception as exc:
            raise _error(self.name, 0, "__init__", "raised {}: {}".format(*_describe(exc))) from exc

    def results(self, tasks):
        for i, (rank, method, args) in enumerate(tasks):
            try:
                result = self.host.run(method, args)
            except Exception as exc:
                raise _error(self.name, rank, method, "raised {}: {}".format(*_describe(exc))) from exc
            yield i, result

    def start(self, rank: int, method: str, args: tuple) -> None:
        try:
            self.done.append((rank, self.host.run(method, args), None))
        except Exception as exc:
            self.done.append((rank, None, _error(self.name, rank, method, "raised {}: {}".format(*_describe(exc)))))

    def next_done(self, timeout):
        if not self.done:
            return None
        rank, result, err = self.done.popleft()
        if err is not None:
            raise err
        return rank, result

    def close(self) -> None:
        self.host.close()


PARENT_POLL_S = 0.5  # how often a spawn worker checks that its driver is still there


def _end_with_parent() -> None:
    """A spawn worker ends when its driver dies: a driver killed by SIGKILL closes nothing, and A3C's
    Hogwild workers, which train without waiting for the driver, would otherwise run on for ever
    (and keep multiprocessing's resource tracker alive with them). On Linux the kernel kills the
    worker with its parent (prctl PR_SET_PDEATHSIG: strictly, with the parent's thread that started
    it; a group is started and closed within one call of that thread); everywhere, a watchdog thread
    ends the process once its parent has changed (the orphan was adopted by init or a subreaper)."""
    import threading
    import time

    parent = mp.parent_process()
    ppid = parent.pid if parent is not None else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            pass
    if os.getppid() != ppid:  # the driver died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == ppid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="rlkit-parent-watch", daemon=True).start()


def _serve(conn, worker_cls, rank: int, args: tuple, kwargs: dict, env_packages: tuple) -> None:
    """Body of a spawn process: build the worker, then answer (method, args) requests until None."""
    _end_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the driver, which closes the group
    try:
        host = _Host(worker_cls, rank, args, kwargs, env_packages)
    except Exception as exc:
        conn.send(("error", _describe(exc)))
        return
    conn.send(("ok", None))
    try:
        while (request := conn.recv()) is not None:
            try:
                conn.send(("ok", host.run(*request)))
            except Exception as exc:
                conn.send(("error", _describe(exc)))
    except EOFError:  # the driver is gone
        pass
    finally:
        host.close()


class _Processes:
    """n_workers > 1 on this machine: one spawn process per rank, at most one request in flight each."""

    def __init__(self, worker_cls, args, kwargs, n: int):
        # spawn, not fork: torch's threads do not survive a fork, and it is how Ray starts workers too.
        self.name, self.conns, self.procs, self.busy = worker_cls.__name__, [], [], set()
        self.spec, self.started = (worker_cls, args, kwargs), {}  # started: conn -> (rank, method)
        try:
            for rank in range(n):
                conn, proc = self._spawn(rank)
                self.conns.append(conn)
                self.procs.append(proc)
            self.busy = set(range(n))  # until each says it is built; a failure then stops the rest at once
            for rank in range(n):
                self._receive(rank, "__init__")
        except BaseException:
            self.close()
            raise

    def _spawn(self, rank: int):
        # spawn, not fork: torch's threads do not survive a fork, and it is how Ray starts workers too.
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        worker_cls, args, kwargs = self.spec
        from rlkit.plugins import packages_state

        proc = ctx.Process(target=_serve, args=(child, worker_cls, rank, args, kwargs, packages_state()),
                           name=f"rlkit-worker-{rank}", daemon=True)
        proc.start()
        child.close()  # keep only the worker's end open, so its death reads as EOF here
        return parent, proc

    def restart(self, rank: int) -> None:
        """Replace the process of ``rank`` (dead, or stuck) by a fresh worker built the same way."""
        old = self.procs[rank]
        if old.is_alive():
            old.kill()
        old.join(5)
        self.conns[rank].close()
        self.started = {c: v for c, v in self.started.items() if v[0] != rank}
        self.conns[rank], self.procs[rank] = self._spawn(rank)
        self.busy.add(rank)
        self._receive(rank, "__init__")

    def start(self, rank: int, method: str, args: tuple) -> None:
        if rank in self.busy:
            raise RuntimeError(f"worker {rank} is still running a call")
        try:
            self.conns[rank].send((method, args))
        except OSError:  # the process is gone (killed from outside while idle)
            raise self._died(rank, method) from None
        self.busy.add(rank)
        self.started[self.conns[rank]] = (rank, method)

    def next_done(self, timeout):
        ready = wait(list(self.started), timeout)
        if not ready:
            return None
        rank, method = self.started.pop(ready[0])
        return rank, self._receive(rank, method)

    def _died(self, rank: int, method: str) -> WorkerError:
        self.procs[rank].join(1)
        return _error(self.name, rank, method, f"died (exit code {self.procs[rank].exitcode})")

    def _receive(self, rank: int, method: str):
        try:
            status, payload = self.conns[rank].recv()
        except (EOFError, OSError):
            raise self._died(rank, method) from None
        self.busy.discard(rank)
        if status == "error":
            raise _error(self.name, rank, method, "raised {}: {}".format(*payload[:2]), payload[2])
        return payload

    def results(self, tasks):
        queues = [deque() for _ in self.procs]
        for i, (rank, method, args) in enumerate(tasks):
            queues[rank].append((i, method, args))
        running = {}  # conn -> (rank, task index, method)

        def feed(rank: int) -> None:
            if queues[rank]:
                i, method, args = queues[rank].popleft()
                try:
                    self.conns[rank].send((method, args))
                except OSError:  # the process is gone (killed from outside while idle)
                    raise self._died(rank, method) from None
                self.busy.add(rank)
                running[self.conns[rank]] = (rank, i, method)

        for rank in range(len(self.procs)):
            feed(rank)
        while running:
            for conn in wait(list(running)):
                rank, i, method = running.pop(conn)
                result = self._receive(rank, method)
                feed(rank)
                yield i, result

    def close(self) -> None:
        for rank, (conn, proc) in enumerate(zip(self.conns, self.procs)):
            if proc.is_alive() and rank not in self.busy:
                try:
                    conn.send(None)  # an idle worker closes its envs and exits on its own
                except OSError:
                    pass
        for rank, proc in enumerate(self.procs):
            if rank not in self.busy:
                proc.join(5)
            if proc.is_alive():  # busy (we are unwinding an error or Ctrl-C) or stuck: do not wait
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []


class _RayActors:
    """backend="ray": one actor per rank. Ray restarts an actor whose process dies (``max_restarts``)
    and retries the calls it was running (``max_task_retries``), so those calls still return."""

    def __init__(self, worker_cls, args, kwargs, n: int, max_restarts: int = 3):
        import ray

        self.name, self.started = worker_cls.__name__, {}  # started: ref -> (rank, method)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < n:  # the actors would wait for CPUs forever
            raise WorkerError(f"{n} workers need {n} CPUs but the Ray cluster has {cpus:g}")
        actor = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=max_restarts)(_Host)
        from rlkit.plugins import packages_state

        self.actors = [actor.remote(worker_cls, rank, args, kwargs, packages_state()) for rank in range(n)]
        errors = []
        try:
            for rank, ready in enumerate([a.ready.remote() for a in self.actors]):
                try:  # every answer is read, so Ray does not print the other workers' failures as well
                    list(self._gather([(ready, rank, "__init__")]))
                except WorkerError as err:
                    errors.append(err)
            if errors:
                raise errors[0]
        except BaseException:
            self.close()
            raise

    def _gather(self, pending):
        """Yield (position, result) as the refs in ``pending`` [(ref, rank, method)] finish."""
        import ray

        where = {ref: (pos, rank, method) for pos, (ref, rank, method) in enumerate(pending)}
        refs = list(where)
        while refs:
            (ref,), refs = ray.wait(refs, num_returns=1)
            pos, rank, method = where[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                raise _error(self.name, rank, method, f"raised {type(cause).__name__}: {cause}", str(exc)) from None
            except ray.exceptions.RayActorError as exc:
                if exc.actor_init_failed:  # Ray keeps only the text; its last line is "Type: message"
                    what = "raised " + str(exc).strip().splitlines()[-1]
                else:  # the process died and the restarts are used up
                    what = f"died ({type(exc).__name__})"
                raise _error(self.name, rank, method, what, str(exc)) from None
            except ray.exceptions.RayError as exc:
                raise _error(self.name, rank, method, f"failed ({type(exc).__name__})", str(exc)) from None
            yield pos, result

    def results(self, tasks):
        yield from self._gather([(self.actors[rank].run.remote(method, args), rank, method)
                                 for rank, method, args in tasks])

    def start(self, rank: int, method: str, args: tuple) -> None:
        self.started[self.actors[rank].run.remote(method, args)] = (rank, method)

    def next_done(self, timeout):
        import ray

        ready, _ = ray.wait(list(self.started), num_returns=1, timeout=timeout)
        if not ready:
            return None
        rank, method = self.started.pop(ready[0])
        for _, result in self._gather([(ready[0], rank, method)]):
            return rank, result

    def restart(self, rank: int) -> None:
        """Ray restarts a dead actor itself (``max_restarts``); nothing to do here."""

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def shared(obj):
    """In a worker: the object a driver passed through ``WorkerGroup.share`` (Ray resolves only
    top-level arguments, and ours travel inside the call's argument tuple)."""
    import sys

    if "ray" in sys.modules:
        import ray

        if isinstance(obj, ray.ObjectRef):
            return ray.get(obj)
    return obj


class WorkerGroup:
    """``n_workers`` objects ``worker_cls(rank, *args, **kwargs)``, driven by method name."""

    def __init__(self, worker_cls, args: tuple = (), kwargs: dict | None = None, n_workers: int = 1,
                 backend: str = "local", ray_address: str | None = None, max_restarts: int = 3,
                 in_process: bool = True):
        if backend not in ("local", "ray"):
            raise ValueError(f"backend '{backend}' is not one of local, ray")
        if int(n_workers) < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.n_workers, self.backend = int(n_workers), backend
        self._impl, self._owns_ray, self._running = None, False, False
        self._started: set[int] = set()  # ranks with a start() call in flight
        spec = (worker_cls, tuple(args), dict(kwargs or {}), self.n_workers)
        try:
            if backend == "ray":
                self._owns_ray = start_ray(self.n_workers, ray_address)
                self._impl = _RayActors(*spec, max_restarts=max_restarts)
            else:
                # One worker runs in this process unless the driver must work while it runs (A3C).
                self._impl = (_InProcess if self.n_workers == 1 and in_process else _Processes)(*spec)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._impl is None

    def _run(self, tasks: list):
        """Yield (task index, result) as tasks finish. Any failure, or abandoning the iteration
        half way, closes the group: half-finished requests would otherwise answer later calls."""
        if self._impl is None:
            raise RuntimeError("this WorkerGroup is closed")
        if self._running:
            raise RuntimeError("WorkerGroup calls do not nest: finish the running imap_unordered first")
        if busy := self._started & {rank for rank, _, _ in tasks}:
            raise RuntimeError(f"worker(s) {sorted(busy)} still run a call from start(): collect it with next_done")
        self._running, finished = True, False
        try:
            yield from self._impl.results(tasks)
            finished = True
        finally:
            self._running = False
            if not finished:
                self.close()

    def _in_order(self, tasks: list) -> list:
        out = [None] * len(tasks)
        for i, result in self._run(tasks):
            out[i] = result
        return out

    def _deal(self, method: str, arg_list) -> list:
        return [(i % self.n_workers, method, tuple(args)) for i, args in enumerate(arg_list)]

    def map(self, method: str, arg_list) -> list:
        """``worker.method(*args)`` for each tuple in ``arg_list``, dealt round robin; results in order."""
        return self._in_order(self._deal(method, arg_list))

    def imap_unordered(self, method: str, arg_list):
        """Like ``map``, but yields each result as soon as it is ready (for progress bars)."""
        results = self._run(self._deal(method, arg_list))
        try:
            for _, result in results:
                yield result
        finally:
            results.close()

    def call(self, rank: int, method: str, *args):
        """``method(*args)`` on the worker of rank ``rank``."""
        if not 0 <= rank < self.n_workers:
            raise ValueError(f"rank {rank} is not in 0..{self.n_workers - 1}")
        return self._in_order([(rank, method, args)])[0]

    def broadcast(self, method: str, *args) -> list:
        """``method(*args)`` on every worker; results by rank."""
        return self._in_order([(rank, method, args) for rank in range(self.n_workers)])

    def share(self, obj):
        """``obj`` as the workers should receive it in a ``broadcast``: on Ray, put once in the object
        store (each worker reads the same copy with ``shared``), instead of once per worker."""
        if self.backend != "ray":
            return obj
        import ray

        return ray.put(obj)

    # --- asynchronous calls: a driver that keeps working while its workers run (A3C) ----------
    def start(self, rank: int, method: str, *args) -> None:
        """Send ``method(*args)`` to worker ``rank`` and return at once (one call in flight per
        worker); ``next_done`` collects the result."""
        if self._impl is None:
            raise RuntimeError("this WorkerGroup is closed")
        self._impl.start(rank, method, args)
        self._started.add(rank)

    def next_done(self, timeout: float | None = None):
        """(rank, result) of the next started call to finish, or None after ``timeout`` seconds.
        A worker that raised or died raises ``WorkerError`` (its ``.rank`` says which) and the group
        stays open, so the driver can ``restart`` that worker or go on with the others."""
        if self._impl is None:
            raise RuntimeError("this WorkerGroup is closed")
        try:
            done = self._impl.next_done(timeout)
        except WorkerError as err:
            self._started.discard(getattr(err, "rank", None))
            raise
        if done is not None:
            self._started.discard(done[0])
        return done

    def restart(self, rank: int) -> None:
        """A fresh worker for ``rank``, built with the group's arguments (local processes; Ray
        restarts its actors by itself). A replacement that fails while it is built raises
        ``WorkerError`` (``method`` ``__init__``) and the group stays open: ``restart`` may be called
        again."""
        if self._impl is None:
            raise RuntimeError("this WorkerGroup is closed")
        if hasattr(self._impl, "restart"):
            self._impl.restart(rank)

    def pid(self, rank: int) -> int | None:
        """The process id of worker ``rank`` when it runs in a spawn process of its own, else None."""
        if self._impl is None:
            raise RuntimeError("this WorkerGroup is closed")
        procs = getattr(self._impl, "procs", None)
        return procs[rank].pid if procs else None

    def close(self) -> None:
        """Stop the workers (and a Ray this group started). Safe to call twice."""
        impl, self._impl = self._impl, None
        try:
            if impl is not None and not self._owns_ray:  # a Ray we started goes down whole, actors included
                impl.close()
        finally:
            if self._owns_ray:
                self._owns_ray = False
                stop_ray()

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
